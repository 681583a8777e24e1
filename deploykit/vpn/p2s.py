"""The vpn.* tasks: root CA, client certificates, revocation on the gateway, listing, profiles.

Certificates come from pki.py; this module plans each task as changes with appliers (the one flow
in flow.py applies them), and talks to Azure only for the env vault and the gateway (step 6).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from deploykit import clock
from deploykit.azure.api_versions import api_version
from deploykit.azure.arm import ArmProvider, lro_polling, read_secret, translated_errors
from deploykit.config import EnvConfig, Platform, VpnConfig, available_envs
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Action, Change, Plan, ResourceSpec
from deploykit.engine.runner import load_for
from deploykit.errors import AzureOperationError, UserError
from deploykit.locks import exclusive, lock_path
from deploykit.paths import certs_dir, config_dir, given_path, template_dir
from deploykit.report import Reporter, redact_value
from deploykit.vpn import pki
from deploykit.vpn.gateway_lists import REVOKED, ROOTS, certificate_lists

ROOT_KEY_SECRET, ROOT_CERT_SECRET = "vpn-root-key", "vpn-root-cert"


@dataclass(frozen=True)
class VpnRequest(RunOptions):
    certs_dir: str | None = None
    name: str | None = None
    rotate: bool = False
    retire: str | None = None
    to_vault: bool = False
    from_vault: bool = False
    legacy: bool = False
    gateway_address: str | None = None


@dataclass
class VpnContext:
    """Everything one vpn task needs; the target is opened only when Azure is actually needed."""

    req: VpnRequest
    run: RunContext
    platform: Platform
    env_cfg: EnvConfig
    cfg: VpnConfig
    store: pki.CertStore

    @property
    def reporter(self) -> Reporter:
        return self.run.reporter

    def provider(self) -> ArmProvider:
        return self.run.provider()

    def note(self, message: str) -> None:
        self.run.note(message)

    def gateway_spec(self) -> ResourceSpec:
        gw = self.cfg.gateway
        rid = self.provider().resource_id(gw.resource_group, f"Microsoft.Network/virtualNetworkGateways/{gw.name}")
        kind = "Microsoft.Network/virtualNetworkGateways"
        return ResourceSpec("vpn.gateway", kind, api_version(kind), rid, {}, "vpn")


def vpn_context(run_ctx: RunContext) -> VpnContext:
    """Config and the certificate store; a run that may write holds the store's lock throughout."""
    req: VpnRequest = run_ctx.options  # type: ignore[assignment]
    run_ctx.platform = platform = load_for(req)
    env_cfg = platform.envs[req.env or ""]
    if env_cfg.vpn is None:
        with_vpn = [e for e in available_envs(config_dir()) if e != req.env]
        raise UserError(f"config/{req.env}.yaml: vpn: not configured; point-to-site VPN is set up for: {', '.join(with_vpn)}")
    store = pki.CertStore(given_path(req.certs_dir) if req.certs_dir else certs_dir() / (req.env or ""))
    if not req.dry_run:
        run_ctx.stack.enter_context(
            exclusive(lock_path("certs", store.root_dir), f"certificate store {store.root_dir}", run_ctx.reporter.info)
        )
    return VpnContext(req, run_ctx, platform, env_cfg, env_cfg.vpn, store)


def _run(req: VpnRequest, planner: Callable[[VpnContext], Work]) -> int:
    return run(req, lambda run_ctx: planner(vpn_context(run_ctx)))


# ---- the env vault (optional: for the root backup and PKCS#12 passwords) ---------------------
def vault_client(ctx: VpnContext) -> tuple[Any | None, str]:
    """(SecretClient, where) when the env vault is reachable, else (None, why not)."""
    vault = ctx.env_cfg.key_vault.name
    try:
        provider = ctx.provider()
        client = provider.vault_secret_client(provider.vault_id(ctx.platform, ctx.req.env))
    except (UserError, AzureOperationError) as exc:
        return None, f"vault {vault} not reachable ({exc})"
    return (client, f"vault {vault}") if client is not None else (None, f"vault {vault} does not exist yet")


def _secret_name(client_name: str) -> str:
    """Vault secret names allow letters, digits and hyphens only; keep distinct names distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9-]", "-", client_name)
    if cleaned != client_name:
        cleaned += "-" + hashlib.sha256(client_name.encode()).hexdigest()[:6]
    return f"vpn-client-{cleaned}-pfx-password"


# ---- the gateway (step 6): roots and revocations, through the one diff ---------------------------
def gateway_change(ctx: VpnContext, index_after: dict[str, Any] | None) -> tuple[Change, Any]:
    """The gateway's roots and revocations as a planned change (index_after None: known after apply).

    The lists are step 6's (gateway_lists.py) and are compared by compare.py, so this plan and
    step 6's show the same change. Returns (change, applier); the applier re-reads the index
    written by the change before it.
    """
    from deploykit.engine.compare import diff_resource, keep_undeclared

    spec = ctx.gateway_spec()
    provider = ctx.provider()
    try:
        gateway = provider.read(spec.id, spec.api_version)
    except AzureOperationError as exc:
        reason = f"gateway not reachable ({exc.code}); recorded locally, step 6 or the next vpn task applies it"
        return Change(spec.address, spec.type, spec.id, Action.UNCHANGED, reason), None
    if gateway is None:
        reason = f"gateway {ctx.cfg.gateway.name} does not exist yet; recorded locally, step 6 applies it"
        return Change(spec.address, spec.type, spec.id, Action.UNCHANGED, reason), None
    if index_after is None:
        diff = {f"properties.vpnClientConfiguration.{ROOTS}": {"old": "(current)", "new": "(known after apply)"}}
    else:
        diff = diff_resource(spec.type, _declared(index_after), gateway)
    if not diff:
        return Change(spec.address, spec.type, spec.id, Action.UNCHANGED, "trusted roots and revocations up to date"), None

    def apply() -> dict[str, Any]:
        current = provider.read(spec.id, spec.api_version) or gateway
        index = ctx.store.load_index()
        body = copy.deepcopy({k: v for k, v in current.items() if k not in {"etag", "id", "name", "type"}})
        body.setdefault("properties", {}).setdefault("vpnClientConfiguration", {}).update(certificate_lists(index))
        body = keep_undeclared(spec.type, body, current)  # entries made by hand stay
        provider.put(spec, body)
        for entries in index["clients"].values():
            for entry in entries:
                if entry.get("revoked_at"):
                    entry["revocation_applied"] = True
        ctx.store.save_index(index)
        lists = body["properties"]["vpnClientConfiguration"]
        return {"roots": len(lists[ROOTS]), "revoked": len(lists[REVOKED])}

    reason = "trusted roots and revoked thumbprints from the certificate index (entries made by hand kept)"
    return Change(spec.address, spec.type, spec.id, Action.UPDATE, reason, diff), apply


def _declared(index: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {"vpnClientConfiguration": certificate_lists(index)}}


def _with_gateway(ctx: VpnContext, title: str, change: Change, applier: Any, index_after: dict[str, Any] | None) -> Work:
    """A certificate change followed by the gateway change it implies."""
    gw_change, gw_applier = gateway_change(ctx, index_after)
    appliers = {change.address: applier} if applier else {}
    if gw_applier is not None:
        appliers[gw_change.address] = gw_applier
    return Work(title, Plan((change, gw_change)), appliers, depends_on={gw_change.address: (change.address,)})


# ---- vpn.root --------------------------------------------------------------------------------
def root(req: VpnRequest) -> int:
    if req.from_vault:
        return _run(req, _plan_from_vault)
    if req.retire:
        return _run(req, _plan_retire)
    return _run(req, _plan_root)


def _root_change(ctx: VpnContext, action: Action, reason: str, diff: dict | None = None) -> Change:
    return Change("vpn.root", "x509/root-ca", str(ctx.store.root_dir / "root.pem"), action, reason, diff or {})


def _plan_root(ctx: VpnContext) -> Work:
    req = ctx.req
    index = ctx.store.load_index()
    current = ctx.store.root_cert()
    when = clock.now()
    if current is None:
        change = _root_change(ctx, Action.CREATE, "no root CA yet")
    elif req.rotate:
        if len(index["roots"]) >= ctx.cfg.max_roots:
            raise UserError(
                f"--rotate: {len(index['roots'])} roots already listed (the gateway takes {ctx.cfg.max_roots}); "
                "retire one with --retire SERIAL first"
            )
        change = _root_change(
            ctx,
            Action.UPDATE,
            f"rotate: new root; {pki.serial_hex(current)} stays listed until retired",
            {"serial": {"old": pki.serial_hex(current), "new": "(known after apply)"}},
        )
    elif not any(r["serial"] == pki.serial_hex(current) for r in index["roots"]):
        change = _root_change(ctx, Action.UPDATE, f"root {pki.serial_hex(current)} is not in index.json; recording it")
    else:
        not_after = current.not_valid_after_utc
        state = "EXPIRED; run with --rotate" if not_after <= when else "valid"
        change = _root_change(ctx, Action.UNCHANGED, f"{state}: serial {pki.serial_hex(current)}, not after {not_after.date()}")

    def apply_root() -> dict[str, Any]:
        cert = current
        if change.action is Action.CREATE or req.rotate:
            if current is not None:
                old_serial = pki.serial_hex(current)
                roots_dir = ctx.store.root_dir / "roots"
                ctx.store.write(roots_dir / f"{old_serial}.key", pki.key_pem(ctx.store.root_key()), private=True)
                ctx.store.write(roots_dir / f"{old_serial}.pem", current.public_bytes(serialization.Encoding.PEM), private=False)
            key, cert = pki.issue_root(ctx.cfg, when)
            ctx.store.save_root(key, cert)
            for entry in index["roots"]:
                entry["current"] = False
            index["roots"].append(_root_entry(cert, current=True))
            ctx.note(f"root CA written: {ctx.store.root_dir}/root.pem, root.key (0600), root.b64")
        assert cert is not None
        ctx.store.save_index(_ensure_root_indexed(index, cert))
        return {"serial": pki.serial_hex(cert)}

    pending = change.action is not Action.UNCHANGED
    work = _with_gateway(
        ctx, f"Plan for vpn.root on {ctx.store.root_dir}", change, apply_root if pending else None, None if pending else index
    )
    if req.to_vault:
        backup, apply_backup = _root_backup_change(ctx, current if not pending else None)
        work.plan = Plan((*work.plan.changes, backup))
        if apply_backup is not None:
            work.appliers = {**work.appliers, backup.address: apply_backup}
            work.depends_on = {**work.depends_on, backup.address: (change.address,)}
    return work


def _root_entry(cert: x509.Certificate, current: bool) -> dict[str, Any]:
    return {
        "serial": pki.serial_hex(cert),
        "thumbprint": pki.thumbprint(cert),
        "current": current,
        "not_after": cert.not_valid_after_utc.isoformat(),
        "pem": cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }


def _ensure_root_indexed(index: dict[str, Any], cert: x509.Certificate) -> dict[str, Any]:
    if not any(r["serial"] == pki.serial_hex(cert) for r in index["roots"]):
        for entry in index["roots"]:
            entry["current"] = False
        index["roots"].append(_root_entry(cert, current=True))
    return index


def _plan_retire(ctx: VpnContext) -> Work:
    serial = (ctx.req.retire or "").upper()
    index = ctx.store.load_index()
    current = ctx.store.root_cert()
    listed = ", ".join(r["serial"] for r in index["roots"]) or "(none)"
    if not any(r["serial"] == serial for r in index["roots"]):
        raise UserError(f"--retire: no root with serial {serial}; listed: {listed}")
    if current is not None and pki.serial_hex(current) == serial:
        raise UserError(f"--retire: {serial} is the current root; rotate first (--rotate), then retire it")
    change = Change(
        "vpn.root",
        "x509/root-ca",
        serial,
        Action.DELETE,
        "retire: removed from the gateway's trusted roots; its clients stop working",
    )
    after = {**index, "roots": [r for r in index["roots"] if r["serial"] != serial]}

    def apply_retire() -> dict[str, Any]:
        fresh = ctx.store.load_index()
        fresh["roots"] = [r for r in fresh["roots"] if r["serial"] != serial]
        for suffix in (".pem", ".key"):
            (ctx.store.root_dir / "roots" / f"{serial}{suffix}").unlink(missing_ok=True)
        ctx.store.save_index(fresh)
        return {"serial": serial}

    return _with_gateway(ctx, "Plan for vpn.root --retire", change, apply_retire, after)


def _root_backup_change(ctx: VpnContext, current: x509.Certificate | None) -> tuple[Change, Any]:
    """--to-vault: the root key and certificate as two vault secrets (compared, never shown)."""
    client, where = vault_client(ctx)
    if client is None:
        raise UserError(f"--to-vault: {where}; nothing was stored")
    address, kind = "vpn.root.vault", "Microsoft.KeyVault/vaults/secrets"
    if current is not None:
        key_text = pki.key_pem(ctx.store.root_key()).decode()
        redact_value(key_text)
        same = (
            read_secret(client, ROOT_KEY_SECRET) == key_text
            and read_secret(client, ROOT_CERT_SECRET) == current.public_bytes(serialization.Encoding.PEM).decode()
        )
        if same:
            return Change(
                address, kind, where, Action.UNCHANGED, f"{where} holds this root ({ROOT_KEY_SECRET}, {ROOT_CERT_SECRET})"
            ), None

    def apply_backup() -> dict[str, Any]:
        cert = ctx.store.root_cert()
        assert cert is not None
        key_text, cert_text = pki.key_pem(ctx.store.root_key()).decode(), cert.public_bytes(serialization.Encoding.PEM).decode()
        redact_value(key_text)
        for name, value in ((ROOT_KEY_SECRET, key_text), (ROOT_CERT_SECRET, cert_text)):
            if read_secret(client, name) != value:
                with translated_errors(name):
                    client.set_secret(name, value, content_type="application/x-pem-file")
        return {"vault": where, "value": "(not recorded)"}

    return Change(
        address, kind, where, Action.UPDATE, f"store the root in {where} ({ROOT_KEY_SECRET}, {ROOT_CERT_SECRET})"
    ), apply_backup


def _plan_from_vault(ctx: VpnContext) -> Work:
    index = ctx.store.load_index()
    current = ctx.store.root_cert()
    client, where = vault_client(ctx)
    if client is None:
        raise UserError(f"--from-vault: {where}; nothing was restored")
    key_text, cert_text = read_secret(client, ROOT_KEY_SECRET), read_secret(client, ROOT_CERT_SECRET)
    if not key_text or not cert_text:
        raise UserError(f"--from-vault: {where} holds no {ROOT_KEY_SECRET}/{ROOT_CERT_SECRET}; store them with --to-vault first")
    redact_value(key_text)
    cert = x509.load_pem_x509_certificate(cert_text.encode())
    if current is not None and pki.serial_hex(current) != pki.serial_hex(cert):
        raise UserError(
            f"--from-vault: {ctx.store.root_dir}/root.pem holds a different root ({pki.serial_hex(current)}); "
            "move it away first (nothing was changed)"
        )
    if current is not None:
        change = _root_change(ctx, Action.UNCHANGED, "the vault's root is already here")
        return Work("Plan for vpn.root --from-vault", Plan((change,)))
    change = _root_change(ctx, Action.CREATE, f"restore serial {pki.serial_hex(cert)} from {where}")

    def apply_restore() -> dict[str, Any]:
        key = serialization.load_pem_private_key(key_text.encode(), password=None)
        ctx.store.save_root(key, cert)  # type: ignore[arg-type]
        ctx.store.save_index(_ensure_root_indexed(index, cert))
        return {"serial": pki.serial_hex(cert)}

    return Work("Plan for vpn.root --from-vault", Plan((change,)), {change.address: apply_restore})


# ---- vpn.client ------------------------------------------------------------------------------
def client(req: VpnRequest) -> int:
    pki.check_client_name(req.name or "")
    return _run(req, _plan_client)


def _plan_client(ctx: VpnContext) -> Work:
    req, name = ctx.req, ctx.req.name or ""
    root_cert = ctx.store.root_cert()
    if root_cert is None:
        raise UserError(
            f"{ctx.store.root_dir}/root.pem: no root CA yet; run `invoke vpn.root --env {req.env}` first (nothing was written)"
        )
    when = clock.now()
    entries = ctx.store.load_index()["clients"].get(name, [])
    action, reason, reissue = _client_decision(ctx, name, entries, root_cert, when)
    change = Change(f"vpn.client.{name}", "x509/client", str(ctx.store.client_path(name, ".pem")), action, reason)

    def apply_client() -> dict[str, Any]:
        index = _ensure_root_indexed(ctx.store.load_index(), root_cert)
        history = index["clients"].get(name, [])
        if reissue:
            key, cert = pki.issue_client(name, ctx.store.root_key(), root_cert, ctx.cfg, when)
            entry = pki.cert_entry(cert, root_cert, when)
            history = [*history, entry]
            ctx.store.write(ctx.store.client_path(name, ".key"), pki.key_pem(key), private=True)
            ctx.store.write(ctx.store.client_path(name, ".pem"), cert.public_bytes(serialization.Encoding.PEM), private=False)
        else:
            entry = history[-1]
            cert = ctx.store.client_cert(name)
            key = serialization.load_pem_private_key(ctx.store.client_path(name, ".key").read_bytes(), password=None)
        # Recorded before anything else can fail: an issued certificate is always listed and revocable.
        index["clients"][name] = history
        ctx.store.save_index(index)
        password = secrets.token_urlsafe(24)
        redact_value(password)
        ctx.store.write(
            ctx.store.client_path(name, ".pfx"),
            pki.pkcs12_bytes(name, key, cert, root_cert, password, req.legacy),  # type: ignore[arg-type]
            private=True,
        )
        entry["pfx_format"] = "legacy-3des-sha1" if req.legacy else "aes256-sha256"
        entry["password_store"] = _store_password(ctx, name, password)
        ctx.store.save_index(index)
        ctx.note(
            f"{name}: {ctx.store.client_path(name, '.pem')}, .key (0600), .pfx (0600, {entry['pfx_format']}); "
            f"PKCS#12 password in {entry['password_store']}"
        )
        return {"serial": entry["serial"], "thumbprint": entry["thumbprint"]}

    return Work(f"Plan for vpn.client {name} on {ctx.store.root_dir}", Plan((change,)), {change.address: apply_client})


def _client_decision(
    ctx: VpnContext, name: str, entries: list[dict[str, Any]], root_cert: x509.Certificate, when: dt.datetime
) -> tuple[Action, str, bool]:
    """(action, reason, whether a new certificate is issued) for one client name."""
    if not entries:
        return Action.CREATE, "no certificate yet", True
    last = entries[-1]
    files = [ctx.store.client_path(name, s) for s in (".pem", ".key", ".pfx")]
    if last.get("revoked_at"):
        return Action.CREATE, f"previous certificate {last['serial']} was revoked; issuing a new one", True
    if last["root_serial"] != pki.serial_hex(root_cert):
        return Action.UPDATE, f"issued by root {last['root_serial']}, no longer current; re-issuing", True
    not_after = dt.datetime.fromisoformat(last["not_after"])
    if not_after - when <= dt.timedelta(days=ctx.cfg.renewal_days):
        state = (
            "expired"
            if not_after <= when
            else f"expires {not_after.date()}, inside the {ctx.cfg.renewal_days}-day renewal window"
        )
        return Action.UPDATE, f"{state}; re-issuing", True
    if not all(f.exists() for f in files):
        return Action.UPDATE, "certificate files missing; re-issuing", True
    wanted = "legacy-3des-sha1" if ctx.req.legacy else "aes256-sha256"
    if last.get("pfx_format") != wanted:
        return Action.UPDATE, f"re-exporting the PKCS#12 as {wanted} (same certificate)", False
    return Action.UNCHANGED, f"valid until {not_after.date()}, serial {last['serial']}, issued by the current root", False


def _store_password(ctx: VpnContext, name: str, password: str) -> str:
    """The PKCS#12 password goes to the env vault when reachable, else beside the .pfx (0600)."""
    pass_file = ctx.store.client_path(name, ".pfx.pass")
    client, where = vault_client(ctx)
    if client is not None:
        secret = _secret_name(name)
        try:
            with translated_errors(secret):
                client.set_secret(secret, password, content_type="text/plain")
            pass_file.unlink(missing_ok=True)
            return f"{where} as secret {secret}"
        except AzureOperationError as exc:
            where = f"{where} refused the write ({exc.code})"
    ctx.store.write(pass_file, password.encode(), private=True)
    return f"{pass_file} (0600; {where})"


# ---- vpn.revoke ------------------------------------------------------------------------------
def revoke(req: VpnRequest) -> int:
    pki.check_client_name(req.name or "")
    return _run(req, _plan_revoke)


def _plan_revoke(ctx: VpnContext) -> Work:
    name = ctx.req.name or ""
    index = ctx.store.load_index()
    entries = index["clients"].get(name)
    if not entries:
        known = ", ".join(sorted(index["clients"])) or "(none)"
        raise UserError(f"--name: no certificate named {name!r} in {ctx.store.index_path}; known: {known}")
    when = clock.now()
    targets = [e["serial"] for e in entries if not e.get("revoked_at") and dt.datetime.fromisoformat(e["not_after"]) > when]
    address = f"vpn.client.{name}"
    if targets:
        thumbprints = [e["thumbprint"] for e in entries if e["serial"] in targets]
        change = Change(
            address, "x509/client", name, Action.UPDATE, f"revoke {len(targets)} certificate(s): " + ", ".join(thumbprints)
        )
    else:
        change = Change(address, "x509/client", name, Action.UNCHANGED, "no valid certificate left to revoke")
    after = {**index, "clients": {**index["clients"], name: [dict(e) for e in entries]}}
    for entry in after["clients"][name]:
        if entry["serial"] in targets:
            entry["revoked_at"] = when.isoformat()

    def apply_revoke() -> dict[str, Any]:
        fresh = ctx.store.load_index()
        revoked = []
        for entry in fresh["clients"].get(name, []):
            if entry["serial"] in targets and not entry.get("revoked_at"):
                entry["revoked_at"] = when.isoformat()
                revoked.append(entry["thumbprint"])
        ctx.store.save_index(fresh)  # recorded before the gateway is touched: never lost
        return {"thumbprints": revoked}

    return _with_gateway(ctx, f"Plan for vpn.revoke {name}", change, apply_revoke if targets else None, after)


# ---- vpn.list --------------------------------------------------------------------------------
def list_certificates(req: VpnRequest) -> int:
    """Read-only: no plan, no lock (the index is replaced atomically by writers)."""
    with ExitStack() as stack:
        reporter = Reporter(req.task, req.env, req.target, True, req.as_json)
        ctx = vpn_context(RunContext(req, reporter, stack))
        index = ctx.store.load_index()
        active = {r["serial"] for r in index["roots"]}
        when = clock.now()
        rows = [
            {
                "name": name,
                "serial": e["serial"],
                "thumbprint": e["thumbprint"],
                "not_after": e["not_after"],
                "status": pki.certificate_status(e, active, when, ctx.cfg.renewal_days),
                "root_serial": e["root_serial"],
            }
            for name, entries in sorted(index["clients"].items())
            for e in entries
        ]
        if req.as_json:
            roots = [{k: r[k] for k in ("serial", "thumbprint", "not_after", "current")} for r in index["roots"]]
            ctx.reporter.emit_json(Plan(()), [], extra={"roots": roots, "certificates": rows})
            return 0
        from rich.table import Table

        table = Table(title=f"Client certificates in {ctx.store.root_dir}", title_justify="left")
        for column in ("name", "serial", "thumbprint (SHA-1)", "not after", "status"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["name"], row["serial"], row["thumbprint"], row["not_after"][:10], row["status"])
        ctx.reporter.console.print(table)
        for r in index["roots"]:
            ctx.reporter.info(
                f"root {r['serial']} ({'current' if r['current'] else 'previous'}), not after {r['not_after'][:10]}"
            )
        return 0


# ---- vpn.profile -----------------------------------------------------------------------------
def profile(req: VpnRequest) -> int:
    pki.check_client_name(req.name or "")
    if req.gateway_address is not None:
        check_gateway_address(req.gateway_address)
    return _run(req, _plan_profile)


def _plan_profile(ctx: VpnContext) -> Work:
    req, name = ctx.req, ctx.req.name or ""
    entries = ctx.store.load_index()["clients"].get(name)
    if not entries or entries[-1].get("revoked_at") or ctx.store.client_cert(name) is None:
        raise UserError(
            f"--name: no usable certificate for {name!r}; issue one with `invoke vpn.client --env {req.env} --name {name}`"
        )
    root_cert = ctx.store.root_cert()
    if root_cert is None:
        raise UserError(f"{ctx.store.root_dir}/root.pem: no root CA")
    address, gateway_exists = _gateway_details(ctx)
    outputs = {
        ctx.store.client_path(name, ".ovpn"): "openvpn.ovpn.j2",
        ctx.store.client_path(name, ".swanctl.conf"): "swanctl.conf.j2",
    }
    context = {
        "name": name,
        "gateway_address": address,
        "client_address_pool": ctx.cfg.client_address_pool,
        "routes": ctx.cfg.routes,
        "dns_servers": ctx.cfg.dns_servers,
        "route_masks": [(str(n.network_address), str(n.netmask)) for n in map(ipaddress.ip_network, ctx.cfg.routes)],
        "ca_pem": root_cert.public_bytes(serialization.Encoding.PEM).decode().strip(),
        "cert_pem": ctx.store.client_path(name, ".pem").read_text().strip(),
        "key_pem": ctx.store.client_path(name, ".key").read_text().strip(),
        "cert_file": f"{name}.pem",
        "key_file": f"{name}.key",
        "ca_file": "root.pem",
    }
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir() / "vpn"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - text profiles, not HTML
    )
    root_key_body = pki.key_pem(ctx.store.root_key()).decode().strip()
    rendered: dict[Path, str] = {}
    changes, appliers = [], {}
    for path, template in outputs.items():
        text = environment.get_template(template).render(**context)
        if root_key_body in text:  # never hand a client the CA's private key
            raise UserError(f"templates/vpn/{template}: renders the root CA private key; fix the template")
        rendered[path] = text
        old = path.read_text(encoding="utf-8", errors="replace") if path.exists() else None
        action = Action.CREATE if old is None else Action.UNCHANGED if old == text else Action.UPDATE
        reason = f"rendered from templates/vpn/{template}" + (" (same content)" if action is Action.UNCHANGED else "")
        change = Change(f"vpn.profile.{name}.{path.suffix.lstrip('.')}", "file", str(path), action, reason)
        changes.append(change)
        appliers[change.address] = _writer(ctx, path, text)
    if gateway_exists:
        path = ctx.store.client_path(name, ".package-url")
        address_ = f"vpn.profile.{name}.package-url"
        if path.exists():
            changes.append(Change(address_, "file", str(path), Action.UNCHANGED, "saved; delete it to ask for a new link"))
        else:
            reason = "the gateway's client package: a SAS link, asked for (POST) when applied"
            changes.append(Change(address_, "file", str(path), Action.CREATE, reason))
            appliers[address_] = _package_writer(ctx, path)
    return Work(
        f"Plan for vpn.profile {name}", Plan(tuple(changes)), appliers, no_changes="No changes: the profiles are up to date."
    )


LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*$")


def check_gateway_address(value: str) -> None:
    """Written into profiles: an IP address or a DNS name, nothing else (no spaces, no newlines)."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not HOSTNAME.match(value):
        raise UserError(f"--gateway-address: {value!r} is not allowed; allowed: an IP address or a DNS name")


def _writer(ctx: VpnContext, path: Path, text: str) -> Any:
    def write() -> dict[str, Any]:
        ctx.store.write(path, text.encode(), private=True)  # 0600: profiles hold the client's key
        return {"file": str(path)}

    return write


def _gateway_details(ctx: VpnContext) -> tuple[str, bool]:
    """The gateway's public address, and whether the gateway exists (reads only: this is planning)."""
    spec = ctx.gateway_spec()
    provider = ctx.provider()
    gateway = provider.read(spec.id, spec.api_version)
    if gateway is None:
        if ctx.req.gateway_address:
            ctx.note(f"gateway {ctx.cfg.gateway.name} does not exist yet; no client package, address from --gateway-address")
            return ctx.req.gateway_address, False
        raise UserError(
            f"gateway {ctx.cfg.gateway.name} does not exist yet (step 6); pass --gateway-address to render the profile anyway"
        )
    address = ctx.req.gateway_address
    if not address:
        configs = gateway.get("properties", {}).get("ipConfigurations", [])
        pip_id = configs[0].get("properties", {}).get("publicIPAddress", {}).get("id") if configs else None
        pip = provider.read(pip_id, api_version("Microsoft.Network/publicIPAddresses")) if pip_id else None
        address = (pip or {}).get("properties", {}).get("ipAddress")
        if not address:
            raise UserError(f"gateway {ctx.cfg.gateway.name} has no public IP address yet; pass --gateway-address")
    return address, True


def _package_writer(ctx: VpnContext, path: Path) -> Any:
    def fetch_and_write() -> dict[str, Any]:
        url = _package_url(ctx, ctx.gateway_spec())
        redact_value(url)  # a SAS link is a credential: saved 0600, never printed
        ctx.store.write(path, url.encode(), private=True)
        return {"file": str(path)}

    return fetch_and_write


def _package_url(ctx: VpnContext, spec: ResourceSpec) -> str:
    """POST generatevpnclientpackage through the typed network client (azure-facts.md 7)."""
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.network.models import VpnClientParameters

    target = ctx.provider().target
    network = NetworkManagementClient(
        target.credential,
        target.subscription_id,
        base_url=target.arm_endpoint,
        credential_scopes=[target.credential_scope],
        connection_verify=target.connection_verify,
        use_env_settings=target.use_env_settings,
    )
    with translated_errors(spec.id):
        poller = network.virtual_network_gateways.begin_generatevpnclientpackage(
            ctx.cfg.gateway.resource_group,
            ctx.cfg.gateway.name,
            VpnClientParameters(processor_architecture="Amd64", authentication_method="EAPTLS"),
            polling=lro_polling(target),
        )
        return str(poller.result())
