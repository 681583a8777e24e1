"""A self-signed certificate for the sandbox: the Azure SDKs refuse bearer tokens over plain HTTP."""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import ssl
import time
from pathlib import Path

VALID_DAYS = 365


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """Create (once) and return (cert.pem, key.pem) valid for 127.0.0.1 and localhost.

    Under an flock on `tls.lock`, so processes starting together on a fresh folder agree on one
    pair; an unreadable or expiring certificate is replaced.
    """
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "tls.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _still_valid(cert_path, key_path):
            make_certificate(cert_path, key_path)
    finally:
        os.close(fd)
    return cert_path, key_path


def _still_valid(cert_path: Path, key_path: Path) -> bool:
    """A certificate and key that load together, with more than a day of validity left.

    Read with `ssl`, not `cryptography`: every sandbox start checks it, and importing
    cryptography's x509 costs a run about 0.05 s. Ours is a CA certificate (the clients trust it
    as their CA), so `get_ca_certs` decodes it, expiry included.
    """
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
        trust = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        trust.load_verify_locations(cafile=cert_path)
        decoded = trust.get_ca_certs()
        expires = ssl.cert_time_to_seconds(decoded[0]["notAfter"]) if len(decoded) == 1 else 0.0
    except (OSError, ssl.SSLError, ValueError, KeyError):
        return False
    return expires > time.time() + 86400


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)
        handle.write(data)
    os.replace(tmp, path)


def make_certificate(cert_path: Path, key_path: Path, made_at: dt.datetime | None = None) -> None:
    """A new key and CA certificate for 127.0.0.1 and localhost, valid VALID_DAYS from `made_at` (now)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploykit sandbox")])
    now = made_at or dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(key_path, pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
