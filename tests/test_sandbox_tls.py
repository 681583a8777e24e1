"""The sandbox's certificate: made once, kept while it is good, replaced when it is not.

Every sandbox start checks the pair; the check reads the files with `ssl` (no `cryptography`
import on a run's path), expiry included. `openssl` reads what was made, as a client would; the
certificates about to expire are made here with `cryptography`.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploykit.sandbox.tls import VALID_DAYS, ensure_certificate


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_a_new_pair_is_a_valid_certificate_for_loopback_and_a_private_key(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "tls")
    text = _openssl("x509", "-in", str(cert), "-noout", "-text", "-checkend", str((VALID_DAYS - 2) * 86400))
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert key.stat().st_mode & 0o777 == 0o600


def test_a_good_pair_is_kept_as_it_is(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "tls")
    before = (cert.read_bytes(), key.read_bytes())
    assert ensure_certificate(tmp_path / "tls") == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == before


def _write_ca_pair(cert: Path, key: Path, valid_for: dt.timedelta) -> None:
    """A CA certificate for 127.0.0.1 like the sandbox's, valid from a year ago for `valid_for` from now."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploykit sandbox")])
    now = dt.datetime.now(dt.UTC)
    made = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=365))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key.write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert.write_bytes(made.public_bytes(serialization.Encoding.PEM))  # a fresh file: its age says nothing


def test_an_expired_expiring_unreadable_or_mismatched_pair_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    cert, key = ensure_certificate(folder)

    for left in (dt.timedelta(days=-2), dt.timedelta(hours=12)):  # expired; less than a day left
        _write_ca_pair(cert, key, left)
        before = cert.read_bytes()
        ensure_certificate(folder)
        assert cert.read_bytes() != before, left
        _openssl("x509", "-in", str(cert), "-noout", "-checkend", str((VALID_DAYS - 2) * 86400))

    cert.write_text("not a certificate\n")
    ensure_certificate(folder)
    assert "BEGIN CERTIFICATE" in cert.read_text()

    other_cert, _ = ensure_certificate(tmp_path / "other")
    cert.write_bytes(other_cert.read_bytes())  # a certificate whose key is not key.pem
    ensure_certificate(folder)
    cert_key = _openssl("x509", "-in", str(cert), "-noout", "-pubkey")
    key_pub = _openssl("pkey", "-in", str(key), "-pubout")
    assert cert_key == key_pub
    assert os.stat(key).st_mode & 0o777 == 0o600
