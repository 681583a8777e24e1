"""Point-to-site VPN certificates, checked with openssl itself; gateway revocation via the sandbox."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.vpn import p2s as vpn
from tests.conftest import run_invoke

SUB = f"/subscriptions/{SANDBOX_SUBSCRIPTION}"
APPS_RG = f"{SUB}/resourceGroups/rg-trading-prod-apps"
GATEWAY = f"{APPS_RG}/providers/Microsoft.Network/virtualNetworkGateways/vgw-trading-prod"
PIP = f"{APPS_RG}/providers/Microsoft.Network/publicIPAddresses/pip-vgw-trading-prod"
OTHER_THUMBPRINT = "AB" * 20


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


@pytest.fixture()
def certs(tmp_path: Path, sandbox) -> Path:
    return tmp_path / "certs"


def call(action: str, certs: Path, **fields) -> int:
    return getattr(vpn, action)(vpn.VpnRequest(task=f"vpn.{action}", env="prod", certs_dir=str(certs), yes=True, **fields))


def index(certs: Path) -> dict:
    return json.loads((certs / "index.json").read_text())


def seed_gateway(sandbox) -> None:
    sandbox.control(
        "POST", "/seed", {"id": APPS_RG, "body": {"location": "centralus", "properties": {"provisioningState": "Succeeded"}}}
    )
    sandbox.control(
        "POST",
        "/seed",
        {
            "id": PIP,
            "body": {
                "location": "centralus",
                "sku": {"name": "Standard"},
                "properties": {"ipAddress": "203.0.113.10", "publicIPAllocationMethod": "Static"},
            },
        },
    )
    sandbox.control(
        "POST",
        "/seed",
        {
            "id": GATEWAY,
            "body": {
                "location": "centralus",
                "properties": {
                    "gatewayType": "Vpn",
                    "vpnType": "RouteBased",
                    "sku": {"name": "VpnGw1AZ", "tier": "VpnGw1AZ"},
                    "ipConfigurations": [{"name": "gwipconfig1", "properties": {"publicIPAddress": {"id": PIP}}}],
                    "vpnClientConfiguration": {
                        "vpnClientAddressPool": {"addressPrefixes": ["172.16.201.0/24"]},
                        "vpnClientRootCertificates": [{"name": "manual-root", "properties": {"publicCertData": "MIIBmanual"}}],
                        "vpnClientRevokedCertificates": [{"name": "old-laptop", "properties": {"thumbprint": OTHER_THUMBPRINT}}],
                    },
                    "provisioningState": "Succeeded",
                },
            },
        },
    )


def seed_prod_vault(sandbox) -> None:
    sandbox.seed_vault("rg-trading-prod-data", "kv-trading-prod")


def test_root_and_client_pass_openssl(certs: Path) -> None:
    assert call("root", certs) == 0
    assert call("client", certs, name="alice") == 0
    root, client = certs / "root.pem", certs / "clients" / "alice.pem"
    verify = openssl("verify", "-CAfile", str(root), str(client))
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr
    purpose = openssl("x509", "-purpose", "-noout", "-in", str(client)).stdout
    assert "SSL client : Yes" in purpose
    root_text = openssl("x509", "-noout", "-text", "-in", str(root)).stdout
    assert "CA:TRUE" in root_text and "Certificate Sign, CRL Sign" in root_text
    assert "Public-Key: (2048 bit)" in root_text and "sha256WithRSAEncryption" in root_text
    assert "Basic Constraints: critical" in root_text and "Subject Key Identifier" in root_text
    client_text = openssl("x509", "-noout", "-text", "-in", str(client)).stdout
    assert "TLS Web Client Authentication" in client_text and "Authority Key Identifier" in client_text
    assert "Subject: CN = alice" in client_text
    b64 = (certs / "root.b64").read_bytes()
    assert b"\n" not in b64 and b"BEGIN" not in b64
    der = subprocess.run(["openssl", "x509", "-in", str(root), "-outform", "der"], capture_output=True, check=True).stdout
    assert base64.b64decode(b64) == der


@pytest.mark.parametrize(("legacy", "algorithm"), [(False, "AES-256-CBC"), (True, "pbeWithSHA1And3-KeyTripleDES-CBC")])
def test_pkcs12_opens_with_its_password_in_both_modes(certs: Path, legacy: bool, algorithm: str) -> None:
    assert call("root", certs) == 0
    assert call("client", certs, name="bob", legacy=legacy) == 0
    pfx, password = certs / "clients" / "bob.pfx", certs / "clients" / "bob.pfx.pass"
    args = ["pkcs12", "-info", "-in", str(pfx), "-passin", f"file:{password}", "-nokeys"]
    info = openssl(*args, *(["-legacy"] if legacy else []))
    assert info.returncode == 0, info.stderr
    assert algorithm in info.stderr + info.stdout
    assert "subject=CN = bob" in info.stdout and "subject=CN = trading-prod-p2s-root" in info.stdout
    wrong = openssl("pkcs12", "-info", "-in", str(pfx), "-passin", "pass:wrong", "-nokeys", *(["-legacy"] if legacy else []))
    assert wrong.returncode != 0


def test_reruns_change_nothing(certs: Path) -> None:
    assert call("root", certs) == 0
    assert call("client", certs, name="alice") == 0
    before = {p.name: p.read_bytes() for p in certs.rglob("*") if p.is_file()}
    assert call("root", certs) == 0
    assert call("client", certs, name="alice") == 0
    after = {p.name: p.read_bytes() for p in certs.rglob("*") if p.is_file()}
    assert before == after
    assert len(index(certs)["clients"]["alice"]) == 1


def test_private_files_are_0600(certs: Path) -> None:
    assert call("root", certs) == 0
    assert call("client", certs, name="carol") == 0
    for path in [certs / "root.key", *(certs / "clients").glob("carol.*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o644 if path.suffix == ".pem" else 0o600), path


def test_renewal_inside_window_and_status_with_a_controlled_clock(certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert call("root", certs) == 0
    assert call("client", certs, name="dave") == 0
    first = index(certs)["clients"]["dave"][0]
    not_after = dt.datetime.fromisoformat(first["not_after"])
    rows = lambda: {r["serial"]: r["status"] for r in _list_json(certs)}  # noqa: E731
    monkeypatch.setenv("DEPLOYKIT_NOW", (not_after - dt.timedelta(days=31)).isoformat())
    assert call("client", certs, name="dave") == 0
    assert len(index(certs)["clients"]["dave"]) == 1  # outside the 30-day window: unchanged
    monkeypatch.setenv("DEPLOYKIT_NOW", (not_after - dt.timedelta(days=10)).isoformat())
    assert rows()[first["serial"]] == "expiring"
    assert call("client", certs, name="dave") == 0
    renewed = index(certs)["clients"]["dave"]
    assert len(renewed) == 2 and renewed[1]["serial"] != first["serial"]
    assert rows()[renewed[1]["serial"]] == "valid"
    monkeypatch.setenv("DEPLOYKIT_NOW", (not_after + dt.timedelta(days=1)).isoformat())
    assert rows()[first["serial"]] == "expired"


def test_rotation_keeps_old_root_reissues_clients_and_retire_orphans_them(certs: Path) -> None:
    assert call("root", certs) == 0
    assert call("client", certs, name="erin") == 0
    old_root = index(certs)["roots"][0]["serial"]
    assert call("root", certs, rotate=True) == 0
    roots = index(certs)["roots"]
    assert len(roots) == 2 and [r["current"] for r in roots] == [False, True]
    assert (certs / "roots" / f"{old_root}.pem").exists()
    assert call("client", certs, name="erin") == 0  # issued by a root no longer current: re-issued
    erin = index(certs)["clients"]["erin"]
    assert len(erin) == 2 and erin[1]["root_serial"] == roots[1]["serial"]
    verify = openssl("verify", "-CAfile", str(certs / "root.pem"), str(certs / "clients" / "erin.pem"))
    assert verify.returncode == 0
    assert call("root", certs, retire=old_root) == 0
    statuses = {r["serial"]: r["status"] for r in _list_json(certs)}
    assert statuses[erin[0]["serial"]] == "orphaned" and statuses[erin[1]["serial"]] == "valid"


def test_revoke_before_the_gateway_is_recorded_then_applied_keeping_other_entries(certs: Path, sandbox) -> None:
    assert call("root", certs) == 0
    for name in ("frank", "grace"):
        assert call("client", certs, name=name) == 0
    assert call("revoke", certs, name="frank") == 0
    frank = index(certs)["clients"]["frank"][0]
    assert frank["revoked_at"] and frank["revocation_applied"] is False
    assert sandbox.resource_ids() == []

    seed_gateway(sandbox)
    assert call("revoke", certs, name="grace") == 0
    config = sandbox.provider.read(GATEWAY, "2026-03-01")["properties"]["vpnClientConfiguration"]
    thumbprints = {e["properties"]["thumbprint"] for e in config["vpnClientRevokedCertificates"]}
    grace = index(certs)["clients"]["grace"][0]
    assert thumbprints == {OTHER_THUMBPRINT, frank["thumbprint"], grace["thumbprint"]}
    assert all(len(t) == 40 and t == t.upper() for t in thumbprints)
    roots = {e["name"]: e["properties"]["publicCertData"] for e in config["vpnClientRootCertificates"]}
    assert roots["manual-root"] == "MIIBmanual"
    assert (certs / "root.b64").read_text() in roots.values()
    assert all(e["revocation_applied"] for e in (index(certs)["clients"]["frank"][0], grace))
    mark = sandbox.journal_mark()
    assert call("revoke", certs, name="grace") == 0  # already revoked and applied
    assert sandbox.requests_since(mark)["writes"] == 0


def test_pfx_password_goes_to_the_env_vault_when_reachable(certs: Path, sandbox) -> None:
    seed_prod_vault(sandbox)
    assert call("root", certs) == 0
    assert call("client", certs, name="heidi") == 0
    assert not (certs / "clients" / "heidi.pfx.pass").exists()
    assert "vault kv-trading-prod" in index(certs)["clients"]["heidi"][0]["password_store"]
    vault = sandbox.provider.read(
        f"{SUB}/resourceGroups/rg-trading-prod-data/providers/Microsoft.KeyVault/vaults/kv-trading-prod", "2026-05-15"
    )
    password = sandbox.provider.secret_client(vault["properties"]["vaultUri"]).get_secret("vpn-client-heidi-pfx-password").value
    info = openssl("pkcs12", "-info", "-in", str(certs / "clients" / "heidi.pfx"), "-passin", f"pass:{password}", "-nokeys")
    assert info.returncode == 0


def test_root_survives_in_the_vault(certs: Path, sandbox, tmp_path: Path) -> None:
    seed_prod_vault(sandbox)
    assert call("root", certs, to_vault=True) == 0
    serial = index(certs)["roots"][0]["serial"]
    laptop = tmp_path / "new-laptop"
    assert call("root", laptop, from_vault=True) == 0
    assert index(laptop)["roots"][0]["serial"] == serial
    assert (laptop / "root.key").stat().st_mode & 0o777 == 0o600
    assert call("client", laptop, name="ivan") == 0
    assert openssl("verify", "-CAfile", str(certs / "root.pem"), str(laptop / "clients" / "ivan.pem")).returncode == 0


def test_profile_embeds_client_cert_but_never_the_ca_key(certs: Path, sandbox) -> None:
    assert call("root", certs) == 0
    assert call("client", certs, name="judy") == 0
    seed_gateway(sandbox)
    assert call("profile", certs, name="judy") == 0
    ovpn = (certs / "clients" / "judy.ovpn").read_text()
    assert "remote 203.0.113.10 443" in ovpn and "route 10.20.0.0 255.255.0.0" in ovpn
    assert (certs / "clients" / "judy.pem").read_text().strip() in ovpn
    assert (certs / "root.pem").read_text().strip() in ovpn
    root_key_body = "".join((certs / "root.key").read_text().splitlines()[1:-1])
    for path in (certs / "clients").glob("judy.*"):
        if path.suffix != ".key":
            assert root_key_body[:64] not in path.read_text(errors="ignore").replace("\n", "")
    assert "remote_addrs = 203.0.113.10" in (certs / "clients" / "judy.swanctl.conf").read_text()
    assert (certs / "clients" / "judy.package-url").read_text().endswith("vpnclientpackage.zip")


def _list_json(certs: Path) -> list[dict]:
    result = run_invoke("vpn.list", "--env", "prod", "--certs-dir", str(certs), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["certificates"]


@pytest.mark.parametrize("name", ["", "has space", "a/b", "..", "x" * 65, "-leading"])
def test_bad_client_names_exit_2_and_write_nothing(certs: Path, sandbox, name: str) -> None:
    assert call("root", certs) == 0
    result = run_invoke("vpn.client", "--env", "prod", "--yes", "--certs-dir", str(certs), "--name", name, env=sandbox.env())
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--name:" in result.stderr
    assert not (certs / "clients").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vpn.client", "--env", "prod", "--name", "kim"], "no root CA yet; run `invoke vpn.root --env prod` first"),
        (["vpn.root", "--env", "staging"], "--env: 'staging' is not an environment"),
        (["vpn.root", "--env", "beta"], "config/beta.yaml: vpn: not configured"),
        (["vpn.revoke", "--env", "prod", "--name", "nobody"], "--name: no certificate named 'nobody'"),
    ],
)
def test_missing_root_and_bad_envs_exit_2(certs: Path, sandbox, args: list[str], message: str) -> None:
    result = run_invoke(*args, "--certs-dir", str(certs), env=sandbox.env())
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not certs.exists()


def test_no_key_or_password_reaches_output(certs: Path, sandbox, audit_dir: Path) -> None:
    env = {**sandbox.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)}
    outputs = [run_invoke("vpn.root", "--env", "prod", "--yes", "--certs-dir", str(certs), "--json", env=env)]
    outputs.append(
        run_invoke("vpn.client", "--env", "prod", "--yes", "--certs-dir", str(certs), "--name", "leo", "--json", env=env)
    )
    outputs.append(run_invoke("vpn.list", "--env", "prod", "--certs-dir", str(certs), "--json", env=env))
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    secrets = [(certs / "clients" / "leo.pfx.pass").read_text()]
    secrets += ["".join(p.read_text().splitlines()[1:3]) for p in (certs / "root.key", certs / "clients" / "leo.key")]
    texts = [o.stdout + o.stderr for o in outputs] + [(audit_dir / "audit.jsonl").read_text()]
    for text in texts:
        for secret in secrets:
            assert secret not in text
