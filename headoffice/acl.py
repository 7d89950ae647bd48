"""`lanesync headoffice acl`: the Mosquitto ACL that keeps each store to its own topics.

Every store has one broker identity, shared by its lanes (user `store-<id>`: the CN of its client
certificate with `use_identity_as_username true`, or a password-file user). The ACL lets that user
write only its own lanes' journal, hello, status (retained, and the last will) and request
topics, and read only its own acks and replies; head office reads those channels of every store
and writes acks and replies. Nothing else is granted: Mosquitto denies what an acl_file does not
list (mosquitto.conf(5), acl_file), and on MQTT 3.1.1 drops a denied publish without telling the
publisher, so a store cannot even probe another's topics.

The ACL is one block per store, written from the chain's store list, sorted, so the same list
always gives the same file (diffable, reviewable). Mosquitto rereads acl_file on SIGHUP.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import LanesyncError, ProtocolError
from protocol.identity import DEFAULT_PREFIX, SEGMENT_RE, Channel, check_prefix, check_segment
from protocol.version import VERSION

DEFAULT_USER_PREFIX = "store-"
DEFAULT_HEADOFFICE_USER = "headoffice"

# What a lane (and `lanesync doctor`, with the same identity) does on the wire.
LANE_WRITES = (Channel.JOURNAL, Channel.HELLO, Channel.STATUS, Channel.REQUEST)
LANE_READS = (Channel.ACK, Channel.REPLY)


class AclError(LanesyncError):
    """A store list or option that cannot make a safe ACL; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class AclSpec:
    stores: tuple[str, ...]
    prefix: str = DEFAULT_PREFIX
    user_prefix: str = DEFAULT_USER_PREFIX
    headoffice_user: str = DEFAULT_HEADOFFICE_USER

    def store_user(self, store: str) -> str:
        return f"{self.user_prefix}{store}"


def parse_store_lines(lines: Iterable[str], source: str, unit: str = "line") -> list[str]:
    """Store ids, one a line; `#` starts a comment; blank lines are skipped.

    A CSV export works too: only the first comma-separated column is read. Errors say
    "`source` `unit` N" (stores.txt line 5, --stores item 2).
    """
    stores: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        value = line.split("#", 1)[0].split(",", 1)[0].strip()
        if not value:
            continue
        try:
            check_segment(value, "store")
        except ProtocolError as exc:
            raise AclError(f"{source} {unit} {number}: {exc}") from None
        if value in seen:
            raise AclError(
                f"{source} {unit} {number}: store {value!r} is already on {unit} {seen[value]}"
            )
        seen[value] = number
        stores.append(value)
    if not stores:
        raise AclError(f"{source}: no store ids")
    return stores


def read_stores(arg: str) -> list[str]:
    """`--stores`: an existing file, '-' for stdin, a comma-separated list (S001,S002) or one id.

    Without a comma, anything with '/' or '.' is taken as a file name: store ids contain
    neither, so a mistyped path is reported as a missing file, not as a bad store id.
    """
    if arg == "-":
        return parse_store_lines(sys.stdin, "<stdin>")
    if os.path.exists(arg) or ("," not in arg and ("/" in arg or "." in arg)):
        try:
            text = Path(arg).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AclError(f"--stores: no such file {arg}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AclError(f"--stores: cannot read {arg}: {exc}") from None
        return parse_store_lines(text.splitlines(), arg)
    items = arg.split(",")
    for i, item in enumerate(items, 1):
        if not item.strip():
            raise AclError(f"--stores: item {i} of {arg!r} is empty")
    return parse_store_lines(items, "--stores", "item")


def check_spec(spec: AclSpec) -> None:
    try:
        check_prefix(spec.prefix)
    except ProtocolError as exc:
        raise AclError(f"--prefix: {exc.reason}") from None
    if spec.user_prefix and not SEGMENT_RE.fullmatch(spec.user_prefix):
        raise AclError(
            f"--user-prefix: {spec.user_prefix!r} is not 1-32 characters of A-Z a-z 0-9 _ -"
        )
    if not SEGMENT_RE.fullmatch(spec.headoffice_user):
        raise AclError(
            f"--headoffice-user: {spec.headoffice_user!r} is not 1-32 characters of A-Z a-z 0-9 _ -"
        )
    clash = [s for s in spec.stores if spec.store_user(s) == spec.headoffice_user]
    if clash:
        raise AclError(
            f"--stores: store {clash[0]!r} would get head office's user "
            f"{spec.headoffice_user!r}; use --user-prefix or another --headoffice-user"
        )


def render(spec: AclSpec) -> str:
    """The acl_file text: a header saying how it was made, head office, then each store."""
    check_spec(spec)
    p = spec.prefix
    lines = [
        f"# Mosquitto acl_file written by `lanesync headoffice acl` (lanesync {VERSION}).",
        "# Do not edit: regenerate it from the store list and send mosquitto a SIGHUP.",
        f"# topic prefix {p!r}, {len(spec.stores)} stores, store users "
        f"'{spec.user_prefix}<store>', head office user {spec.headoffice_user!r}.",
        "# Each store's user (its client certificate's CN, with use_identity_as_username, or",
        "# its password-file user) writes only its own lanes' journal/hello/status/request",
        "# topics and reads only its own acks and replies. Anything not listed is denied.",
        "",
        f"user {spec.headoffice_user}",
    ]
    lines += [f"topic read {p}/+/+/{ch.value}" for ch in LANE_WRITES]
    lines += [f"topic write {p}/+/+/{ch.value}" for ch in LANE_READS]
    for store in sorted(spec.stores):
        lines += ["", f"user {spec.store_user(store)}"]
        lines += [f"topic write {p}/{store}/+/{ch.value}" for ch in LANE_WRITES]
        lines += [f"topic read {p}/{store}/+/{ch.value}" for ch in LANE_READS]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step: a broker reloading on SIGHUP never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # not a secret; the broker's user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register(headoffice: argparse.ArgumentParser) -> None:
    """Add `acl` under `lanesync headoffice`, which keeps running head office without one."""
    sub = headoffice.add_subparsers(
        dest="headoffice_command", title="subcommands (optional)", metavar="{acl}"
    )
    p = sub.add_parser(
        "acl",
        help="write the Mosquitto ACL that keeps each store to its own topics",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--stores",
        required=True,
        metavar="FILE_OR_LIST",
        help="file with one store id a line ('-': stdin), or S001,S002,...",
    )
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix ({DEFAULT_PREFIX})")
    p.add_argument(
        "--user-prefix",
        default=DEFAULT_USER_PREFIX,
        help=f"a store's broker user is this + its id ({DEFAULT_USER_PREFIX!r}; '' for the id)",
    )
    p.add_argument(
        "--headoffice-user",
        default=DEFAULT_HEADOFFICE_USER,
        help=f"head office's broker user ({DEFAULT_HEADOFFICE_USER})",
    )
    p.add_argument("--output", "-o", help="write here (atomically) instead of to stdout")
    p.set_defaults(handler=cmd_acl)


def cmd_acl(args: argparse.Namespace) -> int:
    try:
        spec = AclSpec(
            tuple(read_stores(args.stores)),
            args.prefix,
            args.user_prefix,
            args.headoffice_user,
        )
        text = render(spec)
        if args.output:
            write_atomically(Path(args.output), text)
            print(
                f"wrote {args.output}: {len(spec.stores)} stores; reload mosquitto "
                "(SIGHUP) to apply it",
                file=sys.stderr,
            )
        else:
            sys.stdout.write(text)
    except (AclError, OSError) as exc:
        print(f"lanesync headoffice acl: {exc}", file=sys.stderr)
        return 2
    return 0
