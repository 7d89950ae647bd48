"""The chain's broker certificate authority: one CA that signs the lanes' client certificates.

`lanesync headoffice pki init` makes it; `lanesync headoffice store add` issues each lane a
certificate with CN `store-<store>.<lane>` (the user Mosquitto takes from it with
`use_identity_as_username true`, headoffice/acl.py) and `store remove` revokes it by writing
its serial into the CRL that the stores' listener reads (`crlfile`, mosquitto.conf(5)). The
X.509 work is the `cryptography` package's (pyca: the library the Python ecosystem uses for
it), never hand-rolled; keys are ECDSA P-256, which Mosquitto's OpenSSL accepts for TLS 1.2
and 1.3 client authentication.

Layout of the directory (`[enrol] pki_dir`, default /etc/lanesync/pki):

    ca.key      the CA's private key (0600; keep it off the stores, back it up offline)
    ca.crt      the CA certificate: the stores' listener's `cafile`
    ca.crl      revoked serials: the stores' listener's `crlfile` (re-signed on each change)
    issued.json what was issued (CN -> serial, not_after, revoked_at) and every revoked serial
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import LanesyncError

CA_DAYS = 3650
CLIENT_DAYS = 825  # the CA/Browser Forum's old ceiling; a lane is re-issued by `store add`
CRL_DAYS = 30  # the CRL is re-signed at every change; `pki crl` renews it before it expires


class PkiError(LanesyncError):
    """The CA directory is missing, incomplete, or asked to do something it cannot."""

    code = "pki"


@dataclass(frozen=True, slots=True)
class Issued:
    cn: str
    serial: int
    not_after: str  # ISO 8601, UTC
    revoked_at: str | None = None
    cert: Path | None = None
    key: Path | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start (a key is never readable by others, not even
    for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CertificateAuthority:
    """The CA in `directory`; `init` creates it, the constructor opens an existing one."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        try:
            self._key = serialization.load_pem_private_key(
                (directory / "ca.key").read_bytes(), password=None
            )
            self.cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        except FileNotFoundError as exc:
            raise PkiError(
                f"no certificate authority in {directory} ({exc.filename} is missing): run "
                "`lanesync headoffice pki init` first"
            ) from None
        except ValueError as exc:
            raise PkiError(f"{directory}: cannot read the CA key or certificate: {exc}") from None
        if not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{directory / 'ca.key'}: not an EC private key")

    @classmethod
    def init(cls, directory: Path, name: str = "lanesync stores CA") -> CertificateAuthority:
        if (directory / "ca.key").exists():
            raise PkiError(
                f"{directory / 'ca.key'} exists: a second CA would orphan every certificate "
                "issued so far; remove the directory yourself if that is what you want"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write(
            directory / "ca.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        ca = cls(directory)
        ca._save_index({"issued": {}, "revoked": {}})
        ca.write_crl()
        return ca

    # --- the index of what was issued -----------------------------------------------------

    def _index(self) -> dict[str, dict[str, Any]]:
        """{"issued": {cn: {serial, not_after, revoked_at}}, "revoked": {serial: {cn, at}}}"""
        path = self.dir / "issued.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"issued": {}, "revoked": {}}
        except json.JSONDecodeError as exc:
            raise PkiError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, dict) or not {"issued", "revoked"} <= data.keys():
            raise PkiError(f"{path}: expected an object with 'issued' and 'revoked'")
        return data

    def _save_index(self, index: dict[str, dict[str, Any]]) -> None:
        text = json.dumps(index, indent=1, sort_keys=True) + "\n"
        _write(self.dir / "issued.json", text.encode(), 0o644)

    def issued(self) -> list[Issued]:
        return [
            Issued(cn, int(v["serial"]), v["not_after"], v.get("revoked_at"))
            for cn, v in sorted(self._index()["issued"].items())
        ]

    # --- issuing and revoking -------------------------------------------------------------

    def issue(self, cn: str, out_dir: Path, days: int = CLIENT_DAYS) -> Issued:
        """A client certificate for `cn` in `out_dir` (`<cn>.crt`, `<cn>.key` 0600). Issuing a
        CN again (a replaced box) revokes the certificate it had."""
        index = self._index()
        if cn in index["issued"] and index["issued"][cn].get("revoked_at") is None:
            self._revoke_in(index, cn)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        not_after = now + dt.timedelta(days=days)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._public_key()), False
            )
            .sign(self._signing_key(), hashes.SHA256())
        )
        cert_path, key_path = out_dir / f"{cn}.crt", out_dir / f"{cn}.key"
        _write(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        index["issued"][cn] = {
            "serial": serial,
            "not_after": not_after.isoformat(),
            "revoked_at": None,
        }
        self._save_index(index)
        self.write_crl()
        return Issued(cn, serial, not_after.isoformat(), None, cert_path, key_path)

    def revoke(self, cn: str) -> bool:
        """Revoke `cn`'s certificate; False if it has none (or it is revoked already)."""
        index = self._index()
        mine = index["issued"].get(cn)
        if mine is None or mine.get("revoked_at") is not None:
            return False
        self._revoke_in(index, cn)
        self._save_index(index)
        self.write_crl()
        return True

    @staticmethod
    def _revoke_in(index: dict[str, dict[str, Any]], cn: str) -> None:
        at = _now().isoformat()
        mine = index["issued"][cn]
        index["revoked"][str(mine["serial"])] = {"cn": cn, "at": at}
        mine["revoked_at"] = at

    def write_crl(self) -> Path:
        """Re-sign ca.crl with every revoked serial (also the ones replaced by a re-issue)."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=CRL_DAYS))
        )
        for serial, what in sorted(self._index()["revoked"].items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial))
                .revocation_date(dt.datetime.fromisoformat(what["at"]))
                .build()
            )
        crl = builder.sign(self._signing_key(), hashes.SHA256())
        path = self.dir / "ca.crl"
        _write(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return path

    def _signing_key(self) -> ec.EllipticCurvePrivateKey:
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        return self._key

    def _public_key(self) -> ec.EllipticCurvePublicKey:
        return self._signing_key().public_key()
