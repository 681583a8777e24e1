"""The sandbox's HTTPS front: parse, route, format. ARM on one port, each Key Vault on its own,
each container app and each of its revisions on its own (what they run: apps.py).

Control namespace `/_sandbox/` (never journaled): status, reset, journal, faults, mutate, seed,
failing images, apps, and the public address discovery service tests use (`/_sandbox/ip/<n>`).
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from deploykit.errors import DeployKitError
from deploykit.sandbox import apps, network, providers, rbac, registry
from deploykit.sandbox.bodies import pop_path
from deploykit.sandbox.ids import split_collection
from deploykit.sandbox.store import ArmError, SandboxState, parse_id
from deploykit.sandbox.tls import ensure_certificate

CONTROL = "/_sandbox"
READ_METHODS = frozenset({"GET", "HEAD"})
# POST actions that only read (they change nothing): counted as reads in the journal summary.
READ_ACTIONS = frozenset({"listkeys", "listsecrets"})
MAX_BODY = 64 * 1024 * 1024  # larger bodies are refused (and the connection closed)


@dataclass
class FaultRule:
    """One injected fault: matches method and a path fragment, fires `count` times."""

    method: str | None = None
    path_contains: str | None = None
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None  # Retry-After-Ms, as ARM and Key Vault also send it
    count: int = 1
    lro_fail: dict[str, str] | None = None
    # A PUT is accepted but these dotted fields of its body are not kept (a provider that drops
    # or rewrites a property): the next read differs from what was sent, so a plan never converges.
    ignore: list[str] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (
            self.count > 0
            and (self.method is None or self.method.upper() == method)
            and (self.path_contains is None or self.path_contains.lower() in path.lower())
        )


@dataclass
class Faults:
    latency_ms: float = 0.0
    lro_seconds: float = 0.0
    poll_ms: float = 100.0
    # False: long-running answers carry no Retry-After/Retry-After-Ms, as some Azure providers do.
    lro_retry_after: bool = True
    rules: list[FaultRule] = field(default_factory=list)
    app_start_ms: float = 200.0  # a new container app revision is Provisioning this long
    app_cold_start_ms: float = 500.0  # the first request to a revision scaled to zero waits this long
    # False: vaults and registries answer without an etag and ignore If-Match, as their examples
    # and SDK models suggest real Azure does (providers.ETAG_NOTE); the client must cope either way.
    etags: bool = True
    put_delay_ms: float = 0.0  # every PUT waits this long before it is applied (to make writers overlap)
    # A VPN gateway's create and its later updates (roots, revocations) take this long; Azure's
    # take 45 minutes or more (azure-facts-2.md 6). Other long-running types take lro_seconds.
    gateway_seconds: float = network.GATEWAY_SECONDS
    gateway_update_seconds: float = network.GATEWAY_UPDATE_SECONDS

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Faults:
        rules = [FaultRule(**r) for r in data.get("rules", [])]
        return cls(
            latency_ms=float(data.get("latency_ms", 0)),
            lro_seconds=float(data.get("lro_seconds", 0)),
            poll_ms=float(data.get("poll_ms", 100)),
            lro_retry_after=bool(data.get("lro_retry_after", True)),
            rules=rules,
            app_start_ms=float(data.get("app_start_ms", 200)),
            app_cold_start_ms=float(data.get("app_cold_start_ms", 500)),
            etags=bool(data.get("etags", True)),
            put_delay_ms=float(data.get("put_delay_ms", 0)),
            gateway_seconds=float(data.get("gateway_seconds", network.GATEWAY_SECONDS)),
            gateway_update_seconds=float(data.get("gateway_update_seconds", network.GATEWAY_UPDATE_SECONDS)),
        )


DEFAULT_PUBLIC_ADDRESS = "20.42.73.18"  # what /_sandbox/ip/<n> answers unless told otherwise


@dataclass(frozen=True)
class PublicAddress:
    """What the sandbox's "what is my IP" service answers (GET /_sandbox/ip/<n>), like ipify or icanhazip.

    The n-th service answers `answers[n-1]`, the last answer repeating for larger n; with a
    `status`, every one fails with it. Answers are not checked, so a test can make a service lie.
    """

    answers: tuple[str, ...] = (DEFAULT_PUBLIC_ADDRESS,)
    status: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublicAddress:
        """PUT /_sandbox/ip's body: {"answers": [...]} and/or {"status": 4xx|5xx}; a ValueError when malformed."""
        answers = data.get("answers", [DEFAULT_PUBLIC_ADDRESS])
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and "\n" not in a for a in answers):
            raise ValueError("'answers' must be a non-empty list of one-line strings")
        status = data.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError("'status' must be an HTTP error status (400-599)")
        return cls(tuple(answers), status)

    def answer(self, n: int) -> str:
        """The address the n-th service (1-based) reports."""
        return self.answers[min(n, len(self.answers)) - 1]


class Journal:
    """Every ARM and data-plane request, in order; persisted as JSON lines when a path is given.

    Each server instance counts its own run (`run`, `seq`); several processes may append to one
    file, each line under an exclusive flock.
    """

    def __init__(self, path: Path | None, run_id: str) -> None:
        self._path = path
        self._run_id = run_id
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def record(self, method: str, path: str, status: int, endpoint: str) -> None:
        entry = {
            "seq": 0,
            "t": round(time.time(), 4),
            "run": self._run_id,
            "method": method,
            "path": path,
            "status": status,
            "endpoint": endpoint,
        }
        with self._lock:
            entry["seq"] = len(self._entries) + 1
            self._entries.append(entry)
            if self._path is not None:
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.write(fd, (json.dumps(entry) + "\n").encode("utf-8"))
                finally:
                    os.close(fd)

    def since(self, seq: int) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._entries if e["seq"] > seq]

    def last_seq(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def is_read(entry: dict[str, Any]) -> bool:
    """GET and HEAD, and POSTs that change nothing (listKeys, listSecrets, a registry's token exchanges)."""
    if entry["method"] in READ_METHODS:
        return True
    if str(entry.get("endpoint", "")).startswith("registry:") and str(entry.get("path", "")).startswith("/oauth2/"):
        return True  # a registry's token exchanges change nothing
    action = str(entry.get("path", "")).rstrip("/").rsplit("/", 1)[-1].lower()
    return entry["method"] == "POST" and action in READ_ACTIONS


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Request counts: reads, writes, by method."""
    by_method: dict[str, int] = {}
    for e in entries:
        by_method[e["method"]] = by_method.get(e["method"], 0) + 1
    writes = sum(1 for e in entries if not is_read(e))
    return {"requests": len(entries), "reads": len(entries) - writes, "writes": writes, "by_method": by_method}


HANDSHAKE_SECONDS = 30.0  # a client that connects and never finishes its TLS handshake is dropped after this
STOP_GRACE_SECONDS = 10.0  # stop() waits at most this long for requests being answered


class TLSListener(ThreadingHTTPServer):
    """A threaded TLS listener that never stalls its accept loop and stops at once.

    - Deep accept backlog: a burst of new connections (a no-op plan reads everything at once)
      must not overflow it; an overflow costs the client a 1 s SYN retransmit.
    - TCP_NODELAY on every accepted connection: headers and body go out as separate TLS
      records, and with Nagle on the second waits for the client's delayed ACK (~40 ms).
    - The TLS handshake happens in the connection's own thread, not in the accept loop, so one
      slow or failed handshake delays nobody else; a failed one just drops that connection.
    - `stop()` wakes the accept loop through a pipe instead of waiting out a poll interval.
    """

    daemon_threads = True
    request_queue_size = 1024  # the kernel caps it at net.core.somaxconn

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext) -> None:
        """Bind and listen (plain TCP: each accepted socket is wrapped in `context` lazily)."""
        super().__init__(address, handler)
        self._context = context
        self._wake_read, self._wake_write = os.pipe()
        self._stopping = False
        self._serving = False
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._busy = 0  # requests being answered (read, not yet journaled)
        self._idle = threading.Condition()

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse lookup of the address (socket.getfqdn: milliseconds per listener)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept one connection and wrap it for TLS without handshaking (finish_request does that)."""
        conn, address = self.socket.accept()
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), address
        except BaseException:
            conn.close()
            raise

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake, then HTTP; a failed handshake only closes this connection."""
        try:
            request.settimeout(HANDSHAKE_SECONDS)
            request.do_handshake()
            request.settimeout(None)
        except (OSError, ValueError):  # ssl.SSLError and timeouts are OSErrors
            return
        super().finish_request(request, client_address)

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count one request as being answered for the block (stop() waits for the count to reach 0)."""
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def serve(self) -> None:
        """Accept connections until stop(): wakes for a new connection or for the stop pipe, never on a timer."""
        with self._stop_lock:
            if self._stopping:
                return  # stopped before it started: its socket may be closed already
            self._serving = True
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while not self._stopping:
                    for key, _ in selector.select():
                        if key.fileobj is self.socket and not self._stopping:
                            self._handle_request_noblock()
        finally:
            self._stopped.set()

    def stop(self) -> None:
        """End serve() at once and close the listener (connections already accepted finish on their threads)."""
        with self._stop_lock:
            if self._stopping:
                return  # already stopped: its pipe's descriptors may belong to someone else by now
            self._stopping = True
            serving = self._serving
        os.write(self._wake_write, b"\0")
        if serving:
            self._stopped.wait()
        self.server_close()
        with self._idle:  # a client may have its answer before the handler journaled it: let that finish
            self._idle.wait_for(lambda: not self._busy, timeout=STOP_GRACE_SECONDS)
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)


class SandboxServer:
    """The emulator: one ARM listener plus one listener per Key Vault (vault URIs are per host),
    per container app and per revision (their FQDNs), each started when first named."""

    def __init__(self, state_dir: Path | None, run_id: str = "run") -> None:
        self.state_dir = state_dir
        tls_dir = (state_dir or Path(".sandbox")) / "tls"
        self.cert_path, key_path = ensure_certificate(tls_dir)
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(self.cert_path, key_path)
        self.state = SandboxState(state_dir / "state.json" if state_dir else None)
        self.journal = Journal(state_dir / "journal.jsonl" if state_dir else None, run_id)
        self.faults = Faults()
        self.public_address = PublicAddress()
        # Whether callers are "on the private network" (connected to the P2S VPN): a vault with
        # public network access disabled refuses its data plane otherwise (PUT /_sandbox/vpn).
        self.vpn_connected = True
        self._faults_lock = threading.Lock()
        self._vault_servers: dict[str, TLSListener] = {}
        self._app_servers: dict[str, TLSListener] = {}
        self._vault_lock = threading.Lock()  # guards both listener maps and ports.json
        self.apps = apps.AppRuntime(self.state, self.vault_url, self.app_endpoint, self._app_timings)
        self._arm = self._listen(ArmHandler, None)
        self.url = f"https://127.0.0.1:{self._arm.server_address[1]}"

    def _listen(
        self, handler: type[BaseHTTPRequestHandler], vault: str | None, port: int = 0, target: str | None = None
    ) -> TLSListener:
        """A TLS listener on 127.0.0.1 (the given port when free), served on its own daemon thread."""
        try:
            httpd = TLSListener(("127.0.0.1", port), handler, self._ssl)
        except OSError:  # the remembered port is taken (another sandbox on this folder): any port
            httpd = TLSListener(("127.0.0.1", 0), handler, self._ssl)
        httpd.sandbox = self  # type: ignore[attr-defined]
        httpd.vault = vault  # type: ignore[attr-defined]
        httpd.target = target  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve, name=f"sandbox-listener-{httpd.server_port}", daemon=True).start()
        return httpd

    def vault_url(self, name: str) -> str:
        with self._vault_lock:
            httpd = self._vault_servers.get(name.lower())
            if httpd is None:
                port = self._remembered_port(f"vault:{name.lower()}")
                httpd = self._vault_servers[name.lower()] = self._listen(VaultHandler, name.lower(), port)
                self._remember_port(f"vault:{name.lower()}", httpd.server_address[1])
        return f"https://127.0.0.1:{httpd.server_address[1]}/"

    def registry_url(self, name: str) -> str:
        """A container registry's data-plane endpoint, one listener per registry (sandbox/registry.py).

        ARM keeps answering loginServer `<name>.azurecr.io` (image references use it); clients
        find this endpoint through GET /_sandbox/registries/<name> (deploykit/registry/client.py).
        """
        key = f"registry:{name.lower()}"
        with self._vault_lock:
            httpd = self._app_servers.get(key)
            if httpd is None:
                httpd = self._app_servers[key] = self._listen(RegistryHandler, None, self._remembered_port(key), key)
                self._remember_port(key, httpd.server_address[1])
        return f"https://127.0.0.1:{httpd.server_address[1]}"

    def app_endpoint(self, key: str) -> str:
        """The FQDN ("127.0.0.1:<port>") of a container app's ingress (`app:<id>`) or a revision's (`revision:<id>`)."""
        with self._vault_lock:
            httpd = self._app_servers.get(key)
            if httpd is None:
                httpd = self._app_servers[key] = self._listen(AppHandler, None, self._remembered_port(key), key)
                self._remember_port(key, httpd.server_address[1])
        return f"127.0.0.1:{httpd.server_address[1]}"

    def _app_timings(self) -> apps.Timings:
        faults = self.faults
        return apps.Timings(faults.app_start_ms / 1000, faults.app_cold_start_ms / 1000)

    # A data-plane URL ends up in declared values (a container app's Key Vault reference): the
    # same endpoint keeps the same port across sandbox restarts, so a re-run sees no change.
    def _ports_file(self) -> Path | None:
        return self.state_dir / "ports.json" if self.state_dir else None

    def _remembered_port(self, key: str) -> int:
        path = self._ports_file()
        try:
            return int(json.loads(path.read_text()).get(key, 0)) if path else 0
        except (OSError, ValueError, AttributeError):
            return 0

    def _remember_port(self, key: str, port: int) -> None:
        path = self._ports_file()
        if path is None:
            return
        with suppress(OSError):  # callers hold _vault_lock; a lost race only costs a new port next time
            try:
                known = json.loads(path.read_text())
            except (OSError, ValueError):
                known = {}
            known = known if isinstance(known, dict) else {}
            if known.get(key) != port:
                known[key] = port
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(known))
                tmp.replace(path)

    def stop(self) -> None:
        """Stop every listener (each wakes at once: no poll interval to wait out), then let go of the state."""
        with self._vault_lock:
            listeners = [self._arm, *self._vault_servers.values(), *self._app_servers.values()]
        for httpd in listeners:
            httpd.stop()
        self.state.close()

    # ---- faults --------------------------------------------------------------------------
    def take_fault(self, method: str, path: str) -> FaultRule | None:
        with self._faults_lock:
            for rule in self.faults.rules:
                acts_on_put = method == "PUT" and (rule.lro_fail or rule.ignore)
                if rule.matches(method, path) and (rule.status is not None or acts_on_put):
                    rule.count -= 1
                    return rule
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer
    _raw = b""  # the request body, always read before answering (_drain)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the journal is the request log."""

    @property
    def sandbox(self) -> SandboxServer:
        return self.server.sandbox  # type: ignore[attr-defined]

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer with a JSON body (none when body is None)."""
        payload = None if body is None else json.dumps(body).encode()
        self._send_bytes(status, payload, "application/json; charset=utf-8", headers)

    def _send_text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        """Answer with a text/plain body (the public address discovery service)."""
        self._send_bytes(status, text.encode(), "text/plain; charset=utf-8", headers)

    def _send_bytes(self, status: int, payload: bytes | None, content_type: str, headers: dict[str, str] | None) -> None:
        """Status, headers, then the payload (no Content-Type without one; no body on HEAD)."""
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", content_type)
        payload = payload or b""
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", str(time.time_ns()))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, err: ArmError, headers: dict[str, str] | None = None) -> int:
        self._send(err.status, {"error": {"code": err.code, "message": err.message}}, headers)
        return err.status

    def _drain(self) -> None:
        """Read the whole request body before any answer, on every path.

        A body left unread on a keep-alive connection would be parsed as the next request (and
        quoted back in its 400, secret values included). What cannot be read is answered with
        the connection closed.
        """
        self._raw = b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._raw = self._read_chunked()
            return
        declared = self.headers.get("Content-Length")
        if declared is None:
            return
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise ArmError(400, "InvalidRequestContent", f"Invalid Content-Length '{declared}'.")
        self._raw = self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"x", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        except ValueError:
            pass
        self.close_connection = True
        raise ArmError(400, "InvalidRequestContent", "The chunked request body could not be read.")

    def _body(self) -> dict[str, Any]:
        raw = self._raw
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise ArmError(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            ) from None
        if not isinstance(data, dict):
            raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
        return data

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        try:
            self._drain()
        except ArmError as err:
            status = self._error(err)
            if not path.startswith(CONTROL):
                self.sandbox.journal.record(self.command, path, status, self._endpoint())
            return
        if path.startswith(CONTROL):
            self._control(path[len(CONTROL) :], query)
            return
        faults = self.sandbox.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        status = 500
        try:
            rule = self.sandbox.take_fault(self.command, path)
            if rule is not None and rule.status is not None:
                raise _Injected(rule)
            status = self._route(path, query, rule)
        except _Injected as injected:
            rule = injected.rule
            headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
            if rule.retry_after_ms is not None:
                headers["Retry-After-Ms"] = str(rule.retry_after_ms)
            code = rule.code or {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(rule.status or 500, "InternalServerError")
            status = self._error(ArmError(rule.status or 500, code, f"Injected fault ({code})."), headers)
        except ArmError as err:
            status = self._error(err)
        except DeployKitError as err:  # e.g. another process left an invalid state file
            status = self._error(ArmError(500, "InternalServerError", str(err)))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            with suppress(OSError):
                status = self._error(ArmError(500, "InternalServerError", "The sandbox failed; see its stderr."))
        finally:
            self.sandbox.journal.record(self.command, path, status, self._endpoint())

    def _endpoint(self) -> str:
        return "arm"

    def _route(self, path: str, query: dict[str, list[str]], rule: FaultRule | None) -> int:
        raise NotImplementedError

    def _control(self, path: str, query: dict[str, list[str]]) -> None:
        self._send(404, {"error": {"code": "NotFound", "message": path}})

    def _answer(self) -> None:
        """Every method: dispatched while counted in flight, so stop() lets it finish (and journal) first."""
        with self.server.in_flight():  # type: ignore[attr-defined]
            self._dispatch()

    do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = do_HEAD = _answer


def _group_resources_path(lowered: str) -> bool:
    """/subscriptions/<s>/resourcegroups/<g>/resources: a group's resource listing."""
    parts = lowered.strip("/").split("/")
    return len(parts) == 5 and parts[0] == "subscriptions" and parts[2] == "resourcegroups" and parts[4] == "resources"


def _generic(shown: dict[str, Any]) -> dict[str, Any]:
    """A listed resource as Resources_ListByResourceGroup answers it: the envelope, not the properties."""
    return {k: shown[k] for k in ("id", "name", "type", "location", "sku", "kind", "tags", "identity") if k in shown}


class _Injected(Exception):
    def __init__(self, rule: FaultRule) -> None:
        super().__init__("injected")
        self.rule = rule


class ArmHandler(_Handler):
    """Azure Resource Manager: generic resources, deleted vaults, operation status."""

    def _route(self, path: str, query: dict[str, list[str]], rule: FaultRule | None) -> int:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        if "api-version" not in query:
            raise ArmError(
                400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."
            )
        lowered = path.lower()
        state = self.sandbox.state
        if "/providers/microsoft.sandbox/operationstatuses/" in lowered:
            return self._operation(path.rsplit("/", 1)[-1])
        if "/providers/microsoft.keyvault/locations/" in lowered and "/deletedvaults/" in lowered:
            parts = path.strip("/").split("/")
            location, name = parts[5], parts[7]
            if self.command == "POST" and lowered.endswith("/purge"):
                state.purge_deleted_vault(location, name)
                self._send(200, None)
                return 200
            self._send(200, state.get_deleted_vault(parts[1], location, name))
            return 200
        if self.command in READ_METHODS and lowered.endswith("/providers/microsoft.authorization/roleassignments"):
            return self._role_assignments(path[: -len("/providers/Microsoft.Authorization/roleAssignments")], query)
        if (
            self.command in READ_METHODS
            and "/providers/microsoft.app/containerapps/" in lowered
            and lowered.endswith("/revisions")
        ):
            return self._revisions(path[: -len("/revisions")])
        if self.command == "POST" and lowered.endswith("/generatevpnclientpackage"):
            # VirtualNetworkGatewayGenerateVpnClientPackage.json: the result is a URL string (a SAS link).
            gateway = path.rsplit("/", 1)[0]
            state.get_resource(gateway)
            self._send(200, f"{self.sandbox.url}/_sandbox/packages/{gateway.rsplit('/', 1)[-1]}/vpnclientpackage.zip")
            return 200
        if self.command == "POST" and lowered.endswith("/importimage") and "/microsoft.containerregistry/registries/" in lowered:
            return self._import_image(path, query)
        if self.command in READ_METHODS and "/providers/microsoft.sandbox/operationresults/" in lowered:
            self._send(200, None)  # an importImage monitor: the copy was made when it was accepted
            return 200
        if self.command == "POST":
            # An action on a resource (listKeys, ...): the type's hook answers (providers table).
            resource, action = path.rstrip("/").rsplit("/", 1)
            self._send(200, state.run_action(resource, action, self._body() if self._raw else None))
            return 200
        group_list = self.command in READ_METHODS and _group_resources_path(lowered)
        if group_list:
            # Resources_ListByResourceGroup: the GenericResourceExpanded shape, one page.
            records = state.list_group_resources(path[: -len("/resources")])
            self._send(200, {"value": [_generic(self._present(r)) for r in records]})
            return 200
        collection = split_collection(path) if self.command in READ_METHODS else None
        if collection is not None:
            # List a child type (FirewallRules_ListByServer, ...): {"value": [...]}, one page, as
            # DatabasesListByServer.json answers (no nextLink).
            records = state.list_children(*collection)
            self._send(200, {"value": [self._present(r) for r in records]})
            return 200
        if self.command in READ_METHODS:
            shown = self._present(state.get_resource(path))
            etag = shown.get("etag") if providers.spec_for(parse_id(path).type).etag and self.sandbox.faults.etags else None
            self._send(200, shown, {"ETag": etag} if isinstance(etag, str) else None)
            return 200
        if self.command == "PUT":
            return self._put(path, query, rule)
        if self.command == "DELETE":
            state.delete_resource(path, self._if_match())
            self._send(200, None)
            return 200
        raise ArmError(405, "MethodNotAllowed", f"{self.command} is not supported on {path}.")

    def _put(self, path: str, query: dict[str, list[str]], rule: FaultRule | None) -> int:
        """201 created / 200 replaced; long-running types (the providers table) add an operation to poll."""
        faults = self.sandbox.faults
        failure = rule.lro_fail if rule is not None else None
        if faults.put_delay_ms:
            time.sleep(faults.put_delay_ms / 1000)

        def seconds(type_name: str, created: bool) -> float:
            return network.operation_seconds(
                type_name, created, faults.lro_seconds, faults.gateway_seconds, faults.gateway_update_seconds
            )

        body = self._body()
        for dotted in (rule.ignore or []) if rule is not None else []:
            pop_path(body, dotted)
        created, record, op_id = self.sandbox.state.put_resource(path, body, seconds, failure, self._if_match())
        status = 201 if created else 200
        headers: dict[str, str] = {}
        if op_id is not None:
            api = query["api-version"][0]
            headers["Azure-AsyncOperation"] = (
                f"{self.sandbox.url}/subscriptions/{parse_id(path).subscription}"
                f"/providers/Microsoft.Sandbox/operationStatuses/{op_id}?api-version={api}"
            )
            if faults.lro_retry_after:
                headers["Retry-After-Ms"] = self._poll_ms(op_id)
        self._send(status, self._present(record), headers)
        return status

    def _import_image(self, path: str, query: dict[str, list[str]]) -> int:
        """importImage (azure-facts-2.md 2.2): 202 + Location, then the monitor answers 200 (done).

        The copy (sandbox/registry.py) happens in the POST's transaction, so refusals (NoForce and
        an existing tag, an unknown source) are synchronous errors and nothing was copied.
        """
        import uuid

        resource = path.rstrip("/").rsplit("/", 1)[0]
        self.sandbox.state.run_action(resource, "importImage", self._body())
        monitor = (
            f"{self.sandbox.url}/subscriptions/{parse_id(resource).subscription}/providers/Microsoft.Sandbox"
            f"/operationResults/registries-{uuid.uuid4()}?api-version={query['api-version'][0]}"
        )
        headers = {"Location": monitor}
        if self.sandbox.faults.lro_retry_after:
            headers["Retry-After-Ms"] = f"{self.sandbox.faults.poll_ms:.0f}"
        self._send(202, None, headers)
        return 202

    def _poll_ms(self, op_id: str) -> str:
        remaining_ms = self.sandbox.state.operation_remaining(op_id) * 1000
        return f"{max(10, min(self.sandbox.faults.poll_ms, remaining_ms + 5)):.0f}"

    def _operation(self, op_id: str) -> int:
        op = self.sandbox.state.get_operation(op_id)
        body: dict[str, Any] = {"id": op_id, "name": op_id, "status": op["status"], "startTime": op["start"]}
        headers: dict[str, str] = {}
        if op["status"] == "InProgress":
            if self.sandbox.faults.lro_retry_after:
                headers["Retry-After-Ms"] = self._poll_ms(op_id)
        else:
            body["endTime"] = op.get("end")
        if op["status"] == "Failed":
            body["error"] = {
                "code": op["failure"].get("code", "InternalServerError"),
                "message": op["failure"].get("message", "Operation failed."),
            }
        self._send(200, body, headers)
        return 200

    def _present(self, record: dict[str, Any], records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out = providers.present(record, self.sandbox.vault_url)
        self.sandbox.apps.decorate(out, records)  # container apps and revisions: live fields
        if not self.sandbox.faults.etags and providers.spec_for(record["type"]).etag:
            out.pop("etag", None)
        return out

    def _if_match(self) -> str | None:
        """The If-Match header, unless the sandbox plays Azure without etags (Faults.etags False)."""
        return self.headers.get("If-Match") if self.sandbox.faults.etags else None

    def _revisions(self, app_id: str) -> int:
        """GET {app}/revisions: every revision of the app, oldest first (azure-facts-2.md 3.1)."""
        self.sandbox.state.get_resource(app_id)  # 404 when the app (or its group) is missing
        records = self.sandbox.state.list_resources()
        revisions = apps.revisions_of(app_id, records)
        self._send(200, {"value": [self._present(r, records) for r in revisions]})
        return 200

    def _role_assignments(self, scope: str, query: dict[str, list[str]]) -> int:
        """GET {scope}/providers/Microsoft.Authorization/roleAssignments[?$filter=principalId eq '<id>' / atScope()]."""
        principal, at_scope = rbac.parse_filter((query.get("$filter") or [""])[0])
        self._send(200, {"value": self.sandbox.state.list_role_assignments(scope, principal, at_scope)})
        return 200

    def _control(self, path: str, query: dict[str, list[str]]) -> None:
        sandbox = self.sandbox
        try:
            if path == "/status" and self.command == "GET":
                self._send(200, {**sandbox.state.counts(), "journal": summarise(sandbox.journal.since(0))})
            elif path.startswith("/ip/") and self.command in READ_METHODS:
                self._public_address(path[len("/ip/") :])
            elif path == "/ip" and self.command == "PUT":
                sandbox.public_address = PublicAddress.from_json(self._body())
                self._send(200, {"answers": list(sandbox.public_address.answers), "status": sandbox.public_address.status})
            elif path == "/ip" and self.command == "DELETE":
                sandbox.public_address = PublicAddress()
                self._send(200, {"answers": list(sandbox.public_address.answers), "status": None})
            elif path == "/reset" and self.command == "POST":
                sandbox.state.reset()
                sandbox.journal.clear()
                sandbox.faults = Faults()
                sandbox.public_address = PublicAddress()
                sandbox.vpn_connected = True
                sandbox.apps.reset()
                self._send(200, {"reset": True})
            elif path == "/journal" and self.command == "GET":
                entries = sandbox.journal.since(int(query.get("since", ["0"])[0]))
                self._send(200, {"entries": entries, "counts": summarise(entries), "last": sandbox.journal.last_seq()})
            elif path == "/faults" and self.command == "PUT":
                sandbox.faults = Faults.from_json(self._body())
                self._send(200, {"faults": True})
            elif path == "/faults" and self.command == "DELETE":
                sandbox.faults = Faults()
                self._send(200, {"faults": False})
            elif path == "/mutate" and self.command == "POST":
                body = self._body()
                record = sandbox.state.mutate(body["id"], body["set"])
                self._send(200, self._present(record))
            elif path == "/seed" and self.command == "POST":
                body = self._body()
                sandbox.state.seed(body["id"], body["body"])
                self._send(200, {"seeded": body["id"]})
            elif path == "/resources" and self.command == "GET":
                records = sandbox.state.list_resources()
                self._send(200, {"value": [self._present(r, records) for r in records]})
            elif path == "/images/failing" and self.command == "PUT":
                self._send(200, {"failing": sandbox.apps.fail_image(str(self._body()["image"]))})
            elif path == "/images/failing" and self.command == "DELETE":
                image = self._body().get("image")
                self._send(200, {"failing": sandbox.apps.clear_image(None if image is None else str(image))})
            elif path == "/images/failing" and self.command == "GET":
                self._send(200, {"failing": sandbox.apps.failing_images()})
            elif path == "/vpn" and self.command in ("GET", "PUT"):
                if self.command == "PUT":
                    connected = self._body().get("connected")
                    if not isinstance(connected, bool):
                        raise ValueError("'connected' must be true or false")
                    sandbox.vpn_connected = connected
                self._send(200, {"connected": sandbox.vpn_connected})
            elif path == "/apps" and self.command == "GET":
                self._send(200, {"value": sandbox.apps.snapshot()})
            elif path.startswith("/registries/"):
                self._registry_control(path[len("/registries/") :])
            else:
                self._send(404, {"error": {"code": "NotFound", "message": f"no control endpoint {path}"}})
        except ArmError as err:
            self._error(err)
        except DeployKitError as err:
            self._error(ArmError(500, "InternalServerError", str(err)))
        except (KeyError, TypeError, ValueError) as err:
            self._send(400, {"error": {"code": "BadControlRequest", "message": str(err)}})

    def _registry_control(self, rest: str) -> None:
        """GET /_sandbox/registries/<name>: its data-plane endpoint; PUT .../images: push as CI would; GET .../images: list."""
        name, _, what = rest.partition("/")
        sandbox = self.sandbox
        if not what and self.command == "GET":
            found = sandbox.state.find_named(registry.REGISTRY_TYPE, name)
            endpoint = sandbox.registry_url(name)
            self._send(
                200, {"name": name, "loginServer": registry.login_server(name), "endpoint": endpoint, "exists": bool(found)}
            )
            return
        found = sandbox.state.find_named(registry.REGISTRY_TYPE, name)
        if what != "images" or self.command not in ("PUT", "GET"):
            self._send(404, {"error": {"code": "NotFound", "message": f"no control endpoint /registries/{rest}"}})
        elif found is None:
            raise ArmError(404, "ResourceNotFound", f"The registry '{name}' does not exist; create it first (step2b).")
        elif self.command == "GET":
            self._send(200, {"repositories": registry.listing(found)})
        else:
            body = self._body()
            change = registry.push(body["repository"], body["tag"], body.get("digest"))
            self._send(200, {"digest": sandbox.state.update_private(found["id"], change)})

    def _public_address(self, n: str) -> None:
        """GET /_sandbox/ip/<n>: the n-th "what is my IP" service; no token needed, never journaled."""
        if not (n.isascii() and n.isdigit()) or int(n) < 1:
            self._send_text(404, "Not Found\n")
            return
        config = self.sandbox.public_address
        if config.status is not None:
            reason = self.responses.get(config.status, ("Error",))[0]
            self._send_text(config.status, f"{reason}\n")
            return
        self._send_text(200, config.answer(int(n)) + "\n", {"Cache-Control": "no-store"})


class VaultHandler(_Handler):
    """The Key Vault data plane for one vault: secrets, with the bearer challenge the SDK expects."""

    def _endpoint(self) -> str:
        return f"vault:{self.server.vault}"  # type: ignore[attr-defined]

    def _route(self, path: str, query: dict[str, list[str]], rule: FaultRule | None) -> int:
        vault = self.server.vault  # type: ignore[attr-defined]
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            challenge = 'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"'
            self._send(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                {"WWW-Authenticate": challenge},
            )
            return 401
        state = self.sandbox.state
        if not state.vault_exists(vault):
            raise ArmError(404, "VaultNotFound", f"Vault '{vault}' does not exist.")
        public, location = state.vault_public_access(vault)
        if not public and not self.sandbox.vpn_connected:
            return self._refuse_connection(vault, location)
        parts = [p for p in path.strip("/").split("/") if p]
        base = self.sandbox.vault_url(vault)
        if parts == ["secrets"] and self.command == "GET":
            items = [
                {
                    "id": f"{base}secrets/{s['name']}",
                    "attributes": s["attributes"],
                    "contentType": s["contentType"],
                    "tags": s["tags"],
                }
                for s in state.list_secrets(vault)
            ]
            self._send(200, {"value": items, "nextLink": None})
            return 200
        if len(parts) in (2, 3) and parts[0] == "secrets":
            if self.command == "PUT" and len(parts) == 2:
                body = self._body()
                if not isinstance(body.get("value"), str):
                    raise ArmError(400, "BadParameter", "Property 'value' is required.")
                attributes = body.get("attributes") if isinstance(body.get("attributes"), dict) else {}
                enabled = attributes.get("enabled") is not False
                entry = state.set_secret(vault, parts[1], body["value"], body.get("contentType"), body.get("tags"), enabled)
                self._send(200, self._bundle(base, entry))
                return 200
            if self.command == "GET":
                entry = state.get_secret(vault, parts[1], parts[2] if len(parts) == 3 else None)
                if entry["attributes"].get("enabled") is False:
                    # As Key Vault answers (azure-sdk-for-js#24756, ansible-collections/azure#1989)
                    error = {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret."}
                    self._send(403, {"error": {**error, "innererror": {"code": "SecretDisabled"}}})
                    return 403
                self._send(200, self._bundle(base, entry))
                return 200
        raise ArmError(400, "BadParameter", f"{self.command} {path} is not supported by the sandbox vault.")

    def _refuse_connection(self, vault: str, location: str) -> int:
        """403 Forbidden / ForbiddenByConnection: public network access is off and the caller is not on the VPN.

        Status, codes and the first line as Key Vault answers (quoted from real az and SDK errors in
        public code and labs); the Caller line is the sandbox's own.
        """
        message = (
            "Public network access is disabled and request is not from a trusted service nor via an approved private link.\r\n"
            f"Caller: appid=sandbox;oid=sandbox\r\nVault: {vault};location={location.lower().replace(' ', '')}"
        )
        self._send(403, {"error": {"code": "Forbidden", "message": message, "innererror": {"code": "ForbiddenByConnection"}}})
        return 403

    @staticmethod
    def _bundle(base: str, entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "value": entry["value"],
            "id": f"{base}secrets/{entry['name']}/{entry['version']}",
            "contentType": entry["contentType"],
            "tags": entry["tags"],
            "attributes": entry["attributes"],
        }


class AppHandler(_Handler):
    """A container app's ingress FQDN, or one revision's: what the revision runs answers (apps.py).

    This is the workload's traffic, not Azure's API: no bearer token, no faults, not journaled.
    """

    def _dispatch(self) -> None:
        try:
            self._drain()
        except ArmError as err:
            with suppress(OSError):
                self._send(400, {"status": "bad request", "reason": err.message})
            return
        try:
            status, body, headers = self.sandbox.apps.answer(self.server.target, urlsplit(self.path).path)  # type: ignore[attr-defined]
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            status, body, headers = 500, {"status": "error", "reason": "the sandbox failed; see its stderr"}, {}
        with suppress(OSError):
            self._send(status, body, headers)


class RegistryHandler(_Handler):
    """One container registry's data plane: ACR's token exchange and /acr/v1 (answers from sandbox/registry.py)."""

    def _endpoint(self) -> str:
        return str(self.server.target)  # type: ignore[attr-defined]

    def _route(self, path: str, query: dict[str, list[str]], rule: FaultRule | None) -> int:
        name = self._endpoint().split(":", 1)[1]
        record = self.sandbox.state.find_named(registry.REGISTRY_TYPE, name)
        status, body, headers = registry.answer(record, name, self.command, path, query, self.headers, self._raw)
        self._send(status, body, headers)
        return status
