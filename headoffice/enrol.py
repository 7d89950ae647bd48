"""`lanesync headoffice store add|remove` and `pki init`: enrol a store in one command.

`store add S002 --name ... --lanes L1,L2` does what a chain's IT otherwise does by hand:

1. registers the store and its lanes in the catalog (`stores` and `lanes` rows, one new
   version, loaded through the same checked loader as `lanesync catalog load --upsert`), so
   head office accepts their journal (the store registry) and publishes their catalog head;
2. issues each lane its broker identity, user `store-S002.L1`: a client certificate from the
   chain's CA (`[enrol] login = "cert"`, headoffice/pki.py) or an entry in the stores' password
   file (`login = "password"`, written by Debian's `mosquitto_passwd`, whose PBKDF2 format is
   Mosquitto's own to define);
3. writes the Mosquitto ACL again from the catalog's active lanes (headoffice/acl.py);
4. writes each lane's `agent.toml` beside its secrets under `[enrol] out_dir/<store>/<lane>/`
   (copy the folder to the box's /etc/lanesync) and prints it.

`store remove S002` marks the store and its lanes inactive (they stay known, so a backlog still
on its way is applied), revokes their certificates (the CRL) or deletes their password entries,
and writes the ACL without them. Mosquitto rereads its ACL and password file on SIGHUP
(`systemctl reload mosquitto`); a CRL is read when the listener starts, so a revoked
certificate is refused after a restart, and at once by the ACL, which no longer lists its user.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headoffice.acl import (
    DEFAULT_HEADOFFICE_USER,
    DEFAULT_USER_PREFIX,
    AclSpec,
    catalog_lanes,
    render,
    write_atomically,
)
from headoffice.projections import PROJECTIONS
from protocol.errors import LanesyncError
from protocol.identity import LaneId, check_segment

if TYPE_CHECKING:
    from headoffice.pki import CertificateAuthority


def _ca(directory: str, *, init_name: str | None = None) -> CertificateAuthority:
    """The stores' CA; imported here, so `lanesync headoffice` loads cryptography only for
    the commands that sign something."""
    from headoffice.pki import CertificateAuthority  # noqa: PLC0415

    if init_name is not None:
        return CertificateAuthority.init(Path(directory), init_name)
    return CertificateAuthority(Path(directory))


class EnrolError(LanesyncError):
    """A store that cannot be enrolled or removed as asked; nothing was half done."""

    code = "enrol"


@dataclass(frozen=True, slots=True)
class LaneFiles:
    lane: LaneId
    folder: Path
    agent_toml: Path
    text: str


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`store` and `pki` under `lanesync headoffice` (beside `acl`)."""
    st = sub.add_parser(
        "store",
        help="enrol a store (registry, broker identities, ACL, the lanes' agent.toml) or remove it",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Example: lanesync headoffice store add S002 --name 'Galway' --lanes L1,L2 "
        "--timezone Europe/Dublin --currency EUR",
    )
    cmds = st.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    add = cmds.add_parser("add", help="register a store and give each lane its identity")
    add.add_argument("store", help="store id (1-32 of A-Z a-z 0-9 _ -)")
    add.add_argument("--name", required=True, help="the store's name")
    add.add_argument("--lanes", required=True, help="its lanes, comma-separated (L1,L2)")
    add.add_argument("--timezone", default="Europe/Dublin", help="IANA zone (Europe/Dublin)")
    add.add_argument("--currency", default="EUR", help="ISO 4217 (EUR)")
    add.add_argument("--price-zone", help="the price zone whose prices it takes")
    add.add_argument(
        "--no-receive-stock",
        action="store_true",
        help="the store cannot receive stock (not offered as a transit destination)",
    )
    add.add_argument("--json", action="store_true", help="print what was done as JSON")
    add.set_defaults(handler=cmd_store_add)
    rm = cmds.add_parser("remove", help="deactivate a store and revoke its lanes' identities")
    rm.add_argument("store")
    rm.add_argument("--json", action="store_true", help="print what was done as JSON")
    rm.set_defaults(handler=cmd_store_remove)

    pki = sub.add_parser("pki", help="the chain's stores CA for the lanes' client certificates")
    pcmds = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    init = pcmds.add_parser("init", help="make the CA in [enrol] pki_dir (once)")
    init.add_argument("--name", default="lanesync stores CA", help="the CA's common name")
    init.set_defaults(handler=cmd_pki_init)
    crl = pcmds.add_parser("crl", help="re-sign the CRL (before it expires, monthly)")
    crl.set_defaults(handler=cmd_pki_crl)


# --- the steps --------------------------------------------------------------------------------


def _lanes(store: str, arg: str) -> list[LaneId]:
    lanes = [x.strip() for x in arg.split(",") if x.strip()]
    if not lanes:
        raise EnrolError("--lanes: name at least one lane (L1,L2)")
    if len(set(lanes)) != len(lanes):
        raise EnrolError("--lanes: a lane is named twice")
    return [LaneId(store, check_segment(x, "--lanes")) for x in lanes]


def _load_rows(cfg: Any, dataset: str, rows: list[dict[str, Any]], source: str) -> int | None:
    """Upsert rows through the catalog's checked loader; the version made, if any."""
    # Imported here: `lanesync` starts without the database drivers unless this is asked for.
    from headoffice.catalog import load as loader  # noqa: PLC0415
    from headoffice.db import open_target, target  # noqa: PLC0415

    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    parsed = loader.parse(data, "jsonl", dataset, source)
    store = open_target(target(cfg), projections=PROJECTIONS)
    try:
        return loader.load_parsed(store.sql, parsed, upsert=True, source=source).version
    finally:
        store.close()


def _current(cfg: Any, dataset: str) -> list[dict[str, Any]]:
    from headoffice.catalog import versions  # noqa: PLC0415
    from headoffice.db import open_readonly, target  # noqa: PLC0415

    db = open_readonly(target(cfg))
    if db is None:
        return []
    try:
        return versions.current_rows(db, dataset)
    except Exception:  # noqa: BLE001 - sqlite3 or psycopg: no catalog tables yet
        return []
    finally:
        db.close()


def _mosquitto_passwd(*args: str) -> None:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        raise EnrolError(
            "mosquitto_passwd is missing (Debian's mosquitto package has it): apt-get install "
            'mosquitto, or set [enrol] login = "cert"'
        )
    done = subprocess.run(  # noqa: S603 - argv built here, no shell
        [tool, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise EnrolError(f"mosquitto_passwd failed: {done.stderr.strip() or done.stdout.strip()}")


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _agent_toml(cfg: Any, lane: LaneId, broker: dict[str, Any]) -> str:
    e = cfg.enrol
    lines = [
        f"# /etc/lanesync/agent.toml for lane {lane}, written by lanesync headoffice store add.",
        "# Copy this folder's files to the box's /etc/lanesync/ (secrets 0640 root:lanesync).",
        f'store = "{lane.store}"',
        f'lane = "{lane.lane}"',
        "",
        "[journal]",
        f'path = "{e.lane_journal}"',
        "",
        "[broker]",
        f'host = "{e.lane_broker_host}"',
        f"port = {e.lane_broker_port}",
        f'topic_prefix = "{cfg.broker.topic_prefix}"',
        f'ca_file = "{e.lane_ca_file}"',
        *(f'{k} = "{v}"' for k, v in broker.items()),
        "",
    ]
    return "\n".join(lines)


def _write_acl(cfg: Any, config_path: str) -> int:
    lanes = catalog_lanes(config_path)
    spec = AclSpec(
        (),
        cfg.broker.topic_prefix,
        DEFAULT_USER_PREFIX,
        DEFAULT_HEADOFFICE_USER,
        lanes=tuple(lanes),
    )
    write_atomically(Path(cfg.enrol.acl_file), render(spec))
    return len(lanes)


def store_add(cfg: Any, config_path: str, args: argparse.Namespace) -> dict[str, Any]:
    e = cfg.enrol
    if not e.lane_broker_host:
        raise EnrolError(
            "[enrol] lane_broker_host is not set: the address the lanes reach the broker at "
            "goes into their agent.toml (see headoffice.example.toml)"
        )
    store = check_segment(args.store, "store")
    lanes = _lanes(store, args.lanes)
    ca = _ca(e.pki_dir) if e.login == "cert" else None  # checked before anything is written
    source = f"lanesync headoffice store add {store}"
    row: dict[str, Any] = {
        "id": store,
        "name": args.name,
        "timezone": args.timezone,
        "currency": args.currency,
        "can_receive_stock": not args.no_receive_stock,
        "active": True,
    }
    if args.price_zone:
        row["price_zone"] = args.price_zone
    versions = [
        _load_rows(cfg, "stores", [row], source),
        _load_rows(
            cfg,
            "lanes",
            [{"store": x.store, "lane": x.lane, "active": True} for x in lanes],
            source,
        ),
    ]
    files: list[LaneFiles] = []
    spec = AclSpec((), cfg.broker.topic_prefix, DEFAULT_USER_PREFIX, DEFAULT_HEADOFFICE_USER)
    for lane in lanes:
        user = spec.lane_user(lane)
        folder = Path(e.out_dir) / lane.store / lane.lane
        if ca is not None:
            issued = ca.issue(user, folder)
            assert issued.cert is not None
            assert issued.key is not None
            issued.cert.replace(folder / "lane.crt")
            issued.key.replace(folder / "lane.key")
            broker = {
                "cert_file": "/etc/lanesync/lane.crt",
                "key_file": "/etc/lanesync/lane.key",
            }
        else:
            password = secrets.token_urlsafe(24)
            exists = Path(e.password_file).exists()
            _mosquitto_passwd(*([] if exists else ["-c"]), "-b", e.password_file, user, password)
            _write_secret(folder / "broker.pw", password + "\n")
            broker = {"username": user, "password_file": "/etc/lanesync/broker.pw"}
        text = _agent_toml(cfg, lane, broker)
        agent_toml = folder / "agent.toml"
        agent_toml.write_text(text, encoding="utf-8")
        files.append(LaneFiles(lane, folder, agent_toml, text))
    acl_lanes = _write_acl(cfg, config_path)
    return {
        "store": store,
        "versions": [v for v in versions if v is not None],
        "login": e.login,
        "lanes": [
            {"lane": str(f.lane), "user": spec.lane_user(f.lane), "folder": str(f.folder)}
            for f in files
        ],
        "acl_file": e.acl_file,
        "acl_lanes": acl_lanes,
        "agent_toml": {str(f.lane): f.text for f in files},
    }


def store_remove(cfg: Any, config_path: str, store: str) -> dict[str, Any]:
    e = cfg.enrol
    store = check_segment(store, "store")
    rows = [r for r in _current(cfg, "stores") if r["id"] == store]
    if not rows:
        raise EnrolError(f"store {store} is not in the catalog's stores (nothing to remove)")
    lanes = [LaneId(r["store"], r["lane"]) for r in _current(cfg, "lanes") if r["store"] == store]
    source = f"lanesync headoffice store remove {store}"
    versions = [_load_rows(cfg, "stores", [{**rows[0], "active": False}], source)]
    if lanes:
        versions.append(
            _load_rows(
                cfg,
                "lanes",
                [{"store": x.store, "lane": x.lane, "active": False} for x in lanes],
                source,
            )
        )
    spec = AclSpec((), cfg.broker.topic_prefix, DEFAULT_USER_PREFIX, DEFAULT_HEADOFFICE_USER)
    revoked: list[str] = []
    for lane in lanes:
        user = spec.lane_user(lane)
        if e.login == "cert":
            if _ca(e.pki_dir).revoke(user):
                revoked.append(user)
        elif Path(e.password_file).exists():
            _mosquitto_passwd("-D", e.password_file, user)
            revoked.append(user)
    acl_lanes = _write_acl(cfg, config_path)
    return {
        "store": store,
        "versions": [v for v in versions if v is not None],
        "revoked": revoked,
        "acl_file": e.acl_file,
        "acl_lanes": acl_lanes,
    }


# --- the commands -----------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Any:
    from headoffice import config as ho_config  # noqa: PLC0415

    return ho_config.load(args.config)


def _fail(what: str, exc: BaseException) -> int:
    print(f"lanesync headoffice {what}: {exc}", file=sys.stderr)
    return 2


RELOAD_HINT = "reload the broker to apply the ACL and password file: systemctl reload mosquitto"


def cmd_store_add(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
        done = store_add(cfg, args.config, args)
    except (LanesyncError, OSError) as exc:
        return _fail("store add", exc)
    if args.json:
        print(json.dumps(done))
        return 0
    for lane, text in done["agent_toml"].items():
        print(f"# --- {lane}: {Path(cfg.enrol.out_dir) / lane}/agent.toml ---")
        print(text)
    print(
        f"store {done['store']} registered (catalog version {max(done['versions'], default=0)}); "
        f"{len(done['lanes'])} lane identities ({done['login']}); ACL {done['acl_file']} "
        f"lists {done['acl_lanes']} lanes; {RELOAD_HINT}",
        file=sys.stderr,
    )
    return 0


def cmd_store_remove(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
        done = store_remove(cfg, args.config, args.store)
    except (LanesyncError, OSError) as exc:
        return _fail("store remove", exc)
    if args.json:
        print(json.dumps(done))
        return 0
    print(
        f"store {done['store']} inactive; revoked {', '.join(done['revoked']) or 'nothing'}; ACL "
        f"{done['acl_file']} lists {done['acl_lanes']} lanes; {RELOAD_HINT} (a revoked "
        "certificate: restart the broker so its listener rereads the CRL)",
        file=sys.stderr,
    )
    return 0


def cmd_pki_init(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
        ca = _ca(cfg.enrol.pki_dir, init_name=args.name)
    except (LanesyncError, OSError) as exc:
        return _fail("pki init", exc)
    print(
        f"CA made in {ca.dir}: give the stores' listener cafile {ca.dir / 'ca.crt'} and crlfile "
        f"{ca.dir / 'ca.crl'}; keep {ca.dir / 'ca.key'} off the stores and backed up",
        file=sys.stderr,
    )
    return 0


def cmd_pki_crl(args: argparse.Namespace) -> int:
    try:
        path = _ca(_config(args).enrol.pki_dir).write_crl()
    except (LanesyncError, OSError) as exc:
        return _fail("pki crl", exc)
    print(f"re-signed {path}; restart the broker to use it", file=sys.stderr)
    return 0
