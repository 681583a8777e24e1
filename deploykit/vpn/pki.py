"""Point-to-site VPN certificates: root CA, client certificates, PKCS#12, the local index.

Pure cryptography and files; no Azure. Layout under certs/<env>/ (design.md): root.pem,
root.key, root.b64, clients/<name>.pem|.key|.pfx[.pass], roots/<serial>.pem|.key for rotated
roots, index.json. Private keys and passwords are written mode 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploykit.config import VpnConfig
from deploykit.errors import UserError

CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CLIENT_NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, no '..'"
PRIVATE = 0o600


def check_client_name(name: str) -> None:
    if not name or not CLIENT_NAME.match(name) or ".." in name:
        raise UserError(f"--name: {name!r} is not allowed; allowed: {CLIENT_NAME_RULE}")


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER: 40 upper-case hex characters, what the gateway's revocation list takes."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Azure identifies certificates by SHA-1


def public_cert_data(cert: x509.Certificate) -> str:
    """Base64 of the DER on one line, no PEM armour, no newline: the gateway's publicCertData."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "X")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_root(cfg: VpnConfig, when: dt.datetime) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=cfg.key_size)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cfg.root_common_name))
        .issuer_name(_name(cfg.root_common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - dt.timedelta(minutes=5))
        .not_valid_after(when + dt.timedelta(days=cfg.root_validity_days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_client(
    name: str, root_key: rsa.RSAPrivateKey, root: x509.Certificate, cfg: VpnConfig, when: dt.datetime
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=cfg.key_size)
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - dt.timedelta(minutes=5))
        .not_valid_after(when + dt.timedelta(days=cfg.client_validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Azure requires Client Authentication (1.3.6.1.5.5.7.3.2) on P2S client certificates.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return key, cert


def pkcs12_bytes(
    name: str, key: rsa.RSAPrivateKey, cert: x509.Certificate, root: x509.Certificate, password: str, legacy: bool
) -> bytes:
    """The client's bundle (its key, its certificate, the root's public certificate only).

    Default: AES-256 with PBKDF2 and a SHA-256 MAC (current Windows, macOS 14+, iOS 17+).
    legacy: 3DES with a SHA-1 MAC, which older macOS and iOS keychains and Windows 10
    before 1709 still require.
    """
    if legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the legacy format is defined with SHA-1
            .build(password.encode())
        )
    else:
        encryption = serialization.BestAvailableEncryption(password.encode())
    return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, [root], encryption)


@dataclass
class CertStore:
    """One environment's certificate folder and its index."""

    root_dir: Path

    @property
    def index_path(self) -> Path:
        return self.root_dir / "index.json"

    def client_path(self, name: str, suffix: str) -> Path:
        return self.root_dir / "clients" / f"{name}{suffix}"

    def load_index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"roots": [], "clients": {}}
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            index = None
        if not isinstance(index, dict) or not isinstance(index.get("roots"), list) or not isinstance(index.get("clients"), dict):
            raise UserError(
                f"{self.index_path}: not a valid certificate index (JSON with roots and clients); restore it from backup"
            )
        return index

    def save_index(self, index: dict[str, Any]) -> None:
        self.write(self.index_path, json.dumps(index, indent=2, sort_keys=True).encode() + b"\n", private=False)

    def write(self, path: Path, data: bytes, private: bool) -> None:
        """Write atomically; private files are created 0600 and never widened."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        if private:
            os.chmod(path, PRIVATE)

    def root_cert(self) -> x509.Certificate | None:
        """The current root's certificate, or None when there is no complete root here."""
        cert_path, key_path = self.root_dir / "root.pem", self.root_dir / "root.key"
        if not cert_path.exists() or not key_path.exists():
            return None
        return x509.load_pem_x509_certificate(cert_path.read_bytes())

    def root_key(self) -> rsa.RSAPrivateKey:
        """Loaded only to sign: parsing validates the RSA key, which costs tens of milliseconds."""
        key_path = self.root_dir / "root.key"
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise UserError(f"{key_path}: not an RSA key")
        return key

    def save_root(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.write(self.root_dir / "root.key", key_pem(key), private=True)
        self.write(self.root_dir / "root.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
        self.write(self.root_dir / "root.b64", public_cert_data(cert).encode("ascii"), private=False)

    def client_cert(self, name: str) -> x509.Certificate | None:
        path = self.client_path(name, ".pem")
        return x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def certificate_status(entry: dict[str, Any], active_roots: set[str], when: dt.datetime, renewal_days: int) -> str:
    """valid, expiring (inside the renewal window), expired, revoked, or orphaned (its root removed)."""
    if entry.get("revoked_at"):
        return "revoked"
    if entry["root_serial"] not in active_roots:
        return "orphaned"
    not_after = dt.datetime.fromisoformat(entry["not_after"])
    if not_after <= when:
        return "expired"
    if not_after - when <= dt.timedelta(days=renewal_days):
        return "expiring"
    return "valid"


def cert_entry(cert: x509.Certificate, root: x509.Certificate, when: dt.datetime) -> dict[str, Any]:
    return {
        "serial": serial_hex(cert),
        "thumbprint": thumbprint(cert),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "root_serial": serial_hex(root),
        "issued_at": when.isoformat(),
        "revoked_at": None,
        "revocation_applied": False,
    }
