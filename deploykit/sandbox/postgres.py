"""The sandbox's real PostgreSQL: an embedded server (pgserver) kept under .sandbox/postgres/.

Apps' login roles authenticate with SCRAM passwords, as on Azure; the local superuser keeps
socket trust so the sandbox needs no stored admin password.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from deploykit.errors import ApplyError

HBA = """# Written by deploykit: the superuser over the local socket, everyone else with a password.
local   all             postgres                                trust
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded server and return the superuser's connection URI."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); pgserver falls back fine.
        warnings.simplefilter("ignore")
        import pgserver

        try:
            server = pgserver.get_server(data_dir, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises plain exceptions from initdb/pg_ctl
            raise ApplyError(f"the sandbox's embedded PostgreSQL did not start in {data_dir}: {exc}") from None
    hba = data_dir / "pg_hba.conf"
    if hba.read_text() != HBA:
        hba.write_text(HBA)
        server.psql("SELECT pg_reload_conf();")
    return str(server.get_uri())
