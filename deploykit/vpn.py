"""The vpn.* tasks: root CA, client certificates, revocation on the gateway, listing, profiles.

Certificates come from pki.py; this module decides what to do (plan), does it unless dry-run,
and talks to Azure only for the env vault and the gateway (which step 6 creates).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import jinja2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from deploykit import pki
from deploykit.arm import ArmProvider, read_secret, translated_errors
from deploykit.config import EnvConfig, Platform, VpnConfig, available_envs
from deploykit.errors import AzureOperationError, UserError
from deploykit.model import Action, Change, Plan, ResourceSpec
from deploykit.paths import certs_dir, config_dir, template_dir, under_root
from deploykit.report import Reporter, audit, redact_value
from deploykit.runner import RunOptions, confirm, finish, load_for
from deploykit.target import OpenTarget, open_target

PIP_API_VERSION = "2026-03-01"
ROOT_ENTRY_PREFIX = "deploykit-root-"
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
    platform: Platform
    env_cfg: EnvConfig
    cfg: VpnConfig
    store: pki.CertStore
    reporter: Reporter
    stack: ExitStack
    opened: OpenTarget | None = None
    notes: list[str] = field(default_factory=list)

    def provider(self) -> ArmProvider:
        if self.opened is None:
            self.opened = self.stack.enter_context(open_target(self.platform, self.req.target))
        return self.opened.provider

    def gateway_spec(self) -> ResourceSpec:
        gw = self.cfg.gateway
        rid = self.provider().resource_id(gw.resource_group, f"Microsoft.Network/virtualNetworkGateways/{gw.name}")
        return ResourceSpec("vpn.gateway", "Microsoft.Network/virtualNetworkGateways", gw.api_version, rid, {}, "vpn")


@contextmanager
def vpn_context(req: VpnRequest) -> Iterator[VpnContext]:
    platform = load_for(req)
    env_cfg = platform.envs[req.env]
    if env_cfg.vpn is None:
        with_vpn = [e for e in available_envs(config_dir()) if e != req.env]
        raise UserError(f"config/{req.env}.yaml: vpn: not configured; point-to-site VPN is set up for: {', '.join(with_vpn)}")
    store = pki.CertStore(under_root(req.certs_dir) if req.certs_dir else certs_dir() / req.env)
    reporter = Reporter(req.task, req.env, req.target, req.dry_run, req.as_json)
    with ExitStack() as stack:
        yield VpnContext(req, platform, env_cfg, env_cfg.vpn, store, reporter, stack)


def _done(ctx: VpnContext, changes: list[Change], title: str) -> Plan:
    plan = Plan(tuple(changes))
    ctx.reporter.show_plan(plan, title)
    return plan


def _finish(ctx: VpnContext, plan: Plan) -> int:
    for note in ctx.notes:
        ctx.reporter.info(note)
    finish(ctx.reporter, ctx.opened, plan)
    return 0


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


# ---- the gateway (step 6): roots and revocations, full-list PUT keeping other entries -----------
def sync_gateway(ctx: VpnContext, index: dict[str, Any]) -> str:
    """Put our active roots and every revoked thumbprint on the gateway; returns what happened."""
    spec = ctx.gateway_spec()
    provider = ctx.provider()
    try:
        gateway = provider.read(spec.id, spec.api_version)
    except AzureOperationError as exc:
        return f"gateway not reachable ({exc}); recorded locally, run again to apply"
    if gateway is None:
        return f"gateway {ctx.cfg.gateway.name} does not exist yet; recorded locally, step 6 applies it"
    body = {k: v for k, v in gateway.items() if k not in {"etag", "id", "name", "type"}}
    vcc = body.setdefault("properties", {}).setdefault("vpnClientConfiguration", {})
    roots = [r for r in vcc.get("vpnClientRootCertificates", []) if not r.get("name", "").startswith(ROOT_ENTRY_PREFIX)]
    for root in index["roots"]:
        cert = x509.load_pem_x509_certificate(root["pem"].encode())
        roots.append(
            {"name": f"{ROOT_ENTRY_PREFIX}{root['serial']}"[:80], "properties": {"publicCertData": pki.public_cert_data(cert)}}
        )
    revoked = list(vcc.get("vpnClientRevokedCertificates", []))
    present = {re.sub(r"[^0-9A-F]", "", str(r.get("properties", {}).get("thumbprint", "")).upper()) for r in revoked}
    for name, entries in index["clients"].items():
        for entry in entries:
            if entry.get("revoked_at") and entry["thumbprint"] not in present:
                revoked.append({"name": f"{name}-{entry['serial'][:16]}"[:80], "properties": {"thumbprint": entry["thumbprint"]}})
                present.add(entry["thumbprint"])
    unchanged = _entry_keys(vcc.get("vpnClientRootCertificates", [])) == _entry_keys(roots) and len(revoked) == len(
        vcc.get("vpnClientRevokedCertificates", [])
    )
    if not unchanged:
        vcc["vpnClientRootCertificates"], vcc["vpnClientRevokedCertificates"] = roots, revoked
        provider.put(spec, body)
    for entries in index["clients"].values():
        for entry in entries:
            if entry.get("revoked_at"):
                entry["revocation_applied"] = True
    return f"gateway {ctx.cfg.gateway.name} " + (
        "already up to date" if unchanged else "updated (full-list PUT, other entries kept)"
    )


def _entry_keys(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((e.get("name", ""), e.get("properties", {}).get("publicCertData", "")) for e in entries)


# ---- vpn.root --------------------------------------------------------------------------------
def root(req: VpnRequest) -> int:
    with vpn_context(req) as ctx:
        index = ctx.store.load_index()
        current = ctx.store.root_cert()
        when = pki.now()
        if req.from_vault:
            return _root_from_vault(ctx, index, current)
        if req.retire:
            return _retire_root(ctx, index, current, req.retire.upper())
        if current is None:
            change = Change("vpn.root", "x509/root-ca", str(ctx.store.root_dir / "root.pem"), Action.CREATE, "no root CA yet")
        elif req.rotate:
            if len(index["roots"]) >= ctx.cfg.max_roots:
                raise UserError(
                    f"--rotate: {len(index['roots'])} roots already listed (the gateway takes {ctx.cfg.max_roots}); "
                    "retire one with --retire SERIAL first"
                )
            change = Change(
                "vpn.root",
                "x509/root-ca",
                str(ctx.store.root_dir / "root.pem"),
                Action.UPDATE,
                f"rotate: new root; {pki.serial_hex(current)} stays listed until retired",
                {"serial": {"old": pki.serial_hex(current), "new": "(new)"}},
            )
        else:
            not_after = current.not_valid_after_utc
            state = "EXPIRED; run with --rotate" if not_after <= when else "valid"
            change = Change(
                "vpn.root",
                "x509/root-ca",
                str(ctx.store.root_dir / "root.pem"),
                Action.UNCHANGED,
                f"{state}: serial {pki.serial_hex(current)}, not after {not_after.date()}",
            )
        changes = [change]
        plan = _done(ctx, changes, f"Plan for vpn.root on {ctx.store.root_dir}")
        if req.dry_run:
            return _finish(ctx, plan)
        if change.action is not Action.UNCHANGED:
            if current is not None:
                old_serial = pki.serial_hex(current)
                ctx.store.write(
                    ctx.store.root_dir / "roots" / f"{old_serial}.key", pki.key_pem(ctx.store.root_key()), private=True
                )
                ctx.store.write(
                    ctx.store.root_dir / "roots" / f"{old_serial}.pem",
                    current.public_bytes(serialization.Encoding.PEM),
                    private=False,
                )
            key, current = pki.issue_root(ctx.cfg, when)
            ctx.store.save_root(key, current)
            for entry in index["roots"]:
                entry["current"] = False
            index["roots"].append(_root_entry(current, current=True))
            ctx.notes.append(f"root CA written: {ctx.store.root_dir}/root.pem, root.key (0600), root.b64")
            ctx.notes.append(sync_gateway(ctx, index))
        ctx.store.save_index(_ensure_root_indexed(index, current))
        if req.to_vault:
            ctx.notes.append(_root_to_vault(ctx, current))
        audit(
            req.task,
            req.env,
            req.target,
            [{"address": "vpn.root", "action": change.action.value, "serial": pki.serial_hex(current), "result": "ok"}],
        )
        return _finish(ctx, plan)


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


def _retire_root(ctx: VpnContext, index: dict[str, Any], current: x509.Certificate | None, serial: str) -> int:
    match = [r for r in index["roots"] if r["serial"] == serial]
    listed = ", ".join(r["serial"] for r in index["roots"]) or "(none)"
    if not match:
        raise UserError(f"--retire: no root with serial {serial}; listed: {listed}")
    if current is not None and pki.serial_hex(current) == serial:
        raise UserError(f"--retire: {serial} is the current root; rotate first (--rotate), then retire it")
    change = Change(
        "vpn.root",
        "x509/root-ca",
        serial,
        Action.DELETE,
        "retire: removed from the gateway's trusted roots; its clients become orphaned",
    )
    plan = _done(ctx, [change], "Plan for vpn.root --retire")
    if ctx.req.dry_run:
        return _finish(ctx, plan)
    confirm(ctx.req, plan, ctx.reporter)
    index["roots"] = [r for r in index["roots"] if r["serial"] != serial]
    for suffix in (".pem", ".key"):
        (ctx.store.root_dir / "roots" / f"{serial}{suffix}").unlink(missing_ok=True)
    ctx.notes.append(sync_gateway(ctx, index))
    ctx.store.save_index(index)
    audit(
        ctx.req.task, ctx.req.env, ctx.req.target, [{"address": "vpn.root", "action": "retire", "serial": serial, "result": "ok"}]
    )
    return _finish(ctx, plan)


def _root_to_vault(ctx: VpnContext, current: x509.Certificate) -> str:
    client, where = vault_client(ctx)
    if client is None:
        raise UserError(f"--to-vault: {where}; nothing was stored")
    key_text, cert_text = pki.key_pem(ctx.store.root_key()).decode(), current.public_bytes(serialization.Encoding.PEM).decode()
    redact_value(key_text)
    stored = 0
    for name, value in ((ROOT_KEY_SECRET, key_text), (ROOT_CERT_SECRET, cert_text)):
        if read_secret(client, name) != value:
            with translated_errors(name):
                client.set_secret(name, value, content_type="application/x-pem-file")
            stored += 1
    return (
        f"root CA key and certificate {'stored in' if stored else 'already in'} {where} ({ROOT_KEY_SECRET}, {ROOT_CERT_SECRET})"
    )


def _root_from_vault(ctx: VpnContext, index: dict[str, Any], current: x509.Certificate | None) -> int:
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
    action = Action.UNCHANGED if current is not None else Action.CREATE
    change = Change(
        "vpn.root",
        "x509/root-ca",
        str(ctx.store.root_dir / "root.pem"),
        action,
        f"restore serial {pki.serial_hex(cert)} from {where}" if current is None else "the vault's root is already here",
    )
    plan = _done(ctx, [change], "Plan for vpn.root --from-vault")
    if not ctx.req.dry_run and current is None:
        key = serialization.load_pem_private_key(key_text.encode(), password=None)
        ctx.store.save_root(key, cert)  # type: ignore[arg-type]
        ctx.store.save_index(_ensure_root_indexed(index, cert))
        audit(
            ctx.req.task,
            ctx.req.env,
            ctx.req.target,
            [{"address": "vpn.root", "action": "restore", "serial": pki.serial_hex(cert), "result": "ok"}],
        )
    return _finish(ctx, plan)


# ---- vpn.client ------------------------------------------------------------------------------
def client(req: VpnRequest) -> int:
    name = req.name or ""
    pki.check_client_name(name)
    with vpn_context(req) as ctx:
        root_cert = ctx.store.root_cert()
        if root_cert is None:
            raise UserError(
                f"{ctx.store.root_dir}/root.pem: no root CA yet; run `invoke vpn.root --env {req.env}` first "
                "(nothing was written)"
            )
        index = _ensure_root_indexed(ctx.store.load_index(), root_cert)
        when = pki.now()
        entries = index["clients"].get(name, [])
        action, reason, reissue = _client_decision(ctx, name, entries, root_cert, when)
        change = Change(f"vpn.client.{name}", "x509/client", str(ctx.store.client_path(name, ".pem")), action, reason)
        plan = _done(ctx, [change], f"Plan for vpn.client {name} on {ctx.store.root_dir}")
        if req.dry_run or action is Action.UNCHANGED:
            return _finish(ctx, plan)
        if reissue:
            key, cert = pki.issue_client(name, ctx.store.root_key(), root_cert, ctx.cfg, when)
            entry = pki.cert_entry(cert, root_cert, when)
            entries = [*entries, entry]
            ctx.store.write(ctx.store.client_path(name, ".key"), pki.key_pem(key), private=True)
            ctx.store.write(ctx.store.client_path(name, ".pem"), cert.public_bytes(serialization.Encoding.PEM), private=False)
        else:
            entry = entries[-1]
            cert = ctx.store.client_cert(name)
            key = serialization.load_pem_private_key(ctx.store.client_path(name, ".key").read_bytes(), password=None)
        password = secrets.token_urlsafe(24)
        redact_value(password)
        ctx.store.write(
            ctx.store.client_path(name, ".pfx"),
            pki.pkcs12_bytes(name, key, cert, root_cert, password, req.legacy),  # type: ignore[arg-type]
            private=True,
        )
        entry["pfx_format"] = "legacy-3des-sha1" if req.legacy else "aes256-sha256"
        entry["password_store"] = _store_password(ctx, name, password)
        index["clients"][name] = entries
        ctx.store.save_index(index)
        audit(
            req.task,
            req.env,
            req.target,
            [
                {
                    "address": change.address,
                    "action": action.value,
                    "serial": entry["serial"],
                    "thumbprint": entry["thumbprint"],
                    "result": "ok",
                }
            ],
        )
        ctx.notes.append(
            f"{name}: {ctx.store.client_path(name, '.pem')}, .key (0600), .pfx (0600, {entry['pfx_format']}); "
            f"PKCS#12 password in {entry['password_store']}"
        )
        return _finish(ctx, plan)


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
    name = req.name or ""
    pki.check_client_name(name)
    with vpn_context(req) as ctx:
        index = ctx.store.load_index()
        entries = index["clients"].get(name)
        if not entries:
            known = ", ".join(sorted(index["clients"])) or "(none)"
            raise UserError(f"--name: no certificate named {name!r} in {ctx.store.index_path}; known: {known}")
        when = pki.now()
        targets = [e for e in entries if not e.get("revoked_at") and dt.datetime.fromisoformat(e["not_after"]) > when]
        pending = [e for e in entries if e.get("revoked_at") and not e.get("revocation_applied")]
        if targets:
            change = Change(
                f"vpn.client.{name}",
                "x509/client",
                name,
                Action.UPDATE,
                f"revoke {len(targets)} certificate(s): " + ", ".join(e["thumbprint"] for e in targets),
            )
        elif pending:
            change = Change(f"vpn.client.{name}", "x509/client", name, Action.UPDATE, "revoked locally; not yet on the gateway")
        else:
            change = Change(f"vpn.client.{name}", "x509/client", name, Action.UNCHANGED, "already revoked and applied")
        plan = _done(ctx, [change], f"Plan for vpn.revoke {name}")
        if req.dry_run or change.action is Action.UNCHANGED:
            return _finish(ctx, plan)
        confirm(ctx.req, plan, ctx.reporter)
        for entry in targets:
            entry["revoked_at"] = when.isoformat()
        ctx.store.save_index(index)  # recorded before touching the gateway: never lost
        ctx.notes.append(sync_gateway(ctx, index))
        ctx.store.save_index(index)
        audit(
            req.task,
            req.env,
            req.target,
            [
                {
                    "address": change.address,
                    "action": "revoke",
                    "thumbprints": [e["thumbprint"] for e in targets],
                    "applied": all(e.get("revocation_applied") for e in entries if e.get("revoked_at")),
                    "result": "ok",
                }
            ],
        )
        return _finish(ctx, plan)


# ---- vpn.list --------------------------------------------------------------------------------
def list_certificates(req: VpnRequest) -> int:

    with vpn_context(req) as ctx:
        index = ctx.store.load_index()
        active = {r["serial"] for r in index["roots"]}
        when = pki.now()
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
    name = req.name or ""
    pki.check_client_name(name)
    with vpn_context(req) as ctx:
        index = ctx.store.load_index()
        entries = index["clients"].get(name)
        if not entries or entries[-1].get("revoked_at") or ctx.store.client_cert(name) is None:
            raise UserError(
                f"--name: no usable certificate for {name!r}; issue one with `invoke vpn.client --env {req.env} --name {name}`"
            )
        root_cert = ctx.store.root_cert()
        if root_cert is None:
            raise UserError(f"{ctx.store.root_dir}/root.pem: no root CA")
        address, package_url = _gateway_details(ctx)
        outputs = {
            ctx.store.client_path(name, ".ovpn"): "openvpn.ovpn.j2",
            ctx.store.client_path(name, ".swanctl.conf"): "swanctl.conf.j2",
        }
        changes = [
            Change(
                f"vpn.profile.{name}",
                "file",
                str(path),
                Action.UPDATE if path.exists() else Action.CREATE,
                f"rendered from templates/vpn/{template}",
            )
            for path, template in outputs.items()
        ]
        plan = _done(ctx, changes, f"Plan for vpn.profile {name}")
        if req.dry_run:
            return _finish(ctx, plan)
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
        root_key_body = pki.key_pem(ctx.store.root_key()).decode()
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(template_dir() / "vpn"),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,  # noqa: S701 - text profiles, not HTML
        )
        for path, template in outputs.items():
            text = env.get_template(template).render(**context)
            if root_key_body.strip() in text:  # never hand a client the CA's private key
                raise UserError(f"templates/vpn/{template}: renders the root CA private key; fix the template")
            ctx.store.write(path, text.encode(), private=True)
        if package_url:
            ctx.store.write(ctx.store.client_path(name, ".package-url"), package_url.encode(), private=True)
            ctx.notes.append(f"gateway client package URL (a SAS link) saved to {ctx.store.client_path(name, '.package-url')}")
        ctx.notes.append(f"profiles written: {', '.join(str(p) for p in outputs)} (0600: they hold the client's key)")
        audit(req.task, req.env, req.target, [{"address": f"vpn.profile.{name}", "action": "render", "result": "ok"}])
        return _finish(ctx, plan)


def _gateway_details(ctx: VpnContext) -> tuple[str, str | None]:
    """The gateway's public address and client package URL (when the gateway exists)."""
    spec = ctx.gateway_spec()
    provider = ctx.provider()
    gateway = provider.read(spec.id, spec.api_version)
    if gateway is None:
        if ctx.req.gateway_address:
            ctx.notes.append(
                f"gateway {ctx.cfg.gateway.name} does not exist yet; no client package, address from --gateway-address"
            )
            return ctx.req.gateway_address, None
        raise UserError(
            f"gateway {ctx.cfg.gateway.name} does not exist yet (step 6); pass --gateway-address to render the profile anyway"
        )
    address = ctx.req.gateway_address
    if not address:
        configs = gateway.get("properties", {}).get("ipConfigurations", [])
        pip_id = configs[0].get("properties", {}).get("publicIPAddress", {}).get("id") if configs else None
        pip = provider.read(pip_id, PIP_API_VERSION) if pip_id else None
        address = (pip or {}).get("properties", {}).get("ipAddress")
        if not address:
            raise UserError(f"gateway {ctx.cfg.gateway.name} has no public IP address yet; pass --gateway-address")
    if ctx.req.dry_run:
        return address, None
    return address, _package_url(ctx, spec)


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
    )
    with translated_errors(spec.id):
        poller = network.virtual_network_gateways.begin_generatevpnclientpackage(
            ctx.cfg.gateway.resource_group,
            ctx.cfg.gateway.name,
            VpnClientParameters(processor_architecture="Amd64", authentication_method="EAPTLS"),
            polling_interval=target.polling_interval,
        )
        return str(poller.result())
