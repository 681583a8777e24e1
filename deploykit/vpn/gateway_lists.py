"""The gateway's trusted roots and revoked thumbprints, from certs/<env>/index.json.

One function builds both lists, so step 6 (its playbook declares them) and the vpn.* tasks
(which update a gateway that exists) compare and write the same thing through the one diff.
Entries made by hand on the gateway are kept (normalise.yaml `extra_items_kept`); ours are
named `deploykit-root-<serial>` and `<client>-<serial>`.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

from deploykit.vpn import pki

ROOT_ENTRY_PREFIX = "deploykit-root-"
ROOTS = "vpnClientRootCertificates"
REVOKED = "vpnClientRevokedCertificates"


def certificate_lists(index: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The two lists as the gateway's `vpnClientConfiguration` spells them."""
    roots = []
    for root in index["roots"]:
        cert = x509.load_pem_x509_certificate(root["pem"].encode())
        roots.append(
            {"name": f"{ROOT_ENTRY_PREFIX}{root['serial']}"[:80], "properties": {"publicCertData": pki.public_cert_data(cert)}}
        )
    revoked, seen = [], set()
    for name, entries in sorted(index["clients"].items()):
        for entry in entries:
            if entry.get("revoked_at") and entry["thumbprint"] not in seen:
                seen.add(entry["thumbprint"])
                revoked.append({"name": f"{name}-{entry['serial'][:16]}"[:80], "properties": {"thumbprint": entry["thumbprint"]}})
    return {ROOTS: roots, REVOKED: revoked}


def declared_lists(certs: pki.CertStore) -> dict[str, list[dict[str, Any]]] | None:
    """What step 6 declares: None when this machine has no index (the lists are then left alone)."""
    if not certs.index_path.exists():
        return None
    return certificate_lists(certs.load_index())
