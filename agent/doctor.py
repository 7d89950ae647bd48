"""`lanesync doctor`: checks a store box the way a technician would, each with a plain fix.

Every check returns ok, warn or fail, what it found, and, when not ok, what to do about it in
words a non-developer can follow. Checks never change anything on the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import ssl
import stat
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiomqtt

from agent import config as agent_config
from agent import journaldir
from agent.config import AgentConfig, BrokerConfig
from agent.export import ExportError, load_key
from agent.status import head_office_silent, journal_facts, live_path, read_live
from agent.verify import verify
from protocol import codec, requests
from protocol.errors import LanesyncError, ProtocolError
from protocol.identity import Channel
from protocol.messages import PROTOCOL_VERSION, SUPPORTED_VERSIONS, HeadOffice, Reply, Request
from protocol.runtime import brokerconn
from protocol.runtime.brokerconn import BrokerFileError
from protocol.runtime.clock import clock_skew_s
from protocol.runtime.config import EXAMPLES_DIR
from protocol.runtime.version import VERSION

Outcome = Literal["ok", "warn", "fail"]
SERVICE_USER = "lanesync"
CERT_WARN_DAYS = 30
TLS_FILE_KEYS = ("ca_file", "cert_file", "key_file", "password_file")
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 30.0
MIB = 1024 * 1024


@dataclass(slots=True)
class Check:
    name: str
    outcome: Outcome
    found: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(path: str) -> tuple[Check, AgentConfig | None]:
    try:
        cfg = agent_config.load(path)
    except LanesyncError as exc:
        if any(f"broker.{k}:" in str(exc) for k in TLS_FILE_KEYS):
            return (
                Check(
                    "certificates",
                    "fail",
                    str(exc),
                    "Put the files head office issued for this store at the paths [broker] "
                    "names (certificate and key come together), readable by the "
                    f"'{SERVICE_USER}' user; then run doctor again.",
                ),
                None,
            )
        return (
            Check(
                "config",
                "fail",
                str(exc),
                f"Edit the file named: each line names a key at fault; compare with "
                f"{EXAMPLES_DIR}/agent.example.toml, which shows every key with its default.",
            ),
            None,
        )
    return Check("config", "ok", f"{path}: lane {cfg.lane}, valid"), cfg


def cert_not_after(path: str) -> datetime:
    """Expiry of the first certificate in a PEM file (stdlib only; openssl CLI as fallback)."""
    try:
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
        text = str(decoded["notAfter"])
    except (AttributeError, ssl.SSLError, KeyError):
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["openssl", "x509", "-noout", "-enddate", "-in", path],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        text = out.strip().removeprefix("notAfter=")
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), UTC)


def check_certificates(cfg: AgentConfig, now: float | None = None) -> list[Check]:
    """The [broker] TLS files: not expired (warn 30 days ahead), secrets not world-readable.

    Loading the config already proved each file readable and the key the certificate's own
    (protocol.runtime.brokerconn); check_config turns a failure there into a certificate check.
    """
    now = time.time() if now is None else now
    b = cfg.broker
    tls = b.tls
    checks: list[Check] = []
    if tls is None:
        checks.append(
            Check(
                "certificates",
                "warn" if b.password else "ok",
                f"no TLS: plain MQTT to {b.host}:{b.port}"
                + (", so the broker password crosses the network readable" if b.password else ""),
                "Ask head office for this store's TLS files and set [broker] ca_file, cert_file "
                f"and key_file (see {EXAMPLES_DIR}/agent.example.toml).",
            )
        )
        return checks
    if tls.ca_file is None:
        checks.append(
            Check("certificate broker.ca_file", "ok", "not set: the system's trusted CAs apply")
        )
    for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file)):
        if path is not None:
            checks.append(_expiry_check(f"certificate broker.{key}", path, now))
    for key, path in (("key_file", tls.key_file), ("password_file", b.password_file)):
        if path is not None and _others_can_read(path):
            checks.append(
                Check(
                    f"secret broker.{key}",
                    "warn",
                    f"{path} is readable by every user on this box",
                    f"Restrict it to the service: chown root:{SERVICE_USER} {path} && "
                    f"chmod 0640 {path}",
                )
            )
    return checks


def _expiry_check(name: str, path: str, now: float) -> Check:
    try:
        expires = cert_not_after(path)
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        return Check(
            name,
            "fail",
            f"{path}: cannot read the certificate ({exc})",
            "Copy the certificate file from head office to this path, readable by "
            f"the '{SERVICE_USER}' user.",
        )
    days = (expires.timestamp() - now) / 86400
    if days < 0:
        return Check(
            name,
            "fail",
            f"{path} expired on {expires:%Y-%m-%d}",
            "Ask head office for a renewed certificate and replace this file; the agent "
            "uses it at its next reconnect.",
        )
    if days < CERT_WARN_DAYS:
        return Check(
            name,
            "warn",
            f"{path} expires in {days:.0f} days ({expires:%Y-%m-%d})",
            "Ask head office for a renewed certificate before it expires.",
        )
    return Check(name, "ok", f"{path} valid until {expires:%Y-%m-%d}")


def _others_can_read(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


NO_HEAD_OFFICE = "head office did not answer"


async def check_broker_and_clock(cfg: AgentConfig, timeout: float = 5.0) -> list[Check]:
    """Connect and log in as the lane does, then ask head office for its time."""
    b = cfg.broker
    where = f"{b.host}:{b.port}"
    checks: list[Check] = []
    try:
        async with (
            asyncio.timeout(timeout * 2),
            brokerconn.connect(
                b,
                f"lanesync-doctor-{cfg.lane.store}-{cfg.lane.lane}-{uuid.uuid4().hex[:6]}",
                connack_timeout_s=min(b.connack_timeout_s, timeout),
                timeout=timeout,
            ) as client,
        ):
            checks.append(Check("broker", "ok", f"connected and logged in to {where}"))
            clock, announced = await _clock(cfg, client, timeout)
            checks.append(clock)
            if not clock.found.startswith(NO_HEAD_OFFICE):
                checks.append(head_office_version_check(announced))
            if clock.found.startswith(NO_HEAD_OFFICE):
                # The broker is up but nobody reads this lane's topics: sales would wait in
                # the journal while the link looks fine (issue 16 item 4 a).
                checks.append(
                    Check(
                        "head office",
                        "fail",
                        f"connected to {where}, but no head office answered within {timeout:g}s",
                        "Check head office: `lanesync headoffice status` there; it must run, "
                        "reach this broker and use this lane's topic prefix "
                        f"({cfg.broker.topic_prefix}).",
                    )
                )
    except TimeoutError:
        checks.append(
            Check(
                "broker",
                "fail",
                f"no answer from {where} within {timeout * 2:g}s",
                "Check the network cable and router; check [broker] host and port in the "
                "agent config; ask head office whether the broker is up and a firewall allows "
                f"port {b.port}.",
            )
        )
    except aiomqtt.MqttCodeError as exc:
        rc = getattr(exc, "rc", None)
        login = (rc is not None and str(rc).lower() in ("4", "5", "134", "135")) or (
            "not authori" in str(exc).lower() or "bad user" in str(exc).lower()
        )
        checks.append(
            Check(
                "broker",
                "fail",
                f"{where} refused the connection: {exc}",
                "The broker refused this store's login: check [broker] username and password "
                "in the agent config against what head office issued for this store."
                if login
                else "The broker refused the connection; send this message to head office.",
            )
        )
    except (aiomqtt.MqttError, OSError) as exc:
        checks.append(Check("broker", "fail", f"cannot reach {where}: {exc}", _link_fix(b, exc)))
    if len(checks) == 1:
        checks.append(Check("clock", "warn", "not checked: no broker connection", ""))
    return checks


def _link_fix(b: BrokerConfig, exc: Exception) -> str:
    """What to do when the connection failed below MQTT (network or TLS)."""
    text = str(exc)
    if isinstance(exc, BrokerFileError):
        return "Fix the file the message names (see the certificate checks above)."
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "The broker's certificate is not signed by [broker] ca_file, has expired, or does "
            "not carry the broker's name (set [broker] tls_server_name to the name it carries). "
            "Check the CA file head office issued and the box's clock."
        )
    tls_hint = (
        " With TLS, a broker that does not accept this store's certificate (another CA, "
        "revoked, expired) closes the connection silently: ask head office to look for "
        "'certificate verify failed' in the broker log."
        if b.tls is not None and "refused" not in text.lower()  # refused: nobody listens
        else ""
    )
    return (
        "Check the network cable and router; check [broker] host and port in the agent "
        "config; ask head office whether the broker is up." + tls_hint
    )


async def _clock(
    cfg: AgentConfig, client: aiomqtt.Client, timeout: float
) -> tuple[Check, HeadOffice | None]:
    """The clock check from a time request, and head office's retained announcement (its
    version and protocols) if it arrived meanwhile (it comes at subscribe, before the reply)."""
    topics = cfg.topics
    corr = f"doctor-{uuid.uuid4().hex[:12]}"
    announced: HeadOffice | None = None
    await client.subscribe(topics.headoffice(), qos=1)
    await client.subscribe(topics.topic(cfg.lane, Channel.REPLY), qos=1)
    sent = time.time()
    await client.publish(
        topics.topic(cfg.lane, Channel.REQUEST),
        codec.encode(Request(cfg.lane, corr, requests.OP_TIME, {})),
        qos=1,
    )
    try:
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                with contextlib.suppress(ProtocolError):
                    msg = codec.decode(bytes(message.payload))
                    if isinstance(msg, HeadOffice) and msg.state == "online":
                        announced = msg
                    if isinstance(msg, Reply) and msg.corr == corr:
                        return skew_check(msg, sent, time.time()), announced
    except TimeoutError:
        pass
    return Check(
        "clock",
        "warn",
        f"{NO_HEAD_OFFICE} a time request within {timeout:g}s",
        "Head office may be down or too old to answer; the store keeps trading. Check again "
        "later or call head office.",
    ), announced


def version_check() -> Check:
    """This box's lanesync release and the protocol versions it speaks (offline too)."""
    speaks = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
    return Check(
        "version", "ok", f"lanesync {VERSION}, protocol {PROTOCOL_VERSION} (speaks {speaks})"
    )


def head_office_version_check(
    announced: HeadOffice | None, *, version: str | None = None, protocols: tuple[int, ...] = ()
) -> Check:
    """Head office's release and protocols from its announcement (the one this command
    received, or `version` and `protocols` as the running agent received them), against this
    lane's: a lane older than the range head office serves cannot sync (upgrade head office
    first, then the lanes, README "Protocol versions")."""
    if announced is not None:
        version, protocols = announced.version, announced.protocols
    if version is None:
        return Check(
            "head office version",
            "warn",
            "head office answered but announced no version (an older head office, or its "
            "announcement is not retained on this broker)",
            "Ask head office which lanesync it runs; it must be this box's version or newer.",
        )
    serves = ", ".join(str(v) for v in protocols)
    found = f"head office runs lanesync {version} (serves protocol {serves})"
    if set(protocols) & set(SUPPORTED_VERSIONS):
        return Check("head office version", "ok", found)
    older = max(SUPPORTED_VERSIONS) < min(protocols, default=0)
    return Check(
        "head office version",
        "fail",
        f"{found}; this box speaks only {', '.join(str(v) for v in SUPPORTED_VERSIONS)}",
        "Upgrade lanesync on this box (apt-get install lanesync): it is older than head "
        "office serves."
        if older
        else "Head office is older than this box: upgrade head office first, then the lanes.",
    )


def skew_check(reply: Reply, sent: float, received: float) -> Check:
    """The clock check from head office's answer to a time request sent at `sent` and
    received at `received` (both time.time())."""
    if not reply.ok or "now_ms" not in reply.result:
        return Check("clock", "warn", f"head office refused the time request: {reply.error}", "")
    skew = clock_skew_s(reply.result["now_ms"], sent, received)
    return _skew_verdict(skew, f" (round trip {received - sent:.2f}s)")


def _skew_verdict(skew: float, how: str) -> Check:
    """Head office's clock minus ours, `skew` seconds, judged; `how` says how it was measured."""
    found = f"this box is {abs(skew):.1f}s {'behind' if skew > 0 else 'ahead of'} head office{how}"
    fix = (
        "Turn on time sync: `timedatectl set-ntp true`, and check that the NTP server is "
        "reachable (`timedatectl timesync-status`). Sales carry this box's time."
    )
    if abs(skew) >= SKEW_FAIL_S:
        return Check("clock", "fail", found, fix)
    if abs(skew) >= SKEW_WARN_S:
        return Check("clock", "warn", found, fix)
    return Check("clock", "ok", found)


def _service_user_groups() -> set[str] | None:
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    groups = {g.gr_name for g in grp.getgrall() if SERVICE_USER in g.gr_mem}
    with contextlib.suppress(KeyError):
        groups.add(grp.getgrgid(user.pw_gid).gr_name)
    return groups


def check_devices(cfg: AgentConfig) -> list[Check]:
    checks: list[Check] = []
    groups = _service_user_groups()
    if groups is None:
        checks.append(
            Check(
                "service user",
                "warn",
                f"no '{SERVICE_USER}' user on this box",
                "Install the package's sysusers file (systemd-sysusers lanesync.conf) or "
                "create the user: useradd --system --groups input,dialout lanesync",
            )
        )
    else:
        missing = {"input", "dialout"} - groups
        checks.append(
            Check(
                "service user",
                "warn" if missing else "ok",
                f"'{SERVICE_USER}' is in groups {', '.join(sorted(groups)) or '(none)'}",
                f"Add it to the missing groups: usermod -aG {','.join(sorted(missing))} "
                f"{SERVICE_USER}, then restart the agent."
                if missing
                else "",
            )
        )
    for i, sc in enumerate(cfg.scanners):
        name = str(sc.get("name", f"scanners[{i}]"))
        path = sc.get("path")
        if not isinstance(path, str):
            checks.append(
                Check(f"scanner {name}", "ok", "matched by USB id; see lanesync scanners")
            )
            continue
        p = Path(path)
        if not p.exists():
            checks.append(
                Check(
                    f"scanner {name}",
                    "fail",
                    f"{path} is not present",
                    "Plug the scanner in (try another USB port); `lanesync scanners` lists "
                    "what is connected. If it shows under another name, fix `path` in the "
                    "agent config.",
                )
            )
        elif not os.access(p, os.R_OK | os.W_OK):
            checks.append(
                Check(
                    f"scanner {name}",
                    "fail",
                    f"{path} is present but not readable and writable by this user",
                    "The package installs /lib/udev/rules.d/70-lanesync-scanners.rules (group "
                    "lanesync on scanners); if it is missing, reinstall lanesync. Then run "
                    "`udevadm control --reload && udevadm trigger` and replug the scanner.",
                )
            )
        else:
            checks.append(Check(f"scanner {name}", "ok", f"{path} present and accessible"))
    return checks


def check_disk(cfg: AgentConfig) -> list[Check]:
    r = cfg.ops.retention
    facts = journal_facts(cfg.journal_path)
    parent = cfg.journal_path.parent
    checks: list[Check] = []
    if not parent.is_dir():
        # The agent's own decision (agent.journaldir), so doctor and the agent agree.
        d = journaldir.plan(cfg.journal_path)
        if d.action == "create":
            return [
                Check(
                    "journal directory",
                    "warn",
                    f"{parent} does not exist; {d.why}",
                    "Nothing to do if that is the intended journal.path; otherwise correct it. "
                    "The packaged unit's StateDirectory= makes /var/lib/lanesync.",
                )
            ]
        return [Check("journal directory", "fail", f"{parent} does not exist", str(d.error()))]
    if not os.access(parent, os.W_OK):
        checks.append(
            Check(
                "journal directory",
                "warn",
                f"{parent} is not writable by the user running doctor",
                "Run doctor as root or as the lanesync user to check write access.",
            )
        )
    free = shutil.disk_usage(parent).free
    floor = r.min_free_disk_mb * MIB
    found = f"{free / MIB:.0f} MiB free on {parent}; journal {facts.size_bytes / MIB:.1f} MiB"
    if free < floor:
        checks.append(
            Check(
                "disk",
                "fail",
                found + f", below retention.min_free_disk_mb = {r.min_free_disk_mb}",
                "New sales are refused until space is freed: delete old files elsewhere on "
                "this disk, or restore the link to head office so acked entries can be pruned.",
            )
        )
    elif free < 4 * floor:
        checks.append(Check("disk", "warn", found, "Free disk space soon."))
    else:
        checks.append(Check("disk", "ok", found))
    if r.max_journal_mb and facts.size_bytes:
        use = facts.size_bytes / (r.max_journal_mb * MIB) * 100
        outcome: Outcome = "fail" if use >= 100 else "warn" if use >= r.high_watermark_pct else "ok"
        checks.append(
            Check(
                "journal budget",
                outcome,
                f"{use:.0f}% of retention.max_journal_mb = {r.max_journal_mb}",
                ""
                if outcome == "ok"
                else "The backlog is waiting for head office: restore the link, or carry it over "
                "with `lanesync journal export` and `lanesync import` at head office.",
            )
        )
    if facts.exists:
        rep = verify(cfg.journal_path)
        checks.append(
            Check("journal", "ok", f"integrity and hash chain ok ({rep.entries} entries)")
            if rep.ok
            else Check(
                "journal",
                "fail",
                str(rep.problem),
                "Stop the agent, keep a copy of the journal file, and call support; do not "
                "delete the file: it holds confirmed sales.",
            )
        )
    if read_live(live_path(cfg.journal_path)) is None:
        checks.append(
            Check(
                "agent",
                "warn",
                "the agent is not running",
                "Start it: systemctl start lanesync-agent; if it stops again, "
                "`journalctl -u lanesync-agent -n 50` shows why.",
            )
        )
    else:
        checks.append(Check("agent", "ok", "the agent is running"))
    return checks


def check_export_key(cfg: AgentConfig) -> Check:
    path = cfg.ops.export.key_file
    if path is None:
        return Check(
            "export key",
            "warn",
            "no [export] key_file: `lanesync journal export` cannot sign a backlog",
            "Ask head office for this store's export key and set [export] key_file.",
        )
    try:
        load_key(path)
    except ExportError as exc:
        return Check("export key", "fail", str(exc), "Put the key head office issued there.")
    return Check("export key", "ok", f"{path} readable")


def run(config_path: str, *, network: bool = True, timeout: float = 5.0) -> list[Check]:
    first, cfg = check_config(config_path)
    checks = [first]
    if cfg is None:
        return checks
    checks.append(version_check())
    steps: list[Callable[[], list[Check]]] = [
        lambda: check_certificates(cfg),
        lambda: check_devices(cfg),
        lambda: check_disk(cfg),
        lambda: [check_export_key(cfg)],
    ]
    for step in steps:
        checks += step()
    if network:
        live = read_live(live_path(cfg.journal_path))
        checks += (
            asyncio.run(check_broker_and_clock(cfg, timeout))
            if live is None
            else running_agent_link(cfg, live)
        )
    return checks


def running_agent_link(cfg: AgentConfig, live: dict[str, Any]) -> list[Check]:
    """The broker link and clock as the running agent sees them, instead of a second login.

    The broker makes a lane's identity its client id (use_username_as_clientid), so a login
    of ours would close the agent's session, and the agent's reconnect would close ours."""
    b = live.get("broker", {})
    where = f"{cfg.broker.host}:{cfg.broker.port}"
    error = b.get("last_error") or "no error yet"
    silent = head_office_silent(b, time.time())
    link = (
        Check(
            "broker",
            "fail",
            f"the running agent is connected to {where}, but no head office has answered it "
            f"for {int(silent)}s (not even its hello)",
            "Check head office: `lanesync headoffice status` there; it must run, reach this "
            "broker and use the lane's topic prefix. Sales wait in the journal meanwhile.",
        )
        if silent is not None
        else Check("broker", "ok", f"the running agent is connected and logged in to {where}")
        if b.get("connected")
        else Check(
            "broker",
            "fail",
            f"the running agent is not connected to {where}: {error}",
            "Fix what the error names; `lanesync status` shows the link, and "
            "`systemctl stop lanesync-agent` then `lanesync doctor` tests the login itself.",
        )
    )
    checks = [link, running_head_office_version(live)]
    skew = live.get("counters", {}).get("clock_skew_s")
    if skew is None:
        return [*checks, Check("clock", "warn", "the running agent has not measured it yet", "")]
    return [*checks, _skew_verdict(float(skew), " (the running agent's last measurement)")]


def running_head_office_version(live: dict[str, Any]) -> Check:
    """Head office's release as the running agent heard it announced (its live file)."""
    ho = live.get("head_office")
    if not isinstance(ho, dict):  # an agent older than the field
        return Check(
            "head office version",
            "warn",
            "the running agent does not report it (an older agent: restart it after the upgrade)",
            "systemctl restart lanesync-agent",
        )
    if ho.get("version") is None:
        return Check(
            "head office version",
            "warn",
            "the running agent has not heard head office announce itself yet",
            "Check again in a minute; if it stays so, head office is older than this box or "
            "does not reach this broker: `lanesync headoffice status` there.",
        )
    protocols = tuple(int(v) for v in ho.get("protocols") or ())
    check = head_office_version_check(None, version=str(ho["version"]), protocols=protocols)
    if ho.get("online") is False:
        check.found += "; it announced it went offline"
    return check


def render(checks: list[Check]) -> str:
    mark = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for c in checks:
        # A finding of several lines (every fault of a config file) stays under its check.
        first, *more = c.found.splitlines() or [""]
        lines.append(f"[{mark[c.outcome]}] {c.name}: {first}")
        lines.extend(f"       {line}" for line in more)
        if c.fix and c.outcome != "ok":
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)
