"""The sandbox's certificate: made once, kept while it is good, replaced when it is not.

Every sandbox start checks the pair; the check reads the files with `ssl` (no `cryptography`
import on a run's path) and takes the certificate's age from its file. `openssl` reads what
was made, as a client would.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

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


def test_an_old_unreadable_or_mismatched_pair_is_replaced(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "tls")

    old = cert.read_bytes()
    aged = time.time() - (VALID_DAYS - 1) * 86400 - 60  # less than a day of validity left
    os.utime(cert, (aged, aged))
    ensure_certificate(tmp_path / "tls")
    assert cert.read_bytes() != old

    cert.write_text("not a certificate\n")
    ensure_certificate(tmp_path / "tls")
    assert "BEGIN CERTIFICATE" in cert.read_text()

    other_cert, _ = ensure_certificate(tmp_path / "other")
    cert.write_bytes(other_cert.read_bytes())  # a certificate whose key is not key.pem
    ensure_certificate(tmp_path / "tls")
    cert_key = _openssl("x509", "-in", str(cert), "-noout", "-pubkey")
    key_pub = _openssl("pkey", "-in", str(key), "-pubout")
    assert cert_key == key_pub
