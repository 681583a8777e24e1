"""ARM resource ids and ARM errors: the vocabulary the store, the providers table and the HTTP front share."""

from __future__ import annotations

from dataclasses import dataclass


class ArmError(Exception):
    """An ARM error answer: HTTP status, Azure error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedId:
    """An ARM resource id split into what the store needs."""

    id: str
    subscription: str
    resource_group: str | None
    type: str  # as the path spells it, e.g. Microsoft.KeyVault/vaults or microsoft.keyvault/VAULTS
    name: str
    container: str | None  # the id that must exist first: parent, scope or group
    is_group: bool = False  # the id is a resource group itself (/subscriptions/s/resourceGroups/g)

    @property
    def key(self) -> str:
        return self.id.lower()

    @property
    def group_key(self) -> str | None:
        """The store key of the resource group this id lives in, if any."""
        if self.resource_group is None:
            return None
        return f"/subscriptions/{self.subscription}/resourcegroups/{self.resource_group}".lower()


def parse_id(path: str) -> ParsedId:
    seg = [s for s in path.strip("/").split("/") if s]
    if len(seg) < 4 or seg[0].lower() != "subscriptions":
        raise ArmError(400, "InvalidResourceId", f"'{path}' is not a valid resource id")
    rid = "/" + "/".join(seg)
    rg = seg[3] if seg[2].lower() == "resourcegroups" else None
    if len(seg) == 4 and rg is not None:
        return ParsedId(rid, seg[1], rg, "Microsoft.Resources/resourceGroups", rg, None, is_group=True)
    lowered = [s.lower() for s in seg]
    if "providers" not in lowered:
        raise ArmError(400, "InvalidResourceId", f"'{path}' is not a valid resource id")
    p = len(lowered) - 1 - lowered[::-1].index("providers")
    rest = seg[p + 2 :]
    if len(rest) < 2 or len(rest) % 2:
        raise ArmError(400, "InvalidResourceType", f"'{path}' does not name a resource type and name")
    rtype = seg[p + 1] + "/" + "/".join(rest[0::2])
    container = "/" + "/".join(seg[:-2]) if len(rest) > 2 else "/" + "/".join(seg[:p])
    if container.lower() == f"/subscriptions/{seg[1]}".lower():
        container = None
    return ParsedId(rid, seg[1], rg, rtype, rest[-1], container)


def split_collection(path: str) -> tuple[str, str] | None:
    """(parent id, child type segment) when a path names a child collection (`{server}/firewallRules`), else None.

    Only collections under a resource: `.../providers/<ns>/<type>/<name>/<childType>`.
    """
    seg = [s for s in path.strip("/").split("/") if s]
    lowered = [s.lower() for s in seg]
    if len(seg) < 4 or lowered[0] != "subscriptions" or "providers" not in lowered:
        return None
    p = len(lowered) - 1 - lowered[::-1].index("providers")
    rest = seg[p + 2 :]
    if len(rest) < 3 or len(rest) % 2 == 0:
        return None
    return "/" + "/".join(seg[:-1]), seg[-1]
