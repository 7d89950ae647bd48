"""`lanesync headoffice acl`: the Mosquitto ACL that keeps each lane to its own topics.

Every lane has its own broker identity, user `store-<store>.<lane>` (`store-S001.L1`): the CN
of its client certificate (with `use_identity_as_username true`) or a password-file user. It
may write only its own journal, hello, status (retained, and the last will) and request topics
and read only its own acks and replies. A store hub's bridge has one identity for its whole
store, user `store-<store>` (`--stores`), with the same rights over all of that store's lanes.
Every lane identity, and its store's hub, may also read its store's retained catalog head
`{prefix}/{store}/catalog` (protocol/CATALOG.md) and no other store's; none may write it.
Head office reads those channels of every lane and writes acks, replies and every store's
catalog head. Nothing else is granted: Mosquitto denies what an acl_file does not list
(mosquitto.conf(5), acl_file), and on MQTT 3.1.1 drops a denied publish without telling the
publisher, so a lane cannot even probe another's topics.

The ACL decides what an identity may touch, not which MQTT client id it may take: Mosquitto's
ACL does not bind client ids, and a second connection with a connected client's id closes the
first (session takeover). On the listener the stores reach, `use_username_as_clientid true`
makes the broker replace whatever client id a client sends with its user (mosquitto.conf(5);
src/handle_connect.c in 2.0.11 does it after the certificate's CN became the user, for both
login kinds), so an identity can only ever hold its own session. That is why each lane needs
its own identity (lanes sharing one would take turns kicking each other off), and why head
office's workers, which share one identity with different client ids
(`lanesync-headoffice-wN`), log in on a listener of their own that no store identity can log
in on (systemd/mosquitto-headoffice.example.conf). A store or lane user must therefore never
equal one of head office's client ids: users starting with `lanesync-` are refused.

The ACL is one block per identity, written from the chain's lane and store lists, sorted, so
the same lists always give the same file (diffable, reviewable). Mosquitto rereads acl_file on
SIGHUP.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from protocol.errors import LanesyncError, ProtocolError
from protocol.identity import (
    CATALOG_SEGMENT,
    DEFAULT_PREFIX,
    HEADOFFICE_SEGMENT,
    SEGMENT_RE,
    Channel,
    LaneId,
    check_prefix,
)
from protocol.runtime.version import VERSION

T = TypeVar("T")

DEFAULT_USER_PREFIX = "store-"
DEFAULT_HEADOFFICE_USER = "headoffice"
# A lane's user is prefix + store + this + lane: '.' is in no store or lane id nor in the
# prefix, so a user names exactly one lane (with '-', store 'S-1' lane 'L1' and store 'S' lane
# '1-L1' would share one identity).
LANE_SEPARATOR = "."
# X.509's upper bound for a Common Name (RFC 5280, ub-common-name): a longer user could not be
# a certificate's CN, so it is refused for both login kinds alike.
MAX_USER = 64
# Where lanesync's own client ids live (lanesync-headoffice, lanesync-headoffice-wN, a lane's
# lanesync-S001-L1): on the stores' listener a user IS a client id.
RESERVED_USER_PREFIX = "lanesync-"

# What a lane (and `lanesync doctor`, with the same identity) does on the wire.
LANE_WRITES = (Channel.JOURNAL, Channel.HELLO, Channel.STATUS, Channel.REQUEST)
LANE_READS = (Channel.ACK, Channel.REPLY)

# In a store list FILE a comment starts with '#' at the start of a line or after a space or
# tab; a '#' anywhere else is part of an id, which then is refused ('S#' is not a store id).
_COMMENT = re.compile(r"(?:^|[ \t])#")
_SEGMENT_RULE = "1-32 characters of A-Z a-z 0-9 _ - (a topic segment: no '/', '+', '#' or space)"


class AclError(LanesyncError):
    """A store list or option that cannot make a safe ACL; the message names what is wrong."""

    code = "acl"


@dataclass(frozen=True, slots=True)
class AclSpec:
    """What the ACL grants: store-wide identities (store hubs) and per-lane identities."""

    stores: tuple[str, ...] = ()
    prefix: str = DEFAULT_PREFIX
    user_prefix: str = DEFAULT_USER_PREFIX
    headoffice_user: str = DEFAULT_HEADOFFICE_USER
    lanes: tuple[LaneId, ...] = ()

    def store_user(self, store: str) -> str:
        """The identity of a store's hub: all of the store's lanes' topics."""
        return f"{self.user_prefix}{store}"

    def lane_user(self, lane: LaneId) -> str:
        """The identity of one lane: its own topics only (and its broker client id)."""
        return f"{self.user_prefix}{lane.store}{LANE_SEPARATOR}{lane.lane}"


# --- reading the lists ------------------------------------------------------------------------


def _segment(value: str, what: str) -> str:
    if not SEGMENT_RE.fullmatch(value):
        hint = (
            "; in a file, '#' starts a comment only at the start of a line or after a space"
            if "#" in value
            else ""
        )
        raise ProtocolError(f"{value!r} is not a valid {what}: {_SEGMENT_RULE}{hint}")
    return value


def store_id(value: str) -> str:
    """A store id as `--stores` takes it; ProtocolError says why not."""
    return _segment(value, "store id")


def lane_id(value: str) -> LaneId:
    """A lane as `--lanes` takes it, STORE/LANE (S001/L1); ProtocolError says why not."""
    store, sep, lane = value.partition("/")
    if not sep:
        raise ProtocolError(f"{value!r} is not a lane: write it STORE/LANE, e.g. S001/L1")
    try:
        return LaneId(_segment(store, "store id"), _segment(lane, "lane id"))
    except ProtocolError as exc:
        raise ProtocolError(f"{value!r}: {exc.reason}") from None


def _file_values(lines: Iterable[str]) -> Iterable[tuple[int, str]]:
    """(line number, id) from a file: comments and blank lines skipped, first CSV column."""
    for number, line in enumerate(lines, 1):
        comment = _COMMENT.search(line)
        text = line[: comment.start()] if comment else line
        value = text.split(",", 1)[0].strip()
        if value:
            yield number, value


def parse_ids(
    values: Iterable[tuple[int, str]], check: Callable[[str], T], source: str, unit: str
) -> list[T]:
    """Check each (number, text) with `check`; errors say "`source` `unit` N" and refuse
    duplicates (stores.txt line 5, --stores item 2)."""
    ids: list[T] = []
    seen: dict[T, int] = {}
    for number, value in values:
        try:
            item = check(value)
        except ProtocolError as exc:
            raise AclError(f"{source} {unit} {number}: {exc.reason}") from None
        if item in seen:
            raise AclError(f"{source} {unit} {number}: {value!r} is already on {unit} {seen[item]}")
        seen[item] = number
        ids.append(item)
    if not ids:
        raise AclError(f"{source}: no ids")
    return ids


def read_ids(arg: str, option: str, check: Callable[[str], T]) -> list[T]:
    """`--stores`/`--lanes`: an existing file, '-' for stdin, a comma-separated list or one id.

    Only files (and stdin) have comments. An argument that is no existing file is a list,
    unless it looks like a path (a '.', a leading '/', or more than one '/'; ids contain no
    '.' and a lane has one '/'): a mistyped path is then reported as a missing file, not as a
    bad id.
    """
    if arg == "-":
        return parse_ids(_file_values(sys.stdin), check, "<stdin>", "line")
    looks_like_path = "," not in arg and ("." in arg or arg.startswith("/") or arg.count("/") > 1)
    if os.path.exists(arg) or looks_like_path:
        try:
            text = Path(arg).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AclError(f"{option}: no such file {arg}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AclError(f"{option}: cannot read {arg}: {exc}") from None
        return parse_ids(_file_values(text.splitlines()), check, arg, "line")
    items = [item.strip() for item in arg.split(",")]
    for i, item in enumerate(items, 1):
        if not item:
            raise AclError(f"{option}: item {i} of {arg!r} is empty")
    return parse_ids(enumerate(items, 1), check, option, "item")


def read_stores(arg: str) -> list[str]:
    return read_ids(arg, "--stores", store_id)


def read_lanes(arg: str) -> list[LaneId]:
    return read_ids(arg, "--lanes", lane_id)


# --- the ACL ----------------------------------------------------------------------------------


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
    users = [("--stores", s, spec.store_user(s)) for s in spec.stores]
    users += [("--lanes", str(lane), spec.lane_user(lane)) for lane in spec.lanes]
    for option, entry, user in users:
        if user == spec.headoffice_user:
            raise AclError(
                f"{option}: {entry!r} would get head office's user {spec.headoffice_user!r}; "
                "use --user-prefix or another --headoffice-user"
            )
        if user.startswith(RESERVED_USER_PREFIX):
            raise AclError(
                f"{option}: {entry!r} would get user {user!r}: a user starting with "
                f"{RESERVED_USER_PREFIX!r} could be head office's client id on the stores' "
                "listener (use_username_as_clientid); use another --user-prefix"
            )
        if len(user) > MAX_USER:
            raise AclError(
                f"{option}: {entry!r} would get user {user!r}, {len(user)} characters; a "
                f"certificate's CN holds at most {MAX_USER}: use a shorter --user-prefix or id"
            )


def render(spec: AclSpec) -> str:
    """The acl_file text: a header saying how it was made, head office, then per store its
    hub identity (if any) and its lanes' identities."""
    check_spec(spec)
    p = spec.prefix
    lanes_of: dict[str, list[LaneId]] = {}
    for lane in spec.lanes:
        lanes_of.setdefault(lane.store, []).append(lane)
    lines = [
        f"# Mosquitto acl_file written by `lanesync headoffice acl` (lanesync {VERSION}).",
        "# Do not edit: regenerate it from the lane and store lists and send mosquitto a SIGHUP.",
        f"# topic prefix {p!r}, {len(spec.lanes)} lane identities "
        f"'{spec.user_prefix}<store>{LANE_SEPARATOR}<lane>', {len(spec.stores)} store hub "
        f"identities '{spec.user_prefix}<store>', head office user {spec.headoffice_user!r}.",
        "# Each identity (a client certificate's CN, with use_identity_as_username, or a",
        "# password-file user) writes only its own lane's (a hub: its store's lanes')",
        "# journal/hello/status/request topics and reads only their acks and replies, and",
        "# its store's catalog head and head office's announcement; head office writes",
        "# every store's catalog head and its announcement.",
        "# Anything not listed is denied. On the stores' listener use_username_as_clientid",
        "# makes each identity its own client id (see /usr/share/doc/lanesync/examples/",
        "# mosquitto-headoffice.example.conf).",
        "",
        f"user {spec.headoffice_user}",
    ]
    lines += [f"topic read {p}/+/+/{ch.value}" for ch in LANE_WRITES]
    lines += [f"topic write {p}/+/+/{ch.value}" for ch in LANE_READS]
    lines += [f"topic write {p}/+/{CATALOG_SEGMENT}"]  # every store's retained catalog head
    lines += [f"topic write {p}/{HEADOFFICE_SEGMENT}"]  # its retained announcement (16.2)
    hubs = set(spec.stores)
    for store in sorted(hubs | lanes_of.keys()):
        if store in hubs:
            lines += ["", f"user {spec.store_user(store)}"]
            lines += [f"topic write {p}/{store}/+/{ch.value}" for ch in LANE_WRITES]
            lines += [f"topic read {p}/{store}/+/{ch.value}" for ch in LANE_READS]
            lines += [f"topic read {p}/{store}/{CATALOG_SEGMENT}"]
            lines += [f"topic read {p}/{HEADOFFICE_SEGMENT}"]
        for lane in sorted(lanes_of.get(store, []), key=lambda lane: lane.lane):
            lines += ["", f"user {spec.lane_user(lane)}"]
            lines += [f"topic write {p}/{lane}/{ch.value}" for ch in LANE_WRITES]
            lines += [f"topic read {p}/{lane}/{ch.value}" for ch in LANE_READS]
            lines += [f"topic read {p}/{lane.store}/{CATALOG_SEGMENT}"]
            lines += [f"topic read {p}/{HEADOFFICE_SEGMENT}"]
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


# --- the command ------------------------------------------------------------------------------

_LIST_HELP = (
    "A FILE has one id a line ('-': stdin); a CSV export works (only the first column is "
    "read); '#' starts a comment at the start of a line or after a space or tab, and is refused "
    "anywhere else. Or a comma-separated list (no comments)."
)


def register(
    headoffice: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add `acl` under `lanesync headoffice`, which keeps running head office without one;
    returns the subcommands, for the others (headoffice.enrol: `store`, `pki`)."""
    sub = headoffice.add_subparsers(
        dest="headoffice_command", title="subcommands (optional)", metavar="{acl,store,pki}"
    )
    p = sub.add_parser(
        "acl",
        help="write the Mosquitto ACL that keeps each lane to its own topics",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=_LIST_HELP + " Example: lanesync headoffice acl --lanes lanes.txt --stores S017 "
        "-o /etc/mosquitto/lanesync.acl",
    )
    p.add_argument(
        "--lanes",
        metavar="FILE_OR_LIST",
        help="lanes that connect to head office's broker themselves, STORE/LANE "
        "(S001/L1,S001/L2): each gets user <user-prefix>STORE.LANE",
    )
    p.add_argument(
        "--stores",
        metavar="FILE_OR_LIST",
        help="stores whose lanes reach head office through a store hub (S001,S002): the "
        "hub's bridge gets user <user-prefix>STORE for all of the store's lanes",
    )
    p.add_argument(
        "--from-catalog",
        action="store_true",
        help="also every active lane of the catalog's `lanes` dataset (the store registry, "
        "read from the database of `lanesync headoffice --config`)",
    )
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix ({DEFAULT_PREFIX})")
    p.add_argument(
        "--user-prefix",
        default=DEFAULT_USER_PREFIX,
        help=f"users start with this ({DEFAULT_USER_PREFIX!r}; '' for none)",
    )
    p.add_argument(
        "--headoffice-user",
        default=DEFAULT_HEADOFFICE_USER,
        help=f"head office's broker user ({DEFAULT_HEADOFFICE_USER})",
    )
    p.add_argument("--output", "-o", help="write here (atomically) instead of to stdout")
    p.set_defaults(handler=cmd_acl)
    return sub


def catalog_lanes(config_path: str) -> list[LaneId]:
    """Every active lane the catalog's `lanes` dataset lists (protocol/CATALOG.md)."""
    # Imported here: `lanesync` starts without the database drivers unless this is asked for.
    from headoffice import config as ho_config  # noqa: PLC0415
    from headoffice.catalog import versions  # noqa: PLC0415
    from headoffice.db import describe, open_readonly, target  # noqa: PLC0415

    cfg = ho_config.load(config_path)
    db = open_readonly(target(cfg))
    if db is None:
        raise AclError(f"--from-catalog: {describe(target(cfg))}: no head-office database yet")
    try:
        rows = versions.current_rows(db, "lanes")
    except Exception as exc:  # noqa: BLE001 - sqlite3 or psycopg: no catalog tables yet
        raise AclError(f"--from-catalog: no catalog in {describe(target(cfg))} ({exc})") from None
    finally:
        db.close()
    return [LaneId(r["store"], r["lane"]) for r in rows if r["active"]]


def cmd_acl(args: argparse.Namespace) -> int:
    try:
        lanes = list(read_lanes(args.lanes)) if args.lanes is not None else []
        if args.from_catalog:
            lanes += [ln for ln in catalog_lanes(args.config) if ln not in lanes]
        spec = AclSpec(
            tuple(read_stores(args.stores)) if args.stores is not None else (),
            args.prefix,
            args.user_prefix,
            args.headoffice_user,
            lanes=tuple(lanes),
        )
        if not spec.stores and not spec.lanes:  # a typo'd call, not an ACL for head office only
            raise AclError(
                "give --lanes (each lane's identity), --from-catalog (the catalog's lanes) "
                "and/or --stores (store hubs)"
            )
        text = render(spec)
        if args.output:
            write_atomically(Path(args.output), text)
            print(
                f"wrote {args.output}: {len(spec.lanes)} lanes, {len(spec.stores)} store "
                "hubs; reload mosquitto (SIGHUP) to apply it",
                file=sys.stderr,
            )
        else:
            sys.stdout.write(text)
    except (LanesyncError, OSError) as exc:
        print(f"lanesync headoffice acl: {exc}", file=sys.stderr)
        return 2
    return 0
