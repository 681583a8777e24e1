"""The sandbox's ARM state: resources, soft-deleted vaults, secrets, operations. Knows no HTTP.

Methods are named after the API's verbs; failures raise ArmError, which the HTTP front turns
into ARM error bodies in one place. What differs between resource types comes from
`providers.spec_for`; nothing here names a type.

State is shared by threads (one lock) and by processes (each CLI run starts its own in-process
sandbox on the same folder): see SandboxState.

A long-running type's backing work (a PostgreSQL server's initdb, start and admin login:
armtype.BackingHook) runs after the PUT's transaction, in a background thread: the PUT answers
at once, no other write waits for it, and the operation stays InProgress until both its time
has come and the work is done, as Azure's creation is the operation's duration. The work's
ArmError ends the operation Failed with its code and message. While it runs this process holds
an flock on `backing/<operation>.lock` beside the state; an operation whose work nobody holds
any more (its process was killed) ends Failed (InternalServerError) when next settled.
"""

from __future__ import annotations

import fcntl
import json
import marshal
import os
import secrets as pysecrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from deploykit import locks
from deploykit.errors import UserError
from deploykit.paths import display
from deploykit.sandbox import pgcluster, pgtypes, providers, rbac, vaultsecrets
from deploykit.sandbox.armtype import PRIVATE, BackingWork
from deploykit.sandbox.ids import ArmError, ParsedId, parse_id


def json_copy(value: Any) -> Any:
    """A deep copy of state data (JSON: dicts, lists, strings, numbers), made in C: copy.deepcopy
    of every record a read returns cost more than answering the read."""
    return marshal.loads(marshal.dumps(value))  # noqa: S302 - bytes this line made from our own data


__all__ = ["ArmError", "ParsedId", "SandboxState", "parse_id", "remove_state"]

STATE_VERSION = 1
SECTIONS = ("resources", "deleted_vaults", "secrets", "operations")
LOCK_NAME = "state.lock"  # beside the state file; never removed, so every process locks the same file
_MISSING = ("missing",)  # the identity of "no state file": the state is empty
# state.json is a snapshot (one JSON object on the first line) followed by a log of changes,
# one line per write transaction. The log is folded into a new snapshot once it outgrows both
# this and the snapshot itself, so a write costs its own change, amortised.
COMPACT_MIN_BYTES = 256 * 1024
# Finished long-running operations are kept this long for late polls, and at most this many.
OPERATION_TTL_SECONDS = 600.0
MAX_FINISHED_OPERATIONS = 1000
# Backing work (see the module docstring): its locks live in this folder beside the state. While
# it runs after the operation's own time, polls are told to come back after this long.
BACKING_DIR = "backing"
BACKING_POLL_SECONDS = 0.2
# How long close() (the sandbox stopping) waits for backing work still running: initdb and a
# start are bounded by pgcluster's own timeouts (60 s and 30 s).
BACKING_CLOSE_SECONDS = 180.0
STOPPED_WHILE_PREPARING = (
    "The sandbox stopped while preparing '{name}' (its process ended before the work was done); send the PUT again."
)


def new_etag() -> str:
    """An opaque, quoted entity tag for one stored version (providers.ETAG_NOTE: not Azure-verified)."""
    return f'"{pysecrets.token_hex(16)}"'


def _if_match_holds(if_match: str, record: dict[str, Any] | None) -> bool:
    """RFC 9110 If-Match: `*` matches any existing resource; otherwise one of the listed strong tags must be current."""
    if record is None:
        return False
    wanted = [tag.strip() for tag in if_match.split(",") if tag.strip()]
    current = record["body"].get("etag")
    return "*" in wanted or (isinstance(current, str) and current in wanted)


def _refuse_view(parsed: ParsedId, operation: str) -> None:
    """A type kept elsewhere (ArmType.view) is written only where it is kept.

    ARM has no DELETE for a vault's secret (Secrets: CreateOrUpdate, Update, Get, List); the
    answer's code and text are the generic ones for a method a route lacks (UNVERIFIED for
    Key Vault). The sandbox's own drift and fixture helpers name the data plane instead.
    """
    if providers.spec_for(parsed.type).view is None:
        return
    if operation == "DELETE":
        raise ArmError(405, "MethodNotAllowed", "The requested resource does not support http method 'DELETE'.")
    raise ArmError(400, "BadRequest", f"{parsed.type} is kept in its parent's data plane: {operation} it there, not in ARM.")


def _check_if_match(spec: providers.ArmType, if_match: str | None, record: dict[str, Any] | None) -> None:
    """Refuse a conditional write whose If-Match does not hold (types with etags only; others ignore it)."""
    if if_match is None or not spec.etag or _if_match_holds(if_match, record):
        return
    raise ArmError(412, "PreconditionFailed", "The condition specified using HTTP conditional header(s) is not met.")


def _empty() -> dict[str, Any]:
    """A state with nothing in it (no file yet, or reset)."""
    return {"version": STATE_VERSION, **{section: {} for section in SECTIONS}}


def _invalid(path: Path, reason: str) -> UserError:
    """The one-line error for a state file that cannot be used, naming the file and how to recover."""
    return UserError(f"{display(path)}: not a valid sandbox state ({reason}); run `invoke sandbox.reset`")


def _snapshot_problem(data: Any) -> str | None:
    """Why a decoded snapshot is not a state of this version, or None when it is one."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if data.get("version") != STATE_VERSION:
        return f"version {repr(data.get('version'))[:40]}, expected {STATE_VERSION}"
    bad = [section for section in SECTIONS if not isinstance(data.get(section), dict)]
    return f"'{bad[0]}' is missing or not an object" if bad else None


def _apply(data: dict[str, Any], line: bytes) -> None:
    """Apply one logged change ({"put": {section: {key: entry}}, "drop": {section: [key]}}); ValueError when malformed."""
    change = json.loads(line)
    if not isinstance(change, dict) or not set(change) <= {"put", "drop"}:
        raise ValueError("not a change")
    puts, drops = change.get("put", {}), change.get("drop", {})
    if not isinstance(puts, dict) or not isinstance(drops, dict) or not (set(puts) | set(drops)) <= set(SECTIONS):
        raise ValueError("not a change")
    for section, entries in puts.items():
        if not isinstance(entries, dict):
            raise ValueError("not a change")
        data[section].update(entries)
    for section, keys in drops.items():
        if not isinstance(keys, list):
            raise ValueError("not a change")
        for key in keys:
            data[section].pop(key, None)


def _replay(data: dict[str, Any], raw: bytes, path: Path, first_line: int) -> int:
    """Apply every complete line of a log tail; returns how many bytes that was.

    A last line without its newline is not applied: a writer is still writing it, or one was
    killed while writing it (before it answered, so nothing acknowledged is in it).
    """
    position = 0
    while (newline := raw.find(b"\n", position)) >= 0:
        line = raw[position:newline]
        if line.strip():
            try:
                _apply(data, line)
            except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                number = first_line + raw.count(b"\n", 0, position)
                raise _invalid(path, f"line {number} is not a logged change: {str(exc)[:80]}") from None
        position = newline + 1
    return position


class _Loaded:
    """A whole state file, parsed: the data, where its log starts and how much of it was applied."""

    def __init__(self, raw: bytes, path: Path) -> None:
        """Parse the snapshot (the first JSON value) and replay the log after it; UserError when invalid."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid(path, "not UTF-8") from None
        start = len(text) - len(text.lstrip())
        try:
            data, end = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise _invalid(path, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        problem = _snapshot_problem(data)
        if problem is not None:
            raise _invalid(path, problem)
        snapshot = len(text[:end].encode("utf-8"))
        newline = raw.find(b"\n", snapshot)
        if raw[snapshot : newline if newline >= 0 else len(raw)].strip():
            raise _invalid(path, f"not JSON: Extra data at line {text.count(chr(10), 0, end) + 1}")
        self.data: dict[str, Any] = data
        self.snapshot_bytes = snapshot if newline < 0 else newline + 1
        # A file without a newline after its snapshot (written by hand, or by an older sandbox)
        # cannot take an appended change: the next write rewrites it.
        self.line_start = newline >= 0
        first_line = text.count("\n", 0, end) + 2
        self.consumed = self.snapshot_bytes + (_replay(data, raw[self.snapshot_bytes :], path, first_line) if newline >= 0 else 0)


def _parse(raw: bytes, path: Path) -> dict[str, Any]:
    """The state in a file's bytes (snapshot plus log), or a one-line UserError naming the file and how to recover."""
    return _Loaded(raw, path).data


def _write_all(fd: int, payload: bytes) -> None:
    """os.write until every byte is written (a short write is legal for regular files too)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


@contextmanager
def _flocked(lock_path: Path) -> Iterator[None]:
    """An exclusive flock on lock_path, held for the block (released when the descriptor closes)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_state(directory: Path) -> int | None:
    """Delete the state and journal under the state lock, never trusting their content.

    The real services behind resources (PostgreSQL clusters) are stopped and deleted too.
    Returns how many resources the state held: 0 when there was none, None when it was unreadable.
    """
    if not directory.is_dir():
        return 0
    pgcluster.remove_all(directory)
    path = directory / "state.json"
    with ExitStack() as stack:
        with suppress(OSError):  # a lock file we cannot open must not stop a reset
            stack.enter_context(_flocked(directory / LOCK_NAME))
        try:
            count: int | None = len(_parse(path.read_bytes(), path)["resources"])
        except FileNotFoundError:
            count = 0
        except (OSError, UserError):
            count = None
        for name in ("state.json", "state.json.tmp", "journal.jsonl"):
            (directory / name).unlink(missing_ok=True)
    return count


class SandboxState:
    """The state, thread-safe and safe to share between processes through one file.

    `state.json` holds a snapshot (the whole state as one JSON object, on the first line) and
    after it a log: one JSON line per write transaction, naming the entries it put and dropped
    ({"put": {section: {key: entry}}, "drop": {section: [key]}}). Every change is a
    transaction: the thread lock, then an exclusive `fcntl.flock` on `state.lock` beside the
    file; the tail other processes appended since this one last looked is replayed (or the whole
    file loaded, when it was replaced); the change; then its line appended with one write
    (O_APPEND) before the answer, so an acknowledged change is in the page cache, as a rename
    was before. Once the log outgrows both COMPACT_MIN_BYTES and the snapshot, the transaction
    writes a new snapshot instead (temp file + os.replace, mode 0600: it holds secret values),
    so a write costs its own change, amortised, not the whole state.

    A file is only ever appended to or replaced, never changed in place. Readers take no flock:
    they apply complete lines only (a line being written, or one a killed writer left without
    its newline, is not applied; the next writer then rewrites the file rather than append
    after it). "Changed" is decided without reading: the version this process holds is
    identified by (device, inode, size, mtime); the same inode grown means new lines, another
    inode a new file. The file of that version is kept open, so its inode cannot be reused by a
    newer file while we compare against it.

    What a transaction changed is found by comparing each section's entries before and after
    by identity (hooks add and remove entries), plus the entries changed in place, which the
    code that changes them names (`_touch`).
    """

    def __init__(self, path: Path | None) -> None:
        """A state kept in `path` (shared with other processes), or in memory only when None."""
        self._path = path
        self._lock_path = path.with_name(LOCK_NAME) if path is not None else None
        self._lock = threading.RLock()
        self._data = _empty()
        self._held: IO[bytes] | None = None  # the file of the version in self._data
        self._held_id: tuple[Any, ...] | None = None  # None: unknown, reload before use
        self._snapshot_bytes = 0  # where the held file's log starts
        self._consumed = 0  # bytes of the held file applied to self._data (whole lines)
        self._seen_size = 0  # its size when last looked at (more than _consumed: a torn last line)
        self._line_start = False  # whether a change may be appended at _consumed
        self._depth = 0  # nesting of write transactions in the thread that holds self._lock
        self._dirty = False
        self._rewrite = False  # the transaction replaced everything (reset): write a snapshot
        self._before: dict[str, dict[str, Any]] = {}  # each section's entries when the transaction began
        self._touched: set[tuple[str, str]] = set()  # (section, key) changed in place by the transaction
        self._scratch: Path | None = None  # an in-memory state's folder for real services
        # Backing work this instance runs: operation id -> its lock's descriptor (None in memory).
        self._backing: dict[str, int | None] = {}
        # The last work started per resource: the next one for that resource waits for it, so
        # two PUTs' works (two passwords) take effect in the order the PUTs were answered.
        self._last_work: dict[str, threading.Thread] = {}
        self._backing_done = threading.Condition()  # guards both; notified as each work ends
        if path is not None:
            with self._lock:
                self._refresh()

    # ---- persistence -------------------------------------------------------------------
    @staticmethod
    def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
        """What tells one version of the file from another without reading it."""
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _hold(self, handle: IO[bytes] | None, identity: tuple[Any, ...] | None) -> None:
        """Keep `handle` open as the file of the version in memory (closing the previous one)."""
        if self._held is not None:
            self._held.close()
        self._held, self._held_id = handle, identity

    def _refresh(self) -> None:
        """Bring memory up to the file (caller holds self._lock).

        Nothing to do when it is the version in memory; the new lines when another process
        appended to it; a full load when it was replaced (a snapshot, a reset) or is unknown.
        """
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            if self._held_id != _MISSING:
                self._data = _empty()
                self._hold(None, _MISSING)
                self._snapshot_bytes = self._consumed = self._seen_size = 0
                self._line_start = False
            return
        current = self._identity(st)
        if current == self._held_id:
            return
        held = self._held_id
        if self._held is not None and held is not None and held[:2] == current[:2] and st.st_size >= self._consumed:
            self._read_tail(st)
        else:
            self._load()

    def _read_tail(self, st: os.stat_result) -> None:
        """Apply the lines appended to the held file since this process last read it."""
        assert self._held is not None and self._path is not None
        raw = os.pread(self._held.fileno(), st.st_size - self._consumed, self._consumed)
        if raw.strip() and not self._line_start:  # a file that cannot take lines got some: read it all
            self._load()
            return
        try:
            self._consumed += _replay(self._data, raw, self._path, 0)
        except UserError:
            self._hold(None, None)  # partly applied; a full load names the bad line (and raises)
            self._load()
            return
        except BaseException:
            self._hold(None, None)  # partly applied: reload before the next use
            raise
        self._seen_size = st.st_size
        self._held_id = self._identity(st)

    def _load(self) -> None:
        """Read the whole file: its snapshot and every complete line of its log."""
        assert self._path is not None
        try:
            handle = open(self._path, "rb")  # noqa: SIM115 - kept open as the held version
        except FileNotFoundError:
            self._hold(None, None)
            self._refresh()
            return
        try:
            st = os.fstat(handle.fileno())  # before reading: the bytes up to this size are final
            loaded = _Loaded(handle.read(st.st_size), self._path)
        except BaseException:
            handle.close()
            raise
        self._data = loaded.data
        self._hold(handle, self._identity(st))
        self._snapshot_bytes, self._consumed, self._seen_size = loaded.snapshot_bytes, loaded.consumed, st.st_size
        self._line_start = loaded.line_start

    def _begin(self) -> None:
        """Remember each section's entries, to find what the transaction changes (see _diff)."""
        self._before = {section: dict(self._data[section]) for section in SECTIONS}
        self._touched = set()

    def _diff(self) -> dict[str, Any]:
        """The transaction's change as a log line's content: entries added, replaced or touched; entries removed."""
        puts: dict[str, dict[str, Any]] = {}
        drops: dict[str, list[str]] = {}
        for section in SECTIONS:
            before, after = self._before.get(section, {}), self._data[section]
            changed = {key: value for key, value in after.items() if before.get(key) is not value}
            changed.update((key, after[key]) for touched, key in self._touched if touched == section and key in after)
            gone = [key for key in before if key not in after]
            if changed:
                puts[section] = changed
            if gone:
                drops[section] = gone
        change: dict[str, Any] = {}
        if puts:
            change["put"] = puts
        if drops:
            change["drop"] = drops
        return change

    def _commit(self) -> None:
        """Persist the transaction: its line appended, or a new snapshot when the log is due for one."""
        change = self._diff()
        if not change and not self._rewrite:
            return
        line = json.dumps(change).encode("utf-8") + b"\n"
        log_bytes = self._consumed - self._snapshot_bytes + len(line)
        appendable = (
            not self._rewrite
            and self._held is not None
            and self._line_start
            and self._seen_size == self._consumed  # no torn line at the end to append after
            and log_bytes <= max(COMPACT_MIN_BYTES, self._snapshot_bytes)
        )
        if not (appendable and self._append(line)):
            self._save()

    def _append(self, line: bytes) -> bool:
        """Append one change to the held file; False (nothing written) when the path is no longer that file."""
        assert self._path is not None
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return False
        try:
            if self._identity(os.fstat(fd)) != self._held_id:  # cannot happen under the flock; never append blind
                return False
            _write_all(fd, line)
            identity = self._identity(os.fstat(fd))
        finally:
            os.close(fd)
        self._consumed += len(line)
        self._seen_size = self._consumed
        self._held_id = identity
        return True

    def _save(self) -> None:
        """Write the whole state as a new snapshot with an empty log (temp file + rename, mode 0600)."""
        assert self._path is not None
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        handle = os.fdopen(fd, "w+b")
        try:
            os.fchmod(fd, 0o600)
            payload = json.dumps(self._data).encode("utf-8") + b"\n"
            handle.write(payload)
            handle.flush()
            os.replace(tmp, self._path)
            identity = self._identity(os.fstat(fd))
        except BaseException:
            handle.close()
            raise
        self._hold(handle, identity)
        self._snapshot_bytes = self._consumed = self._seen_size = len(payload)
        self._line_start = True

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Up-to-date data for the block; operations whose time has come are settled first."""
        with self._lock:
            if self._path is not None and self._depth == 0:
                self._refresh()
            if self._due():
                with self._writing():
                    self._settle()
            yield

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A read-modify-write transaction; nested ones join the outermost."""
        with self._lock, ExitStack() as stack:
            outer = self._depth == 0
            persisted = outer and self._path is not None
            if persisted:
                assert self._path is not None and self._lock_path is not None
                self._path.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(_flocked(self._lock_path))
            self._depth += 1
            try:
                if persisted:
                    self._refresh()
                    self._begin()
                yield
                if persisted and self._dirty:
                    self._commit()
            except BaseException:
                if persisted:
                    self._hold(None, None)  # drop half-applied changes: reload before the next use
                raise
            finally:
                self._depth -= 1
                if outer:
                    self._dirty = self._rewrite = False
                    self._before, self._touched = {}, set()

    def close(self) -> None:
        """Let go of the state file this process holds open (the data stays usable; it reloads).

        Backing work still running is let finish first (at most BACKING_CLOSE_SECONDS), so a run
        that exits right after a PUT was accepted (`--no-wait`) leaves a complete resource. The
        TLS fronts this process opened for PostgreSQL servers close; the clusters keep running
        for the next process (an in-memory state's are deleted: nothing can find them).
        """
        self.wait_for_backing(BACKING_CLOSE_SECONDS)
        with self._lock:
            if self._path is not None:
                self._hold(None, None)
            home = self._path.parent if self._path is not None else self._scratch
            if home is not None:
                pgcluster.close_fronts(home)
            if self._scratch is not None:
                pgcluster.remove_all(self._scratch)
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    def stop_services(self) -> None:
        """Stop the real services behind resources (PostgreSQL clusters), keeping their data.

        For a test suite's teardown: the clusters otherwise outlive the sandbox, as they should
        between CLI runs. A later GET or PUT starts them again. Backing work finishes first.
        """
        self.wait_for_backing(BACKING_CLOSE_SECONDS)
        pgcluster.stop_all(self.home())

    def home(self) -> Path:
        """The sandbox's state folder, where real services keep their data (a scratch one in memory)."""
        if self._path is not None:
            return self._path.parent
        with self._lock:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="deploykit-sandbox-"))
            return self._scratch

    def _changed(self) -> None:
        """The transaction changed something: its entries are compared at the end (see _diff)."""
        self._dirty = True

    def _touch(self, section: str, key: str) -> None:
        """An entry was changed in place (the comparison by identity cannot see that): log it whole."""
        self._touched.add((section, key))
        self._dirty = True

    def reset(self) -> None:
        """Empty the state; the real services behind resources are stopped and deleted (after their backing work)."""
        self.wait_for_backing(BACKING_CLOSE_SECONDS)
        with self._writing():
            self._data = _empty()
            pgcluster.remove_all(self.home())
            self._rewrite = True
            self._changed()

    # ---- resources ---------------------------------------------------------------------
    def get_resource(self, rid: str) -> dict[str, Any]:
        """The stored record; for a child Azure always has (a server parameter), its implied one."""
        parsed = parse_id(rid)
        with self._reading():
            record = self._record(parsed)
            if record is None:
                spec = providers.spec_for(parsed.type)
                container = (parsed.container or "").lower()
                implied = spec.implied(parsed.name) if spec.implied and container in self._data["resources"] else None
                if implied is None:
                    self._raise_not_found(parsed)
                return {"id": parsed.id, "type": spec.name, "body": implied}
            return json_copy(record)

    def _record(self, parsed: ParsedId) -> dict[str, Any] | None:
        """The stored record, or for a type kept elsewhere (ArmType.view) the view's; None when absent."""
        spec = providers.spec_for(parsed.type)
        if spec.view is None:
            return self._data["resources"].get(parsed.key)
        parent = self._data["resources"].get((parsed.container or "").lower())
        found = spec.view(self._data, parent, parsed.name) if parent is not None else {}
        return next((self._viewed(spec, parent, name, body) for name, body in found.items()), None)

    @staticmethod
    def _viewed(spec: providers.ArmType, parent: dict[str, Any], name: str, body: dict[str, Any]) -> dict[str, Any]:
        return json_copy({"id": f"{parent['id']}/{spec.name.rsplit('/', 1)[-1]}/{name}", "type": spec.name, "body": body})

    def put_resource(
        self,
        rid: str,
        request: dict[str, Any],
        lro_seconds: float | Callable[[str, bool], float] = 0.0,
        failure: dict[str, str] | None = None,
        if_match: str | None = None,
    ) -> tuple[bool, dict[str, Any], str | None]:
        """Create or replace, in one transaction; returns (answer 201?, stored record, operation id).

        For a type with etags, `if_match` (the If-Match header) is checked against the stored
        version inside this transaction, so of two clients that read the same version only the
        first write wins (412 PreconditionFailed for the other); the stored body gets a new etag.

        A long-running type gets an operation and stays Creating/Updating until it settles;
        any other type is Succeeded at once (if it has a provisioningState at all). A type
        backed by a real service (a PostgreSQL server) gets it started and configured by the
        hook's backing work: for a long-running type after this transaction, in the background,
        its operation InProgress until the work is done (see the module docstring); for any
        other type before the answer. The first value is False for a creation the provider
        answers with 200 (keyValues).
        `lro_seconds` may depend on the type and on whether it is a creation (type name, created)
        -> seconds: a VPN gateway takes its own time (network.operation_seconds).
        """
        parsed = parse_id(rid)
        spec = providers.spec_for(parsed.type)
        background: list[tuple[str, BackingWork]] = []  # the work to start once the transaction is committed
        try:
            answer = self._put(parsed, spec, request, lro_seconds, failure, if_match, background)
        except BaseException:
            for op_id, _ in background:
                self._release_backing(op_id)
            raise
        for op_id, work in background:
            self._start_backing(op_id, parsed.key, work)
        return answer

    def _put(
        self,
        parsed: ParsedId,
        spec: providers.ArmType,
        request: dict[str, Any],
        lro_seconds: float | Callable[[str, bool], float],
        failure: dict[str, str] | None,
        if_match: str | None,
        background: list[tuple[str, BackingWork]],
    ) -> tuple[bool, dict[str, Any], str | None]:
        """put_resource's transaction; a long-running type's backing work is added to `background`, not run."""
        with self._writing():
            self._settle()
            self._require_container(parsed)
            self._check_locks(parsed, "write", readonly_only=True)
            resources = self._data["resources"]
            existing = self._record(parsed)
            _check_if_match(spec, if_match, existing)
            replacement = spec.before_put(self._data, parsed, existing, request) if spec.before_put else None
            if replacement is not None:
                body = replacement
            else:
                self._check_global_name(parsed, spec, existing)
                body = providers.stored_body(spec, existing["body"] if existing else None, request)
            created = existing is None
            if spec.etag:
                body["etag"] = new_etag()
            work = spec.after_put(self.home(), parsed, body, request, created) if spec.after_put is not None else None
            if work is not None and not spec.long_running:
                work()  # nothing to wait for: the answer comes after the work, as before
            record = {"id": existing["id"] if existing else parsed.id, "type": spec.name, "body": body}
            if spec.view is None:  # a view's before_put wrote where it is kept
                resources[parsed.key] = record
            op_id = None
            if spec.long_running:
                seconds = lro_seconds(spec.name, created) if callable(lro_seconds) else lro_seconds
                op_id = self._start_operation(parsed.key, seconds, failure)
                if work is not None:
                    self._claim_backing(op_id)
                    background.append((op_id, work))
                self._set_provisioning_state(record, "Creating" if created else "Updating")
            else:
                self._set_provisioning_state(record, "Succeeded")
            self._changed()
            return created and spec.created_status == 201, json_copy(record), op_id

    def run_action(self, rid: str, action: str, request: dict[str, Any] | None) -> Any:
        """POST {id}/{action} (listKeys, ...): the type's action hook, in one write transaction."""
        parsed = parse_id(rid)
        with self._writing():
            self._settle()
            record = self._data["resources"].get(parsed.key)
            if record is None:
                self._raise_not_found(parsed)
            hook = providers.spec_for(record["type"]).actions.get(action.lower())
            if hook is None:
                raise ArmError(
                    400, "InvalidRequestContent", f"The action '{action}' is not supported on resource type '{record['type']}'."
                )
            before = json.dumps(record)
            response = hook(self._data, record, request)
            if json.dumps(record) != before:  # actions change their own record in place, or nothing (listKeys)
                self._touch("resources", parsed.key)
            self._changed()
            return json_copy(response)

    def delete_resource(self, rid: str, if_match: str | None = None) -> None:
        """Delete a resource and everything below it; If-Match as for put_resource (412 when it does not hold)."""
        parsed = parse_id(rid)
        _refuse_view(parsed, "DELETE")
        with self._writing():
            self._settle()
            _check_if_match(providers.spec_for(parsed.type), if_match, self._data["resources"].get(parsed.key))
            if parsed.key not in self._data["resources"]:
                self._raise_not_found(parsed)
            self._check_locks(parsed, "delete")
            doomed = [k for k in self._data["resources"] if k == parsed.key or k.startswith(parsed.key + "/")]
            for key in doomed:
                record = self._data["resources"].pop(key)
                hook = providers.spec_for(record["type"]).after_delete
                if hook is not None:
                    hook(self._data, record)
            self._changed()

    @staticmethod
    def _set_provisioning_state(record: dict[str, Any], state: str) -> None:
        if providers.spec_for(record["type"]).provisioning_state:
            body = record["body"]
            if not isinstance(body.get("properties"), dict):
                body["properties"] = {}
            body["properties"]["provisioningState"] = state

    def mutate(self, rid: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change stored fields directly (drift, as if someone used the portal): dotted path -> value."""
        _refuse_view(parse_id(rid), "mutate")
        with self._writing():
            record = self._data["resources"].get(rid.lower())
            if record is None:
                self._raise_not_found(parse_id(rid))
            for dotted, value in changes.items():
                node = record["body"]
                *parents, leaf = dotted.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
            if providers.spec_for(record["type"]).etag and "etag" not in changes:
                record["body"]["etag"] = new_etag()  # a change made elsewhere is a new version
            self._touch("resources", rid.lower())
            return json_copy(record)

    def seed(self, rid: str, body: dict[str, Any]) -> None:
        """Store a body as-is (test fixtures such as an existing gateway); no checks, no defaults."""
        parsed = parse_id(rid)
        _refuse_view(parsed, "seed")
        with self._writing():
            spec = providers.spec_for(parsed.type)
            stored = json_copy(body)
            if spec.etag:
                stored.setdefault("etag", new_etag())
            self._data["resources"][parsed.key] = {"id": parsed.id, "type": spec.name, "body": stored}
            self._changed()

    def list_children(self, parent_id: str, child_type: str) -> list[dict[str, Any]]:
        """The records directly under a resource of one child type (GET {parent}/{childType}), oldest first.

        404 as for a GET of the parent when it (or its group) does not exist.
        """
        parent = parse_id(parent_id)
        prefix = f"{parent.key}/{child_type.lower()}/"
        with self._reading():
            record = self._data["resources"].get(parent.key)
            if record is None:
                self._raise_not_found(parent)
            child = providers.spec_for(f"{record['type']}/{child_type}")
            if child.view is not None:
                return [self._viewed(child, record, name, body) for name, body in child.view(self._data, record, None).items()]
            return [
                json_copy(record)
                for key, record in self._data["resources"].items()
                if key.startswith(prefix) and "/" not in key[len(prefix) :]
            ]

    def list_group_resources(self, group_id: str) -> list[dict[str, Any]]:
        """Resources - List By Resource Group: the group's top-level resources (no children, no extensions).

        404 ResourceGroupNotFound when the group does not exist.
        """
        group = parse_id(group_id)
        prefix = f"{group.key}/providers/"
        with self._reading():
            if group.key not in self._data["resources"]:
                self._raise_not_found(group)
            found = []
            for key, record in self._data["resources"].items():
                rest = key[len(prefix) :].split("/") if key.startswith(prefix) else []
                if len(rest) == 3:  # <namespace>/<type>/<name>: top level
                    found.append(json_copy(record))
            return found

    def list_resources(self) -> list[dict[str, Any]]:
        with self._reading():
            return [json_copy(r) for r in self._data["resources"].values()]

    def find_named(self, type_name: str, name: str) -> dict[str, Any] | None:
        """The record of a globally named resource by type and name (a registry's data plane finds it so), or None."""
        with self._reading():
            for record in self._data["resources"].values():
                if record["type"].lower() == type_name.lower() and record["id"].rsplit("/", 1)[-1].lower() == name.lower():
                    return json_copy(record)
            return None

    def update_private(self, rid: str, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Run `change` on a resource's sandbox-private data (PRIVATE: a registry's images) in one write transaction.

        Not a new version of the ARM resource: its etag and provisioningState stay (pushing an
        image does not change the registry). 404 as for a GET when the resource does not exist.
        """
        parsed = parse_id(rid)
        with self._writing():
            record = self._data["resources"].get(parsed.key)
            if record is None:
                self._raise_not_found(parsed)
            result = change(record["body"].setdefault(PRIVATE, {}))
            self._touch("resources", parsed.key)
            return json_copy(result)

    # ---- questions other parts of the sandbox ask ----------------------------------------
    def list_role_assignments(self, scope: str, principal_id: str | None = None, at_scope: bool = False) -> list[dict[str, Any]]:
        """GET {scope}/providers/Microsoft.Authorization/roleAssignments: the items of "value", as GET shapes them.

        Role Assignments - List For Scope: with `$filter=principalId eq '<id>'` (principal_id)
        the principal's assignments at, above or below the scope; with `atScope()` (at_scope)
        those at the scope or above it; both may be given. `rbac.parse_filter` turns a raw
        $filter into these two arguments.
        """
        with self._reading():
            found = rbac.list_assignments(self._data, scope, principal_id, at_scope)
            return [providers.present(r) for r in found]

    def principal_has_role(self, principal_id: str, scope_id: str, role_guids: Iterable[str]) -> bool:
        """Whether the principal holds one of these roles (definition GUIDs) at the scope or above it."""
        with self._reading():
            return rbac.has_role(self._data, principal_id, scope_id, role_guids)

    def postgres_endpoint(self, server_id: str) -> tuple[str, int]:
        """(host, port) of a flexible server's real PostgreSQL, started if needed (TLS; admin login and password)."""
        record = self.get_resource(server_id)
        found = pgtypes.endpoint(record["body"])
        if found is None:
            raise ArmError(404, "ResourceNotFound", f"The server '{server_id}' has no PostgreSQL behind it.")
        host, _, port = found.rpartition(":")
        return host, int(port)

    # ---- checks ------------------------------------------------------------------------
    def _raise_not_found(self, parsed: ParsedId) -> None:
        if parsed.is_group:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parsed.name}' could not be found.")
        if parsed.group_key is not None and parsed.group_key not in self._data["resources"]:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parsed.resource_group}' could not be found.")
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{parsed.type}/{parsed.name}' under resource group '{parsed.resource_group}' was not found.",
        )

    def _require_container(self, parsed: ParsedId) -> None:
        if not parsed.is_group and parsed.group_key is not None and parsed.group_key not in self._data["resources"]:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parsed.resource_group}' could not be found.")
        if (
            parsed.container
            and parsed.container.lower() not in self._data["resources"]
            and self._record(parse_id(parsed.container)) is None  # a view's child (a vault's secret) is a scope too
        ):
            raise ArmError(
                404,
                "ParentResourceNotFound",
                f"Can not perform requested operation on nested resource. Parent resource '{parsed.container}' not found.",
            )

    def _check_locks(self, parsed: ParsedId, operation: str, readonly_only: bool = False) -> None:
        """Locks are inherited by everything below their scope (azure-facts.md 3.2)."""
        if providers.spec_for(parsed.type).lock:
            return
        for record in self._data["resources"].values():
            if not providers.spec_for(record["type"]).lock:
                continue
            level = record["body"].get("properties", {}).get("level", "")
            if readonly_only and level != "ReadOnly":
                continue
            scope = record["id"].lower().rsplit("/providers/", 1)[0]
            if parsed.key == scope or parsed.key.startswith(scope + "/"):
                raise ArmError(
                    409,
                    "ScopeLocked",
                    f"The scope '{parsed.id}' cannot perform {operation} operation because following scope(s) "
                    f"are locked: '{record['id'][: len(scope)]}'. Please remove the lock and try again.",
                )

    def _check_global_name(self, parsed: ParsedId, spec: providers.ArmType, existing: dict[str, Any] | None) -> None:
        """Some names are DNS labels, unique across all of Azure (the table's global_name)."""
        if existing is not None or not spec.global_name:
            return
        for record in self._data["resources"].values():
            if record["type"].lower() == spec.key and record["id"].rsplit("/", 1)[-1].lower() == parsed.name.lower():
                raise ArmError(409, "NameNotAvailable", f"The name '{parsed.name}' is already in use.")

    # ---- Key Vault: deleted vaults and the secrets data plane (azure-facts.md 4) -----------
    def get_deleted_vault(self, subscription: str, location: str, name: str) -> dict[str, Any]:
        """The shape of key-vault/getDeletedVault.json."""
        with self._reading():
            rec = self._data["deleted_vaults"].get(name.lower())
            if rec is None or rec["location"].lower().replace(" ", "") != location.lower():
                raise ArmError(404, "DeletedVaultNotFound", f"Deleted vault '{name}' not found in location '{location}'.")
            return {
                "id": f"/subscriptions/{subscription}/providers/Microsoft.KeyVault/locations/{location}"
                f"/deletedVaults/{rec['name']}",
                "name": rec["name"],
                "type": "Microsoft.KeyVault/deletedVaults",
                "properties": {
                    "vaultId": rec["vault_id"],
                    "location": rec["location"],
                    "deletionDate": rec["deletion_date"],
                    "scheduledPurgeDate": rec["purge_date"],
                    "tags": rec["tags"],
                    "purgeProtectionEnabled": rec["purge_protection"],
                },
            }

    def purge_deleted_vault(self, location: str, name: str) -> None:
        with self._writing():
            rec = self._data["deleted_vaults"].get(name.lower())
            if rec is None:
                raise ArmError(404, "DeletedVaultNotFound", f"Deleted vault '{name}' not found.")
            if rec["purge_protection"]:
                raise ArmError(
                    409,
                    "PurgeProtectionEnabled",
                    f"Vault '{name}' has purge protection enabled and cannot be purged before {rec['purge_date']}.",
                )
            del self._data["deleted_vaults"][name.lower()]
            self._data["secrets"].pop(name.lower(), None)
            self._changed()

    def vault_exists(self, name: str) -> bool:
        with self._reading():
            return any(
                providers.spec_for(r["type"]).serves_secrets and r["id"].rsplit("/", 1)[-1].lower() == name.lower()
                for r in self._data["resources"].values()
            )

    def vault_public_access(self, name: str) -> tuple[bool, str]:
        """(public network access enabled?, location) of a vault, for its data plane's network check."""
        with self._reading():
            for r in self._data["resources"].values():
                if providers.spec_for(r["type"]).serves_secrets and r["id"].rsplit("/", 1)[-1].lower() == name.lower():
                    props = r["body"].get("properties") if isinstance(r["body"].get("properties"), dict) else {}
                    enabled = str(props.get("publicNetworkAccess", "Enabled")).lower() != "disabled"
                    return enabled, str(r["body"].get("location", ""))
            return True, ""

    def set_secret(
        self, vault: str, name: str, value: str, content_type: str | None, tags: dict | None, enabled: bool = True
    ) -> dict[str, Any]:
        with self._writing():
            versions = self._data["secrets"].setdefault(vault.lower(), {}).setdefault(name.lower(), [])
            entry = vaultsecrets.new_version(versions[0]["name"] if versions else name, value, content_type, tags, enabled)
            versions.append(entry)
            self._touch("secrets", vault.lower())
            return json_copy(entry)

    def get_secret(self, vault: str, name: str, version: str | None) -> dict[str, Any]:
        with self._reading():
            versions = self._data["secrets"].get(vault.lower(), {}).get(name.lower(), [])
            chosen = [v for v in versions if not version or v["version"] == version]
            if not chosen:
                raise ArmError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
            return json_copy(chosen[-1])

    def list_secrets(self, vault: str) -> list[dict[str, Any]]:
        with self._reading():
            return [json_copy(v[-1]) for v in self._data["secrets"].get(vault.lower(), {}).values() if v]

    # ---- long-running operations -----------------------------------------------------------
    def _start_operation(self, key: str, seconds: float, failure: dict[str, str] | None) -> str:
        """A new long-running operation on a resource (the table's finished ones pruned first)."""
        now = time.time()
        self._prune_operations(now)
        op_id = pysecrets.token_hex(8)
        self._data["operations"][op_id] = {
            "resource": key,
            "ready_at": now + max(0.0, seconds),
            "failure": failure,
            "status": "InProgress",
            "start": providers.now_iso(),
        }
        return op_id

    def _prune_operations(self, now: float) -> None:
        """Forget finished operations: those over OPERATION_TTL_SECONDS old, and all but the newest MAX_FINISHED_OPERATIONS.

        A client polls an operation until it finishes, then stops; without pruning the table (and
        the cost of every settle and every snapshot) would grow with every long-running PUT ever made.
        """
        operations = self._data["operations"]
        finished = [
            (op.get("ended_at", op["ready_at"]), op_id) for op_id, op in operations.items() if op["status"] != "InProgress"
        ]
        cutoff = now - OPERATION_TTL_SECONDS
        expired = {op_id for ended, op_id in finished if ended < cutoff}
        kept = [(ended, op_id) for ended, op_id in finished if op_id not in expired]
        if len(kept) > MAX_FINISHED_OPERATIONS:
            expired.update(op_id for _, op_id in sorted(kept)[: len(kept) - MAX_FINISHED_OPERATIONS])
        for op_id in expired:
            del operations[op_id]

    def get_operation(self, op_id: str) -> dict[str, Any]:
        with self._reading():
            op = self._data["operations"].get(op_id)
            if op is None:
                raise ArmError(404, "OperationNotFound", f"Operation '{op_id}' was not found.")
            return json_copy(op)

    def operation_remaining(self, op_id: str) -> float:
        """Seconds until the operation may end (a poll's Retry-After): at least BACKING_POLL_SECONDS while its work runs."""
        with self._reading():
            op = self._data["operations"].get(op_id)
            if op is None:
                return 0.0
            remaining = max(0.0, op["ready_at"] - time.time())
            if op["status"] == "InProgress" and op.get("backing"):
                remaining = max(remaining, BACKING_POLL_SECONDS)
            return remaining

    def _due(self) -> bool:
        """Whether an operation can be settled now: its time has come, or its backing work was abandoned."""
        now = time.time()
        for op_id, op in self._data["operations"].items():
            if op["status"] != "InProgress":
                continue
            if op.get("backing"):
                if not self._backing_running(op_id):
                    return True
            elif op["ready_at"] <= now:
                return True
        return False

    def _settle(self) -> None:
        """Finish every operation whose time has come and whose backing work is done (lazily; inside a transaction).

        An operation whose backing work nobody runs any more (its process was killed: no flock
        on its lock) ends Failed at once; a re-PUT makes the resource again.
        """
        now = time.time()
        for op_id, op in self._data["operations"].items():
            if op["status"] != "InProgress":
                continue
            if op.get("backing"):
                if self._backing_running(op_id):
                    continue
                del op["backing"]
                name = op["resource"].rsplit("/", 1)[-1]
                op["failure"] = {"code": "InternalServerError", "message": STOPPED_WHILE_PREPARING.format(name=name)}
                self._forget_lock(op_id)
            elif op["ready_at"] > now:
                continue
            op["status"] = "Failed" if op["failure"] else "Succeeded"
            op["end"] = providers.now_iso()
            op["ended_at"] = now
            self._touch("operations", op_id)
            record = self._data["resources"].get(op["resource"])
            if record is not None:
                self._set_provisioning_state(record, op["status"])
                self._touch("resources", op["resource"])

    # ---- backing work (armtype.BackingHook): after the PUT, inside its operation --------------
    def _lock_file(self, op_id: str) -> Path | None:
        return self._path.parent / BACKING_DIR / f"{op_id}.lock" if self._path is not None else None

    def _claim_backing(self, op_id: str) -> None:
        """Mark the new operation as waiting for backing work this instance runs (inside the PUT's transaction).

        The lock is taken before the operation is committed, so any process that sees the
        operation also sees its lock held for as long as this process lives.
        """
        self._data["operations"][op_id]["backing"] = True
        fd = None
        lock = self._lock_file(op_id)
        if lock is not None:
            lock.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new, unique file: free
        with self._backing_done:
            self._backing[op_id] = fd

    def _start_backing(self, op_id: str, key: str, work: BackingWork) -> None:
        """Run the work on its own (non-daemon) thread: the interpreter lets it finish before exiting."""
        with self._backing_done:
            previous = self._last_work.get(key)
            thread = threading.Thread(
                target=self._run_backing, args=(op_id, key, work, previous), name=f"sandbox-backing-{op_id}"
            )
            self._last_work[key] = thread
        try:
            thread.start()
        except BaseException:
            with self._backing_done:
                if self._last_work.get(key) is thread:
                    del self._last_work[key]
            self._release_backing(op_id)  # the operation is then abandoned: Failed when next settled
            raise

    def _run_backing(self, op_id: str, key: str, work: BackingWork, previous: threading.Thread | None) -> None:
        """The work (after the resource's previous one), then its outcome recorded on the operation.

        The operation settles once its time has come too (here, or on a later access).
        """
        if previous is not None:
            previous.join()
        failure: dict[str, str] | None = None
        try:
            work()
        except ArmError as exc:
            failure = {"code": exc.code, "message": exc.message}
        except Exception as exc:  # any failure must end the operation, not leave it InProgress
            failure = {"code": "InternalServerError", "message": f"The sandbox failed while preparing the resource: {exc}"}
        try:
            # When the state cannot be written (invalid file), the lock released below leaves the
            # operation abandoned: the next settle ends it Failed.
            with suppress(Exception), self._writing():
                op = self._data["operations"].get(op_id)
                if op is not None and op.get("backing"):
                    del op["backing"]
                    if failure is not None:
                        op["failure"] = failure
                    self._touch("operations", op_id)
                    self._settle()
        finally:
            with self._backing_done:
                if self._last_work.get(key) is threading.current_thread():
                    del self._last_work[key]
            self._release_backing(op_id)

    def _release_backing(self, op_id: str) -> None:
        """Forget the work: its lock file removed, then released (after its outcome was committed)."""
        with self._backing_done:
            fd = self._backing.pop(op_id, None)
            self._backing_done.notify_all()
        if fd is not None:
            self._forget_lock(op_id)
            os.close(fd)

    def _forget_lock(self, op_id: str) -> None:
        lock = self._lock_file(op_id)
        if lock is not None:
            lock.unlink(missing_ok=True)

    def _backing_running(self, op_id: str) -> bool:
        """Whether someone still runs the operation's backing work: this instance, or a process holding its lock."""
        with self._backing_done:
            if op_id in self._backing:
                return True
        lock = self._lock_file(op_id)
        return lock is not None and locks.held(lock)

    def wait_for_backing(self, timeout: float | None = None) -> bool:
        """Wait until this instance's backing work is done (at most `timeout` seconds); whether it all is.

        SandboxServer.stop() gets this through close(). Never call it while holding the store's
        lock: each work commits its outcome through that lock.
        """
        with self._backing_done:
            return self._backing_done.wait_for(lambda: not self._backing, timeout)

    def counts(self) -> dict[str, Any]:
        with self._reading():
            by_type: dict[str, int] = {}
            for record in self._data["resources"].values():
                kind = providers.spec_for(record["type"]).name
                by_type[kind] = by_type.get(kind, 0) + 1
            return {
                "resources": len(self._data["resources"]),
                "by_type": dict(sorted(by_type.items())),
                "deleted_vaults": sorted(r["name"] for r in self._data["deleted_vaults"].values()),
                "secrets": sum(len(v) for v in self._data["secrets"].values()),
            }
