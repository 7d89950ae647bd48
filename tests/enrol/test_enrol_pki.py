"""The chain's CA (headoffice/pki.py): what it writes is what Mosquitto and OpenSSL accept."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from headoffice.pki import CertificateAuthority, PkiError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_ca_with_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki")
    assert mode(tmp_path / "pki" / "ca.key") == 0o600
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    crl = x509.load_pem_x509_crl((tmp_path / "pki" / "ca.crl").read_bytes())
    assert len(list(crl)) == 0
    with pytest.raises(PkiError, match="a second CA would orphan"):
        CertificateAuthority.init(tmp_path / "pki")


def test_opening_a_missing_ca_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="lanesync headoffice pki init"):
        CertificateAuthority(tmp_path / "nothing")


def test_issued_certificate_verifies_with_openssl_and_names_the_lane(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki")
    got = ca.issue("store-S002.L1", tmp_path / "out")
    assert got.cert is not None
    assert got.key is not None
    assert mode(got.key) == 0o600
    cert = x509.load_pem_x509_certificate(got.cert.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=store-S002.L1"
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            str(tmp_path / "pki" / "ca.crt"),
            str(got.cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert [i.cn for i in ca.issued()] == ["store-S002.L1"]


def test_revoked_and_replaced_certificates_are_in_the_crl(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki")
    first = ca.issue("store-S002.L1", tmp_path / "out1")
    second = ca.issue("store-S002.L1", tmp_path / "out2")  # a replaced box: the old one revoked
    other = ca.issue("store-S002.L2", tmp_path / "out1")
    assert ca.revoke("store-S002.L2")
    assert not ca.revoke("store-S002.L2")  # idempotent
    assert not ca.revoke("store-S999.L1")  # never issued
    crl = x509.load_pem_x509_crl((tmp_path / "pki" / "ca.crl").read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert {r.serial_number for r in crl} == {first.serial, other.serial}
    assert second.serial not in {r.serial_number for r in crl}
    crl_check = subprocess.run(
        [
            "openssl",
            "verify",
            "-crl_check",
            "-CAfile",
            str(tmp_path / "pki" / "ca.crt"),
            "-CRLfile",
            str(tmp_path / "pki" / "ca.crl"),
            str(tmp_path / "out1" / "store-S002.L2.crt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert crl_check.returncode != 0
    assert "revoked" in (crl_check.stdout + crl_check.stderr)
