"""The sandbox's certificate: made once, kept while it is good, replaced when it is not.

Every sandbox start checks the pair; the check reads the files with `ssl` (no `cryptography`
import on a run's path), expiry included. `openssl` reads what was made, as a client would; the
expired and expiring pairs are made as the sandbox makes its own, at an earlier moment.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

from deploykit.sandbox.tls import VALID_DAYS, ensure_certificate, make_certificate


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


def test_an_expired_expiring_unreadable_or_mismatched_pair_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    cert, key = ensure_certificate(folder)

    for left in (dt.timedelta(days=-2), dt.timedelta(hours=12)):  # expired; less than a day left
        make_certificate(cert, key, made_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=VALID_DAYS) + left)
        os.utime(cert)  # a fresh file: its age says nothing
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
