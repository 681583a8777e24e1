"""Run the sandbox on its own: `python -m deploykit.sandbox [--state-dir DIR]`.

Prints the URL and CA file to export as DEPLOYKIT_SANDBOX_URL / DEPLOYKIT_SANDBOX_CA.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from deploykit.sandbox.server import SandboxServer


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Azure Resource Manager emulator (HTTPS on 127.0.0.1).")
    parser.add_argument("--state-dir", default=".sandbox", help="where state, journal and TLS files live")
    args = parser.parse_args()
    server = SandboxServer(Path(args.state_dir), run_id="standalone")
    print(f"export DEPLOYKIT_SANDBOX_URL={server.url}", flush=True)
    print(f"export DEPLOYKIT_SANDBOX_CA={server.cert_path.resolve()}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
