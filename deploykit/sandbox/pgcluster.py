"""A real PostgreSQL cluster behind each sandbox flexible server, reachable as Azure's would be.

Every endpoint of the sandbox that must accept real connections is loopback and carries its
port: a server's `fullyQualifiedDomainName` is `127.0.0.1:<port>` (as a vault's `vaultUri` is
`https://127.0.0.1:<port>/`). Clients connect with TLS (`sslmode=require`; the certificate is the
sandbox's own, valid for 127.0.0.1) and a SCRAM password, as on Azure.

- `<state dir>/postgres-servers/<server>/` holds the cluster: `data/` (PGDATA, the embedded
  binaries of the `pgserver` package), `superuser` (the sandbox's own superuser password, 0600),
  `port` (the endpoint's last port), `lock` (an flock: two processes never start or stop one
  cluster at once; deleting holds it across the stop and the folder's rename aside, and a
  waiter that then holds the flock of a lock file no longer at its path looks again instead of
  making a cluster in a folder that is gone). Beside, not under, `<state dir>/postgres/`: that is `postgres.start_embedded`'s
  own PGDATA, and a cluster folder inside it would stop its initdb.
- The embedded binaries are built without OpenSSL, so the cluster itself listens on a Unix
  socket only (under /tmp: socket paths are short) and the endpoint is a TLS front in the sandbox
  process: it answers PostgreSQL's SSLRequest, does the handshake with the sandbox's certificate,
  then relays the bytes. A client that does not ask for TLS is refused as Azure refuses it
  (require_secure_transport). The cluster's pg_hba asks every connection for a SCRAM password.
- The admin login is created as Azure creates it: LOGIN CREATEDB CREATEROLE, member of
  `azure_pg_admin`, not a superuser. Its password travels as a SCRAM verifier computed here, so
  the clear text is in no statement and no log; it is never stored.
- The cluster outlives the sandbox process (CLI runs reuse it: no initdb; a start only if its
  postmaster died). A cluster runs with `fsync = off` and `synchronous_commit = off`: a
  sandbox's data need not survive an OS crash, so no commit or CREATE DATABASE waits for a
  disk flush (where flushes are slow, CREATE DATABASE took up to 140 ms instead of about 70 ms).
  Its dynamic shared memory is files in its own folder (`dynamic_shared_memory_type = mmap`), not
  /dev/shm segments, which a postmaster stopped at once (SIGQUIT, an orphan's reaping) leaves
  behind until the machine restarts.
- A new cluster is a copy of a machine-wide template (`PgTemplate`), not a fresh initdb: one per
  PostgreSQL binary version under `<cache>/pg-template/<major.minor>/` (`cache_dir()`), made once
  with initdb and what every Azure server has before its admin exists (azure_pg_admin, the
  extension gate, azure_maintenance and azure_sys), then stopped cleanly. The copy's first start
  gives it its own superuser password (the template's is never shared). Without a writable cache
  folder a cluster is made with initdb as before.
- The store prepares a cluster (copy or initdb, start, the admin login) in the background, inside the
  server's long-running operation (store.SandboxState, armtype.BackingHook). While this process
  prepares one (`Cluster.preparing`), its `endpoint` answers None at once instead of waiting for
  it; another process waits on the cluster's flock as before. An init that never finished (a
  killed process) leaves an `initialising` marker, so the next `ensure` makes the cluster anew
  and a GET never starts a half-made one.
- The TLS front lives as long as the sandbox process that opened it, and takes the same port
  again when it is free (a second process on the same state gets another). Deleting the
  server, `SandboxState.reset` and `remove_state` stop and delete clusters.

When the sandbox runs as root, PostgreSQL runs as the `pgserver` user (its package's convention).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import ssl
import stat
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any

from deploykit import locks
from deploykit.sandbox.ids import ArmError
from deploykit.sandbox.tls import ensure_certificate

ROOT_NAME = "postgres-servers"
ADMIN_GROUP = "azure_pg_admin"  # Azure's admin role is a member of this, never a superuser
AZURE_DATABASES = ("azure_maintenance", "azure_sys")  # a new Azure server has these (azure-facts.md 3.7)
PG_USER = "pgserver"  # who runs PostgreSQL when the sandbox is root (pgserver's own choice)
SOCKET_PORT = 5432  # names the socket file only (.s.PGSQL.5432): the cluster has no TCP listener

# Server parameters the sandbox applies to the real cluster (the rest are only ARM data).
PARAMETERS_FILE = "azure.conf"

# azure.extensions as Azure enforces it for its (non-superuser) admin: CREATE or DROP EXTENSION of
# a name not in the list fails with Azure's error (azure-databases-docs, "errors when managing
# extensions"); a listed extension PostgreSQL does not trust (vector) is created by this
# superuser-owned trigger first, so the admin's CREATE EXTENSION IF NOT EXISTS then succeeds (a
# plain CREATE EXTENSION then says it exists). Only the creating function runs as the superuser,
# with a fixed search_path. Installed in template1, so every new database has it.
EXTENSION_GATE = r"""
CREATE SCHEMA IF NOT EXISTS azure_sandbox;
REVOKE ALL ON SCHEMA azure_sandbox FROM PUBLIC;
GRANT USAGE ON SCHEMA azure_sandbox TO PUBLIC;
CREATE OR REPLACE FUNCTION azure_sandbox.allowed(ext text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT ext = 'plpgsql' OR ext = ANY (string_to_array(lower(replace(
    COALESCE(current_setting('azure.extensions', true), ''), ' ', '')), ','))
$$;
CREATE OR REPLACE FUNCTION azure_sandbox.create_untrusted(ext text, target text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  is_trusted boolean;
BEGIN
  IF target IS NULL OR NOT azure_sandbox.allowed(ext) OR NOT has_schema_privilege(session_user, target, 'CREATE') THEN
    RETURN;
  END IF;
  SELECT v.trusted INTO is_trusted FROM pg_available_extension_versions v
    JOIN pg_available_extensions a ON a.name = v.name AND a.default_version = v.version WHERE v.name = ext;
  IF is_trusted IS DISTINCT FROM false THEN RETURN; END IF;
  PERFORM set_config('azure_sandbox.inner', 'on', true);
  EXECUTE format('CREATE EXTENSION IF NOT EXISTS %I SCHEMA %I', ext, target);
  PERFORM set_config('azure_sandbox.inner', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION azure_sandbox.create_untrusted(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION azure_sandbox.create_untrusted(text, text) TO PUBLIC;
CREATE OR REPLACE FUNCTION azure_sandbox.extension_gate() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  found text[];
  ext text;
BEGIN
  IF current_setting('azure_sandbox.inner', true) = 'on' THEN RETURN; END IF;
  found := regexp_match(current_query(),
    '(create|drop)\s+extension\s+(if\s+(not\s+)?exists\s+)?("([^"]+)"|([a-z0-9_-]+))', 'i');
  IF found IS NULL THEN RETURN; END IF;
  ext := lower(COALESCE(found[5], found[6]));
  IF NOT azure_sandbox.allowed(ext) THEN
    RAISE EXCEPTION 'extension "%" is not allow-listed for "azure_pg_admin" users in Azure Database for PostgreSQL', ext
      USING HINT = 'to see the full allow list of extensions, please run: "show azure.extensions;"';
  END IF;
  IF lower(found[1]) = 'create' THEN
    PERFORM azure_sandbox.create_untrusted(ext, current_schema());
  END IF;
END
$$;
DROP EVENT TRIGGER IF EXISTS azure_extension_gate;
CREATE EVENT TRIGGER azure_extension_gate ON ddl_command_start WHEN TAG IN ('CREATE EXTENSION', 'DROP EXTENSION')
  EXECUTE FUNCTION azure_sandbox.extension_gate();
"""

HBA = """# Written by the deploykit sandbox: a SCRAM password for everyone; TLS is the sandbox's front.
local all all scram-sha-256
"""


INITDB_ARGS = ("-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
CONF_INCLUDES = f"\ninclude_if_exists = 'sandbox.conf'\ninclude_if_exists = '{PARAMETERS_FILE}'\n"


def _conf(socket_dir: Path) -> str:
    return (
        "# Written by the deploykit sandbox: no TCP listener; the TLS front relays to the socket.\n"
        f"listen_addresses = ''\nport = {SOCKET_PORT}\nunix_socket_directories = '{socket_dir}'\n"
        "unix_socket_permissions = 0700\npassword_encryption = 'scram-sha-256'\n"
        "shared_buffers = 16MB\nmax_connections = 50\n"
        "# A sandbox cluster need not survive an OS crash: no flushes to wait for.\n"
        "fsync = off\nsynchronous_commit = off\n"
        "# Dynamic shared memory as files in the data folder, not /dev/shm segments: a postmaster\n"
        "# stopped at once (an orphan whose folder was deleted) then leaves nothing behind.\n"
        "dynamic_shared_memory_type = mmap\n"
    )


def clusters_root(state_dir: Path) -> Path:
    return state_dir / ROOT_NAME


def _pgserver(module: str) -> Any:
    """A module of pgserver (imported only to run its commands or make its user: 0.1 s with psutil)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        return importlib.import_module(f"pgserver.{module}")


def _commands() -> Any:
    return _pgserver("_commands")


def _run_as() -> str | None:
    """The system user PostgreSQL runs as: pgserver's when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        _pgserver("utils").ensure_user_exists(PG_USER)
    return PG_USER


@cache
def bin_dir() -> Path:
    """The embedded PostgreSQL's binaries, found without importing pgserver (psutil and all: 0.1 s a run)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ArmError(500, "InternalServerError", "The sandbox's PostgreSQL package (pgserver) is not installed.")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _give(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


def _write(path: Path, text: str, user: str | None) -> None:
    """A file only its owner reads: the sandbox's, or the PostgreSQL user's when given."""
    path.write_text(text)
    path.chmod(0o600)
    _give(path, user)


def _own_folder(path: Path, user: str | None) -> None:
    """A 0700 folder of ours (or the PostgreSQL user's) in a shared place: never a symlink or another's."""
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = path.lstat()
    owners = {os.geteuid()} | ({pwd.getpwnam(user).pw_uid} if user else set())
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners:
        raise ArmError(500, "InternalServerError", f"{path} is not the sandbox's own folder; remove it")
    _give(path, user)


def _traversable(path: Path) -> None:
    """Let the PostgreSQL user reach `path` (o+x on each parent; nothing becomes readable)."""
    for parent in [path, *path.parents]:
        with suppress(OSError):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)


INIT_MARKER = "initialising"  # in a cluster's folder while initdb runs: a half-made cluster when left behind

# Clusters this process is preparing (Cluster.preparing), with how many works prepare each.
_PREPARING: dict[Path, int] = {}
_PREPARING_LOCK = threading.Lock()


@cache
def binary_version() -> tuple[str, str]:
    """(major, minor) of the embedded PostgreSQL, e.g. ("16", "2")."""
    out = _commands().postgres(["--version"])  # "postgres (PostgreSQL) 16.2"
    major, _, minor = out.split()[-1].partition(".")
    return major, minor.split(".")[0] or "0"


class Cluster:
    """One server's cluster under `home`; every method is safe across threads and processes."""

    def __init__(self, home: Path) -> None:
        self.home = home.absolute()  # the postmaster's command line names it: found again by it
        self.data = self.home / "data"
        # Socket paths must stay under ~100 bytes: a short folder per cluster, checked in _start.
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        self.socket_dir = Path("/tmp") / f"deploykit-pg-{digest}"  # noqa: S108 - owner and type checked before use

    @classmethod
    def for_server(cls, state_dir: Path, name: str) -> Cluster:
        return cls(clusters_root(state_dir) / name.lower())

    @contextmanager
    def _locked(self, make_home: bool = True) -> Iterator[None]:
        """The cluster's flock; without make_home, an ArmError when its folder is gone (the server was deleted)."""
        fd = self._lock_fd(make_home)
        try:
            yield
        finally:
            os.close(fd)

    def _lock_fd(self, make_home: bool) -> int:
        """An fd holding the flock of the lock file that is still at its path.

        `destroy` removes the folder, lock file included, while holding the flock. A waiter that
        opened the file before then gets the flock of a removed file: it must not go on making a
        cluster in a folder that is gone (or being made again), so it looks again. With
        make_home it makes the folder and locks the new file; without, the server was deleted.
        """
        lock = self.home / "lock"
        while True:
            if make_home:
                self.home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                if make_home:
                    continue
                raise self._removed() from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held, current = os.fstat(fd), os.stat(lock)
                if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:  # an interrupt while waiting: the fd is not the caller's to close
                os.close(fd)
                raise
            os.close(fd)
            if not make_home:
                raise self._removed()

    def _removed(self) -> ArmError:
        return ArmError(500, "InternalServerError", f"The sandbox PostgreSQL folder {self.home} was removed (server deleted).")

    def exists(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def _half_made(self) -> bool:
        """An init that never finished (its process was killed): the next ensure makes the cluster anew."""
        return (self.home / INIT_MARKER).exists()

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark the cluster as being prepared by this process for the block: its endpoint is None meanwhile."""
        with _PREPARING_LOCK:
            _PREPARING[self.home] = _PREPARING.get(self.home, 0) + 1
        try:
            yield
        finally:
            with _PREPARING_LOCK:
                left = _PREPARING.pop(self.home) - 1
                if left:
                    _PREPARING[self.home] = left

    def being_prepared(self) -> bool:
        """Whether this process is preparing the cluster now (another process's work is not seen)."""
        with _PREPARING_LOCK:
            return self.home in _PREPARING

    def _running(self) -> bool:
        """A live, ready postmaster of this cluster (not a stale postmaster.pid, not a reused pid)."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid, status = int(lines[0]), lines[7].strip()
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return False
        return status == "ready" and str(self.data).encode() in cmdline

    # ---- lifecycle -----------------------------------------------------------------------
    def ensure(self, make_home: bool = True) -> None:
        """The cluster initialised (once, or anew when half-made) and its postmaster running.

        Without make_home the cluster's folder must exist already (the server's PUT made it): a
        server deleted before its backing work began gets no new cluster.
        """
        self._ensure(create=True, make_home=make_home)

    def _ensure(self, create: bool, make_home: bool = True) -> bool:
        """ensure(); without `create`, False instead of making a cluster that is missing, half-made or deleted."""
        reap_orphans()
        try:
            fd = self._lock_fd(make_home and create)
        except ArmError:
            if create:
                raise
            return False
        try:
            user = _run_as()
            if not self.exists() or self._half_made():
                if not create:
                    return False
                self._init(user)
            if not self._running():
                self._start(user)
        finally:
            os.close(fd)
        return True

    def _init(self, user: str | None) -> None:
        marker = self.home / INIT_MARKER
        marker.touch()  # removed once the cluster is complete; left behind by a killed process
        if self.data.exists():  # a half-made cluster from an interrupted init (a copy may have been started)
            self._kill_postmaster()
            shutil.rmtree(self.data)
        self._reachable_home()
        if not self._copy_template(user):
            self._fresh(user)
        marker.unlink()

    def _reachable_home(self) -> None:
        """The PostgreSQL user may pass through the home (o+x on it and its parents), never list it."""
        _traversable(self.home.parent)
        self.home.chmod(0o711)

    def _fresh(self, user: str | None) -> None:
        """initdb into `data` with a new superuser password (the template's own recipe, and the fallback)."""
        self.data.mkdir(mode=0o700)
        _give(self.data, user)
        password = secrets.token_urlsafe(24)
        _write(self.home / "superuser", password, None)
        pwfile = self.home / "initdb.pw"  # read by initdb as the cluster's user, removed at once
        _write(pwfile, password + "\n", user)
        try:
            self._pg("initdb", [*INITDB_ARGS, f"--pwfile={pwfile}"], user)
        finally:
            pwfile.unlink(missing_ok=True)
        self._configure(user)

    def _configure(self, user: str | None) -> None:
        """The cluster's own files: postgresql.conf's includes (once), pg_hba.conf; sandbox.conf comes on start."""
        conf = self.data / "postgresql.conf"
        text = conf.read_text()
        _write(conf, text if CONF_INCLUDES in text else text + CONF_INCLUDES, user)
        _write(self.data / "pg_hba.conf", HBA, user)

    def _copy_template(self, user: str | None) -> bool:
        """Make `data` a copy of the template, started, with its own superuser password; False without a template."""
        with PgTemplate.held(user) as template:
            if template is None:
                return False
            try:
                _copy_tree(template.data, self.data)
                shared = (template.home / "superuser").read_text()
            except (OSError, subprocess.SubprocessError):
                shutil.rmtree(self.data, ignore_errors=True)
                return False
        self._configure(user)
        self._start(user)
        self._own_superuser(shared)
        return True

    def _own_superuser(self, shared: str) -> None:
        """Replace the template's superuser password (every copy has it) with this cluster's own."""
        from psycopg import sql

        password = secrets.token_urlsafe(24)
        with self.connect(password=shared) as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), b"postgres", b"scram-sha-256")
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(verifier.decode())))
        _write(self.home / "superuser", password, None)

    def _kill_postmaster(self) -> None:
        """Stop at once (SIGQUIT) a postmaster left running on this data folder by a killed process."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])  # negative: a standalone backend
            if pid <= 0 or str(self.data).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while _exists(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _start(self, user: str | None) -> None:
        if user is not None:  # again: a parent may have lost o+x since the init (pytest resets its base folder)
            _traversable(self.home.parent)
        _own_folder(self.socket_dir, user)  # /tmp may have been emptied since the last start
        _write(self.data / "sandbox.conf", _conf(self.socket_dir), user)  # the folder may have moved
        self._pg("pg_ctl", ["-w", "-t", "30", "-s", "-l", str(self.data / "log"), "start"], user)

    def stop(self) -> None:
        with suppress(ArmError), self._locked(make_home=False):  # a deleted cluster has nothing to stop
            self._stop_postmaster()

    def _stop_postmaster(self) -> None:
        """A clean, fast stop of the running postmaster (under the flock)."""
        if self._running():
            user = _run_as()
            if user is not None:
                _traversable(self.home.parent)
            with suppress(ArmError):
                self._pg("pg_ctl", ["-w", "-s", "-m", "fast", "stop"], user)

    def destroy(self) -> None:
        """Stop the cluster and take its folder away in one hold of its flock: nobody starts it between the two.

        The folder is renamed aside (one step), then removed after the flock is let go. Removing it
        in place would unlink the lock file long before the ~1,600 files of `data`, and a caller
        arriving meanwhile would make a new lock file, lock it at once and find a half-removed
        cluster. A rename leaves it nothing at the path: no cluster (make_home=False), or a new
        empty folder (make_home=True). A process killed before the removal leaves the renamed
        folder (a dot name no server has), which remove_all deletes.
        """
        close_front(self.home)
        removed: Path | None = None
        with suppress(ArmError), self._locked(make_home=False):  # already gone: nothing to stop
            self._stop_postmaster()
            self._kill_postmaster()  # one a killed process left starting, never ready
            removed = self.home.with_name(f".{self.home.name}.deleted-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                self.home.rename(removed)
            except OSError:
                shutil.rmtree(self.home, ignore_errors=True)
                removed = None
        if removed is not None:
            shutil.rmtree(removed, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def _pg(self, command: str, args: list[str], user: str | None) -> str:
        try:
            # As the PostgreSQL user with its own group only: root's group must not decide what it may open.
            who = {"user": user, "group": user, "extra_groups": []} if user else {}
            return getattr(_commands(), command)(args, pgdata=self.data, timeout=60, **who)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log = self.data / "log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            detail = "; ".join(tail) or f"{command} failed: {exc}"
            raise ArmError(500, "InternalServerError", f"The sandbox PostgreSQL in {self.home} failed: {detail}") from None

    # ---- the endpoint ----------------------------------------------------------------------
    def endpoint(self, tls_dir: Path) -> int | None:
        """The TLS port clients connect to: the cluster started if needed, the front opened in this process.

        None when the cluster is gone (its folder was removed by hand) or half-made (a killed
        process): a GET never makes a new, empty one; the server's next PUT does, with its admin
        login. None at once while this process prepares it (the server's operation is still in
        progress): a GET must not wait for initdb.
        """
        if self.being_prepared() or not self.exists():
            return None
        if not self._ensure(create=False):
            return None
        return open_front(self, tls_dir)

    # ---- the admin login -----------------------------------------------------------------
    def connect(self, database: str = "postgres", password: str | None = None) -> Any:
        """A superuser connection over the socket (the sandbox's own password, never the admin's)."""
        import psycopg

        if password is None:
            password = (self.home / "superuser").read_text()
        return psycopg.connect(
            host=str(self.socket_dir), port=SOCKET_PORT, user="postgres", password=password, dbname=database,
            connect_timeout=10, autocommit=True,
        )  # fmt: skip

    def set_admin(self, login: str, password: str | None) -> None:
        """Create the admin login as Azure does, or give it a new password (never a superuser)."""
        from psycopg import sql

        with self.connect() as conn:
            self._install_base(conn)
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE IN ROLE {}").format(
                        sql.Identifier(login), sql.Identifier(ADMIN_GROUP)
                    )
                )
            if password is not None:
                verifier = conn.pgconn.encrypt_password(password.encode(), login.encode(), b"scram-sha-256")
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(login), sql.Literal(verifier.decode())))

    def _install_base(self, conn: Any) -> None:
        """What a new Azure server has before its admin exists; each part only when missing (a copy has them all)."""
        from psycopg import sql

        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ADMIN_GROUP,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ADMIN_GROUP)))
            # Azure's postgres database belongs to azure_pg_admin, so the admin may use its public schema.
            conn.execute(sql.SQL("ALTER DATABASE postgres OWNER TO {}").format(sql.Identifier(ADMIN_GROUP)))
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'azure_sandbox'").fetchone():
            for database in ("template1", "postgres"):
                with self.connect(database, password=conn.info.password) as inner:
                    inner.execute(EXTENSION_GATE)
        for database in AZURE_DATABASES:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

    def set_extensions(self, value: str) -> None:
        """azure.extensions for the cluster: written beside postgresql.conf, then a reload."""
        quoted = value.replace("'", "''")
        _write(self.data / PARAMETERS_FILE, f"azure.extensions = '{quoted}'\n", _run_as())
        with self.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")
        for _ in range(50):  # the postmaster rereads its files a moment later; new sessions then see it
            with self.connect() as conn:
                if conn.execute("SELECT current_setting('azure.extensions', true)").fetchone()[0] == value:
                    return
            time.sleep(0.02)


# ---- the template every new cluster is a copy of ------------------------------------------------
TEMPLATE_ROOT = "pg-template"
TEMPLATE_DONE = "complete"  # written last, before the rename: the recipe's digest
SCRATCH_PREFIX = "deploykit-pg-template-"  # the template is made in <tmp>/<prefix><pid>-*/, then copied in


def cache_dir() -> Path:
    """The machine-wide cache: $DEPLOYKIT_CACHE_DIR, else $XDG_CACHE_HOME/deploykit, else ~/.cache/deploykit."""
    if explicit := os.environ.get("DEPLOYKIT_CACHE_DIR"):
        return Path(explicit).absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores a relative value
    return base / "deploykit"


@cache
def _recipe() -> str:
    """What a template is made of: one made by other code (other initdb options, another gate) is made anew."""
    parts = [*INITDB_ARGS, EXTENSION_GATE, ADMIN_GROUP, *AZURE_DATABASES, HBA, CONF_INCLUDES]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _copy_tree(source: Path, target: Path) -> None:
    """`cp -a`: owners and modes kept (the PostgreSQL user's files when we are root); a clone where the file system can."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(target)], check=True, capture_output=True, timeout=120)


class PgTemplate:
    """The stopped cluster new clusters are copies of, one per binary version: `<cache>/pg-template/<major.minor>/`.

    `data/` (PGDATA after initdb and what every Azure server has before its admin exists, stopped
    with a fast shutdown: a copy needs no crash recovery), `superuser` (the template's password,
    0600: each copy replaces it on its first start), `complete` (the recipe's digest, written last).
    It is made under an exclusive flock on `<major.minor>.lock` into `.<major.minor>.building-*` and
    renamed into place, so a folder without `complete` (or with another recipe's) is never copied,
    only made anew. Copies hold the flock shared: a rebuild never removes a template being copied.
    """

    def __init__(self, cache: Path) -> None:
        version = ".".join(binary_version())
        self.root = cache / TEMPLATE_ROOT
        self.home = self.root / version
        self.data = self.home / "data"
        self.lock = self.root / f"{version}.lock"

    def complete(self) -> bool:
        """Renamed into place by a build of this user with this code's recipe: only then is it copied."""
        try:
            st = self.home.lstat()  # a folder of ours, not a link or another user's planted one
            return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and (self.home / TEMPLATE_DONE).read_text() == _recipe()
        except OSError:
            return False

    @classmethod
    @contextmanager
    def held(cls, user: str | None) -> Iterator[PgTemplate | None]:
        """The complete template (made first if needed), unchanged during the block; None when it cannot be had.

        None (the caller runs initdb) when the cache folder cannot be written or the template
        cannot be made: the sandbox works without it, only slower.
        """
        import psycopg

        template = cls(cache_dir())
        try:
            template.root.mkdir(parents=True, exist_ok=True)
            fd: int | None = os.open(template.lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            fd = None
        if fd is None:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not template.complete():
                fcntl.flock(fd, fcntl.LOCK_UN)
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not template.complete():  # nobody made it while we waited
                    with suppress(OSError, subprocess.SubprocessError, ArmError, psycopg.Error):
                        template._build(user)
                fcntl.flock(fd, fcntl.LOCK_UN)
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield template if template.complete() else None
        finally:
            os.close(fd)

    def _build(self, user: str | None) -> None:
        """Make the template (under the exclusive flock) where the PostgreSQL user can reach it, then copy it in.

        The cache may be in a home folder the PostgreSQL user cannot pass through (root's is 0700),
        so the cluster is made in a scratch folder under the system's temporary folder, stopped,
        moved (copied across file systems) into a temporary sibling of the template with its
        password and `complete`, and that sibling renamed into place.
        """
        self._sweep()
        sweep_scratch()
        scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        cluster = Cluster(scratch / "cluster")
        building = self.root / f".{self.home.name}.building-{os.getpid()}-{secrets.token_hex(4)}"
        old = self.root / f".{self.home.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        fd = None
        try:
            fd = os.open(scratch / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while building: a sweep leaves this scratch alone
            cluster.home.mkdir()
            cluster._reachable_home()
            cluster._fresh(user)
            cluster._start(user)
            with cluster.connect() as conn:
                cluster._install_base(conn)
            cluster._pg("pg_ctl", ["-w", "-t", "60", "-s", "-m", "fast", "stop"], user)
            for name in ("log", "sandbox.conf", "postmaster.opts"):  # the scratch cluster's, not a copy's
                (cluster.data / name).unlink(missing_ok=True)
            building.mkdir(mode=0o700)
            try:
                cluster.data.rename(building / "data")  # the same file system: no copy
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_tree(cluster.data, building / "data")
            _write(building / "superuser", (cluster.home / "superuser").read_text(), None)
            (building / TEMPLATE_DONE).write_text(_recipe())
            if self.home.exists():  # half-made or of another recipe: never copied, replaced
                self.home.rename(old)
            building.rename(self.home)
        finally:
            cluster._kill_postmaster()  # a build that failed with it running
            for path in (scratch, cluster.socket_dir, building, old):
                shutil.rmtree(path, ignore_errors=True)
            if fd is not None:
                os.close(fd)

    def _sweep(self) -> None:
        """Remove the temporary siblings killed builds left (under the exclusive flock: nobody else builds here)."""
        for pattern in (f".{self.home.name}.building-*", f".{self.home.name}.old-*"):
            for leftover in self.root.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)


def warm_template() -> bool:
    """Make the machine's template now if it is missing (a benchmark's first server should not
    pay for it); False when it cannot be had (clusters are then made with initdb)."""
    with PgTemplate.held(_run_as()) as template:
        return template is not None


def _exists(pid: int) -> bool:
    """A process that has not exited (a zombie waiting for its parent has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def sweep_scratch() -> None:
    """Stop and remove scratch templates whose builder was killed: its process is gone, nobody holds its flock."""
    for scratch in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = scratch.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or _exists(int(pid)):
            continue  # its builder may still be at work (between making the folder and locking it)
        try:
            if locks.held(scratch / "lock"):  # no lock file: killed before it locked, nothing started
                continue  # still held (a pid reused by another builder's child is not ours to judge)
        except OSError:
            continue  # cannot tell: not ours to judge either
        cluster = Cluster(scratch / "cluster")
        cluster._kill_postmaster()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(cluster.socket_dir, ignore_errors=True)


_REAPED = threading.Event()


def reap_orphans() -> None:
    """Stop (once per process) sandbox postmasters whose data folder was deleted under them.

    A test's temporary folder, or a state folder removed by hand, leaves its cluster running with
    nothing that could reach it again; only postmasters of this package's binaries, with a
    `postgres-servers/<name>/data` folder that no longer exists, are stopped.
    So are the scratch clusters of template builds that were killed (`sweep_scratch`).
    """
    if _REAPED.is_set():
        return
    _REAPED.set()
    binary = str(bin_dir() / "postgres")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if len(args) < 3 or args[0] != binary or args[1] != "-D":
            continue
        data = Path(args[2])
        if data.name == "data" and data.parent.parent.name == ROOT_NAME and not data.exists():
            with suppress(OSError):
                os.kill(int(proc.name), signal.SIGQUIT)  # immediate shutdown: there is nothing to flush to
            shutil.rmtree(Cluster(data.parent).socket_dir, ignore_errors=True)
    sweep_scratch()  # a template build killed after its scratch cluster started


def remove_all(state_dir: Path) -> None:
    """Stop and delete every cluster of this state folder (reset, remove_state)."""
    root = clusters_root(state_dir)
    if root.is_dir():
        for home in sorted(root.iterdir()):
            if home.is_dir():
                Cluster(home).destroy()


def stop_all(state_dir: Path) -> None:
    """Stop every cluster of this state folder and its TLS fronts, keeping the data."""
    close_fronts(state_dir)
    root = clusters_root(state_dir)
    if root.is_dir():
        for home in sorted(root.iterdir()):
            if (home / "data").is_dir():
                Cluster(home).stop()


# ---- the TLS front: PostgreSQL's SSLRequest, then the sandbox's certificate ---------------------
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
PROTOCOL_3 = 196608


def _no_tls(startup: bytes) -> bytes:
    """Azure's answer to a connection without TLS (require_secure_transport=on), naming user and database."""
    parts = startup.split(b"\0")
    params = {parts[i].decode(errors="replace"): parts[i + 1].decode(errors="replace") for i in range(0, len(parts) - 1, 2)}
    user = params.get("user", "")
    message = (
        f'no pg_hba.conf entry for host "127.0.0.1", user "{user}", database "{params.get("database", user)}", no encryption'
    )
    return _error_response(message)


class _Fronts:
    """One asyncio loop per process (a daemon thread) serving every open front."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.open: dict[Path, tuple[asyncio.AbstractServer, int]] = {}

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="sandbox-pg-tls", daemon=True).start()
        return self._loop

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop()).result(timeout=30)


_FRONTS = _Fronts()


def _error_response(message: str) -> bytes:
    fields = b"SFATAL\0VFATAL\0C28000\0M" + message.encode() + b"\0\0"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        with suppress(Exception):
            writer.close()


def _handler(cluster: Cluster, context: ssl.SSLContext) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if code == GSSENC_REQUEST:  # libpq may ask for GSS encryption first: no
                writer.write(b"N")
                length, code = struct.unpack("!ii", await reader.readexactly(8))
            if code != SSL_REQUEST:
                startup = await reader.readexactly(length - 8) if code == PROTOCOL_3 and 8 < length < 10000 else b""
                writer.write(_no_tls(startup))
                await writer.drain()
                writer.close()
                return
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(context)
            up_reader, up_writer = await asyncio.open_unix_connection(str(cluster.socket_dir / f".s.PGSQL.{SOCKET_PORT}"))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, struct.error):
            with suppress(Exception):
                writer.close()
            return
        await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))

    return handle


def open_front(cluster: Cluster, tls_dir: Path) -> int:
    """This process's TLS front for the cluster (opened once; the last port again when free)."""
    with _FRONTS._lock:
        known = _FRONTS.open.get(cluster.home)
        if known is not None:
            return known[1]
        cert, key = ensure_certificate(tls_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        port_file = cluster.home / "port"
        try:
            preferred = int(port_file.read_text())
        except (OSError, ValueError):
            preferred = 0
        server = None
        for port in dict.fromkeys((preferred, 0)):
            try:
                server = _FRONTS.run(asyncio.start_server(_handler(cluster, context), "127.0.0.1", port))
                break
            except OSError:
                continue
        if server is None:
            raise ArmError(500, "InternalServerError", "no free TCP port on 127.0.0.1 for the sandbox PostgreSQL")
        port = int(server.sockets[0].getsockname()[1])
        with suppress(OSError):
            port_file.write_text(str(port))
        _FRONTS.open[cluster.home] = (server, port)
        return port


def front_port(home: Path) -> int | None:
    with _FRONTS._lock:
        known = _FRONTS.open.get(home.absolute())
        return known[1] if known else None


def close_front(home: Path) -> None:
    with _FRONTS._lock:
        known = _FRONTS.open.pop(home.absolute(), None)
    if known is not None:
        server = known[0]

        async def _close() -> None:
            server.close()

        _FRONTS.run(_close())


def close_fronts(state_dir: Path) -> None:
    """Close this process's fronts for the clusters of one state folder (its sandbox stops)."""
    root = clusters_root(state_dir).absolute()
    with _FRONTS._lock:
        homes = [home for home in _FRONTS.open if home.parent == root]
    for home in homes:
        close_front(home)
