"""Benchmark: issuing 100 VPN client certificates.

Two figures: the cryptography alone (key, certificate, PKCS#12) and the whole `vpn.client` task
run in-process 100 times (plan, files, index, the vault check against the sandbox).

Run: python benchmarks/bench_vpn.py [--count 100]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.chdir(REPO)

from deploykit import clock  # noqa: E402
from deploykit.config import load_platform  # noqa: E402
from deploykit.paths import config_dir  # noqa: E402
from deploykit.sandbox.server import SandboxServer  # noqa: E402
from deploykit.vpn import p2s as vpn  # noqa: E402
from deploykit.vpn import pki  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    cfg = load_platform(config_dir(), ["prod"]).envs["prod"].vpn
    when = clock.now()
    root_key, root = pki.issue_root(cfg, when)
    crypto = []
    for index in range(args.count):
        start = time.perf_counter()
        key, cert = pki.issue_client(f"bench-{index}", root_key, root, cfg, when)
        pki.pkcs12_bytes(f"bench-{index}", key, cert, root, "password-for-benchmark", legacy=False)
        crypto.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        server = SandboxServer(Path(tmp) / "sandbox", run_id="bench")
        os.environ.update(
            DEPLOYKIT_SANDBOX_URL=server.url,
            DEPLOYKIT_SANDBOX_CA=str(server.cert_path),
            DEPLOYKIT_AUDIT_DIR=str(Path(tmp) / "audit"),
        )
        certs = str(Path(tmp) / "certs")
        request = lambda **f: vpn.VpnRequest(env="prod", certs_dir=certs, yes=True, **f)  # noqa: E731
        with contextlib.redirect_stdout(io.StringIO()):
            vpn.root(request(task="vpn.root"))
            start = time.perf_counter()
            for index in range(args.count):
                vpn.client(request(task="vpn.client", name=f"bench-{index}"))
            task_total = time.perf_counter() - start
            start = time.perf_counter()
            for index in range(args.count):
                vpn.client(request(task="vpn.client", name=f"bench-{index}"))
            rerun_total = time.perf_counter() - start
        server.stop()

    print(f"{args.count} client certificates, RSA {cfg.key_size}, SHA-256, PKCS#12 AES-256")
    print(
        f"cryptography only: {sum(crypto):.2f} s total, median {statistics.median(crypto) * 1000:.0f} ms, "
        f"max {max(crypto) * 1000:.0f} ms per certificate (RSA key generation dominates)"
    )
    print(f"vpn.client task, in-process: {task_total:.2f} s total, {task_total / args.count * 1000:.0f} ms per certificate")
    print(
        f"re-run of the same {args.count} (all unchanged): {rerun_total:.2f} s total, "
        f"{rerun_total / args.count * 1000:.0f} ms per name"
    )


if __name__ == "__main__":
    main()
