"""[broker] security keys, for agent and head office alike: each error names the key."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from headoffice import config as ho_config
from protocol.errors import ConfigError
from protocol.runtime.brokerconn import BrokerFileError, TlsConfig, tls_context
from tests.security.pki import Ca
from tests.security.sec_helpers import Pki


def agent(broker: dict[str, Any]) -> Any:
    return agent_config.parse({"store": "S001", "lane": "L1", "broker": broker}).broker


def headoffice(broker: dict[str, Any]) -> Any:
    return ho_config.parse({"broker": broker}).broker


SIDES = pytest.mark.parametrize("parse", [agent, headoffice], ids=["agent", "headoffice"])


@SIDES
def test_plain_by_default_and_tls_when_a_ca_is_named(
    parse: Callable[[dict[str, Any]], Any], pki: Pki
) -> None:
    plain = parse({})
    assert (plain.tls, plain.port) == (None, 1883)
    b = parse(pki.tls("store-S001"))
    assert b.port == 8883  # TLS changes the default port ...
    assert b.tls == TlsConfig(
        str(pki.ca.cert_path),
        str(pki.clients["store-S001"].cert),
        str(pki.clients["store-S001"].key),
    )
    assert parse(pki.tls("store-S001") | {"port": 1884}).port == 1884  # ... not a given one
    system_cas = parse({"tls": True, "tls_server_name": "mq.example.com"})
    assert system_cas.tls == TlsConfig(server_name="mq.example.com")
    ctx = tls_context(system_cas.tls)
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED


@SIDES
def test_file_errors_name_the_key(
    parse: Callable[[dict[str, Any]], Any], pki: Pki, tmp_path: Path
) -> None:
    s1, s2 = pki.clients["store-S001"], pki.clients["store-S002"]
    ca = str(pki.ca.cert_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    locked = Ca(tmp_path / "locked").issue("store-S001", key_password=b"secret")
    cases = {
        "broker.ca_file: no such file /nope/ca.pem": {"ca_file": "/nope/ca.pem"},
        f"broker.ca_file: {garbage} holds no PEM CA certificate": {"ca_file": str(garbage)},
        "broker.cert_file: no such file /nope/c.crt": {"ca_file": ca, "cert_file": "/nope/c.crt"},
        "broker.key_file: no such file /nope/c.key": {
            "ca_file": ca,
            "cert_file": str(s1.cert),
            "key_file": "/nope/c.key",
        },
        f"broker.key_file: the private key in {s2.key} does not belong to the certificate in "
        f"{s1.cert}": {"ca_file": ca, "cert_file": str(s1.cert), "key_file": str(s2.key)},
        f"broker.key_file: the private key in {locked.key} is encrypted": {
            "ca_file": ca,
            "cert_file": str(locked.cert),
            "key_file": str(locked.key),
        },
        f"broker.cert_file: cannot load a PEM certificate from {garbage}": {
            "ca_file": ca,
            "cert_file": str(garbage),
            "key_file": str(s1.key),
        },
    }
    for message, keys in cases.items():
        with pytest.raises(ConfigError) as err:
            parse(keys)
        assert str(err.value).startswith(message), (keys, str(err.value))


@SIDES
def test_inconsistent_keys_are_refused(
    parse: Callable[[dict[str, Any]], Any], pki: Pki, tmp_path: Path
) -> None:
    ca = str(pki.ca.cert_path)
    cases = {
        "broker.ca_file: set, but broker.tls = false": {"tls": False, "ca_file": ca},
        "broker.tls_server_name: set, but broker.tls = false": {"tls_server_name": "x"},
        "broker.key_file: needs broker.cert_file": {"ca_file": ca, "key_file": ca},
        "broker.tls: must be true or false": {"tls": "yes"},
        "broker.password: needs broker.username": {"password": "pw"},
        "broker.ca_flie: unknown key": {"ca_flie": ca},
    }
    for message, keys in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse(keys)


@SIDES
def test_password_file(parse: Callable[[dict[str, Any]], Any], tmp_path: Path) -> None:
    secret = tmp_path / "broker.pw"
    secret.write_text("s3cret with spaces\n")
    secret.chmod(0o600)
    b = parse({"username": "store-S001", "password_file": str(secret)})
    assert (b.username, b.password, b.password_file) == (
        "store-S001",
        "s3cret with spaces",
        str(secret),
    )
    empty = tmp_path / "empty.pw"
    empty.write_text("\n")
    cases = {
        f"broker.password_file: no such file {tmp_path}/missing": {
            "username": "u",
            "password_file": str(tmp_path / "missing"),
        },
        f"broker.password_file: cannot read {tmp_path}: Is a directory": {
            "username": "u",
            "password_file": str(tmp_path),
        },
        f"broker.password_file: {empty} must hold the password on one non-empty line": {
            "username": "u",
            "password_file": str(empty),
        },
        "broker.password_file: set together with broker.password": {
            "username": "u",
            "password": "x",
            "password_file": str(secret),
        },
        "broker.password_file: needs broker.username": {"password_file": str(secret)},
    }
    for message, keys in cases.items():
        with pytest.raises(ConfigError) as err:
            parse(keys)
        assert str(err.value).startswith(message), str(err.value)


def test_a_file_that_breaks_after_start_is_a_link_failure(pki: Pki, tmp_path: Path) -> None:
    """At connect time the same error is an OSError: the reconnect loops retry it."""
    key = tmp_path / "k.pem"
    key.write_bytes(pki.clients["store-S001"].key.read_bytes())
    b = agent(pki.tls("store-S001") | {"key_file": str(key)})
    assert tls_context(b.tls) is not None
    key.unlink()
    with pytest.raises(OSError, match=f"broker.key_file: no such file {key}") as err:
        tls_context(b.tls)
    assert isinstance(err.value, BrokerFileError)


def test_config_file_error_names_file_and_key(pki: Pki, tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('store = "S001"\nlane = "L1"\n[broker]\ncert_file = "/nope.crt"\n')
    with pytest.raises(ConfigError, match=f"^{toml}: broker.cert_file: no such file /nope.crt\n"):
        agent_config.load(toml)


SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"


@pytest.mark.parametrize(
    ("example", "load", "cn"),
    [
        ("agent.example.toml", agent_config.load, "store-S001"),
        ("headoffice.example.toml", ho_config.load, "headoffice"),
    ],
)
def test_example_configs_document_the_security_keys(
    example: str, load: Callable[[Path], Any], cn: str, pki: Pki, tmp_path: Path
) -> None:
    """Uncomment every documented [broker] security key: each is real and they parse together."""
    pw = tmp_path / "broker.pw"
    pw.write_text("pw\n")
    values = pki.tls(cn) | {
        "tls": True,
        "tls_server_name": "mqtt.example.com",
        "username": cn,
        "password_file": str(pw),
    }
    lines = []
    section = ""
    uncommented = set()
    for line in (SYSTEMD / example).read_text().splitlines():
        if line.startswith("["):
            section = line
        key = line.removeprefix("# ").split(" = ")[0] if line.startswith("# ") else None
        if section == "[broker]" and key in values:
            lines.append(f"{key} = {json.dumps(values[key])}")  # JSON scalars are TOML too
            uncommented.add(key)
        else:
            lines.append(line)
    assert uncommented == set(values)
    cfg = tmp_path / example
    cfg.write_text("\n".join(lines) + "\n")
    b = load(cfg).broker
    assert b.tls == TlsConfig(
        str(pki.ca.cert_path),
        str(pki.clients[cn].cert),
        str(pki.clients[cn].key),
        "mqtt.example.com",
    )
    assert (b.username, b.password) == (cn, "pw")
