"""Azure naming rules per resource type, regions and tag limits, checked before anything is sent.

Source: azure-facts.md section 3 (resource-name-rules.md and the REST specs). Each rule is data:
length bounds, a pattern, and the sentence shown to the user when a name breaks it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class NameRule:
    min_len: int
    max_len: int
    pattern: str
    allowed: str  # human sentence: what is allowed
    no_double_hyphen: bool = False

    def problem(self, name: str) -> str | None:
        """Return why `name` breaks this rule, or None when it is valid."""
        if not isinstance(name, str) or not name:
            return f"a name is required; {self.allowed}"
        if not self.min_len <= len(name) <= self.max_len:
            return f"{name!r} is {len(name)} characters; allowed: {self.min_len}-{self.max_len} characters, {self.allowed}"
        if not re.fullmatch(self.pattern, name):
            return f"{name!r} is not allowed; allowed: {self.allowed}"
        if self.no_double_hyphen and "--" in name:
            return f"{name!r} contains '--'; allowed: {self.allowed}, no '--'"
        return None


_LETTERS_DIGITS_HYPHENS = "letters, digits and hyphens"
# Network resources (azure-facts.md 3.16-3.23): alphanumerics, underscore, period, hyphen; start
# alphanumeric, end alphanumeric or underscore.
_NETWORK_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_NETWORK_ALLOWED = "letters, digits, underscore, period and hyphen, starting alphanumeric, ending alphanumeric or underscore"

RULES: dict[str, NameRule] = {
    "microsoft.resources/resourcegroups": NameRule(
        1,
        90,
        r"[\w\-.()]*[\w\-()]",
        "letters, digits, underscore, hyphen, period, parentheses, not ending in a period",
    ),
    "microsoft.authorization/locks": NameRule(
        1,
        90,
        r"[\w\-.()]*[\w\-()]",
        "letters, digits, underscore, hyphen, period, parentheses, not ending in a period",
    ),
    "microsoft.keyvault/vaults": NameRule(
        3,
        24,
        r"[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]",
        f"{_LETTERS_DIGITS_HYPHENS}, starting with a letter, ending with a letter or digit",
        no_double_hyphen=True,
    ),
    "microsoft.keyvault/vaults/secrets": NameRule(1, 127, r"[A-Za-z0-9-]+", _LETTERS_DIGITS_HYPHENS),
    "microsoft.containerregistry/registries": NameRule(5, 50, r"[A-Za-z0-9]+", "letters and digits only (no hyphens)"),
    "microsoft.dbforpostgresql/flexibleservers": NameRule(
        3,
        63,
        r"[a-z0-9]+(-[a-z0-9]+)*",
        "lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
    ),
    "microsoft.dbforpostgresql/flexibleservers/databases": NameRule(
        1, 63, r"[A-Za-z0-9_-]+", "letters, digits, underscore and hyphens"
    ),
    "microsoft.dbforpostgresql/flexibleservers/firewallrules": NameRule(
        1, 128, r"[-\w.]+", "letters, digits, underscore, hyphen and period"
    ),
    "microsoft.cache/redis": NameRule(
        1,
        63,
        r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?",
        f"{_LETTERS_DIGITS_HYPHENS}, starting and ending with a letter or digit",
        no_double_hyphen=True,
    ),
    "microsoft.cache/redis/firewallrules": NameRule(1, 256, r"[A-Za-z0-9]+", "letters and digits only"),
    "microsoft.managedidentity/userassignedidentities": NameRule(
        3, 128, r"[A-Za-z0-9][A-Za-z0-9_-]*", "letters, digits, hyphens and underscores, starting alphanumeric"
    ),
    "microsoft.appconfiguration/configurationstores": NameRule(
        5,
        50,
        r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]",
        f"{_LETTERS_DIGITS_HYPHENS}, starting and ending with a letter or digit",
        no_double_hyphen=True,
    ),
    "microsoft.app/managedenvironments": NameRule(
        2,
        32,
        r"[a-z][a-z0-9-]*[a-z0-9]",
        "lowercase letters, digits and hyphens, starting with a letter, ending alphanumeric",
        no_double_hyphen=True,
    ),
    "microsoft.app/containerapps": NameRule(
        2,
        32,
        r"[a-z][a-z0-9-]*[a-z0-9]",
        "lowercase letters, digits and hyphens, starting with a letter, ending alphanumeric",
        no_double_hyphen=True,
    ),
    "microsoft.network/virtualnetworks": NameRule(2, 64, _NETWORK_PATTERN, _NETWORK_ALLOWED),
    "microsoft.network/virtualnetworks/subnets": NameRule(1, 80, _NETWORK_PATTERN, _NETWORK_ALLOWED),
    "microsoft.network/networksecuritygroups": NameRule(1, 80, _NETWORK_PATTERN, _NETWORK_ALLOWED),
    "microsoft.network/publicipaddresses": NameRule(1, 80, _NETWORK_PATTERN, _NETWORK_ALLOWED),
    "microsoft.network/virtualnetworkgateways": NameRule(1, 80, _NETWORK_PATTERN, _NETWORK_ALLOWED),
    "microsoft.network/privateendpoints": NameRule(2, 64, _NETWORK_PATTERN, _NETWORK_ALLOWED),
}


def name_problem(resource_type: str, name: str) -> str | None:
    """Why `name` is invalid for `resource_type`, or None (types without a rule pass)."""
    rule = RULES.get(resource_type.lower())
    return rule.problem(name) if rule else None


def rule_for(resource_type: str) -> NameRule | None:
    return RULES.get(resource_type.lower())


# ---- PostgreSQL flexible server names Azure refuses -------------------------------------------
# The administrator login: reserved role names, and nothing starting with pg_ (Azure's create form).
POSTGRES_RESERVED_LOGINS = frozenset({"azure_superuser", "azure_pg_admin", "admin", "administrator", "root", "guest", "public"})
# Databases every new server already has (azure-facts.md 3.7), plus PostgreSQL's templates.
POSTGRES_RESERVED_DATABASES = frozenset({"postgres", "azure_maintenance", "azure_sys", "template0", "template1"})


def postgres_login_problem(login: str) -> str | None:
    if login.lower() in POSTGRES_RESERVED_LOGINS or login.lower().startswith("pg_"):
        reserved = ", ".join(sorted(POSTGRES_RESERVED_LOGINS))
        return f"{login!r} is reserved by Azure; allowed: any other name, not starting with pg_ and not {reserved}"
    return None


# ---- regions -------------------------------------------------------------------------------------
# Azure's public regions by programmatic name (`az account list-locations`, physical regions).
# The project deploys to centralus (platform.md); any of these is a valid `location`.
REGIONS = frozenset(
    {
        # Americas
        "eastus", "eastus2", "centralus", "northcentralus", "southcentralus", "westcentralus",
        "westus", "westus2", "westus3", "canadacentral", "canadaeast", "brazilsouth",
        "brazilsoutheast", "mexicocentral", "chilecentral",
        # Europe
        "northeurope", "westeurope", "uksouth", "ukwest", "francecentral", "francesouth",
        "germanywestcentral", "germanynorth", "norwayeast", "norwaywest", "switzerlandnorth",
        "switzerlandwest", "swedencentral", "swedensouth", "polandcentral", "italynorth",
        "spaincentral", "austriaeast", "belgiumcentral", "denmarkeast",
        # Asia Pacific
        "eastasia", "southeastasia", "japaneast", "japanwest", "koreacentral", "koreasouth",
        "centralindia", "southindia", "westindia", "jioindiawest", "jioindiacentral",
        "australiaeast", "australiasoutheast", "australiacentral", "australiacentral2",
        "indonesiacentral", "malaysiawest", "newzealandnorth", "taiwannorth",
        # Middle East and Africa
        "uaenorth", "uaecentral", "qatarcentral", "israelcentral", "southafricanorth",
        "southafricawest",
    }
)  # fmt: skip


def region_problem(location: str) -> str | None:
    """Why `location` is not an Azure region's programmatic name, or None."""
    if location in REGIONS:
        return None
    squeezed = re.sub(r"[\s_-]", "", location).lower()
    if squeezed in REGIONS:
        hint = f"did you mean {squeezed!r} (the programmatic name)? "
    else:
        close = difflib.get_close_matches(squeezed, sorted(REGIONS), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{location!r} is not an Azure region; {hint}allowed: a lower-case region name such as centralus, eastus2, westeurope"


# ---- tags ----------------------------------------------------------------------------------------
# Tag limits (azure-facts): names 1-512 characters, values up to 256, at most 50 tags per resource;
# names are case-insensitive, may not contain < > % & \ ? / and may not start with the prefixes
# Azure keeps for itself.
TAG_NAME_MAX, TAG_VALUE_MAX, TAGS_MAX = 512, 256, 50
TAG_NAME_FORBIDDEN = "<>%&\\?/"
TAG_RESERVED_PREFIXES = ("microsoft", "azure", "windows")


def tag_problem(name: object, value: object) -> tuple[str, str] | None:
    """(which part: 'name' or 'value', why) when one tag breaks Azure's rules, else None."""
    if not isinstance(name, str) or not name.strip():
        return "name", f"{name!r} is empty; allowed: 1-{TAG_NAME_MAX} characters"
    if len(name) > TAG_NAME_MAX:
        return "name", f"tag name is {len(name)} characters; allowed: 1-{TAG_NAME_MAX} characters"
    bad = sorted({c for c in name if c in TAG_NAME_FORBIDDEN})
    if bad:
        return "name", f"{name!r} contains {' '.join(bad)}; allowed: any characters but {' '.join(TAG_NAME_FORBIDDEN)}"
    if name.lower().startswith(TAG_RESERVED_PREFIXES):
        return (
            "name",
            f"{name!r} starts with a prefix Azure reserves; allowed: names not starting with {', '.join(TAG_RESERVED_PREFIXES)}",
        )
    if not isinstance(value, str):
        return "value", f"{value!r} is not text; allowed: a string of 0-{TAG_VALUE_MAX} characters"
    if len(value) > TAG_VALUE_MAX:
        return "value", f"tag value is {len(value)} characters; allowed: 0-{TAG_VALUE_MAX} characters"
    return None


def tags_problem(tags: Mapping[str, str]) -> tuple[str | None, str] | None:
    """(the offending tag name or None, why) for a resource's whole tag set, else None."""
    if len(tags) > TAGS_MAX:
        return None, f"{len(tags)} tags; allowed: at most {TAGS_MAX} tags per resource"
    seen: dict[str, str] = {}
    for name, value in tags.items():
        problem = tag_problem(name, value)
        if problem:
            return name, problem[1]
        if name.lower() in seen:
            return name, f"{name!r} is also given as {seen[name.lower()]!r}; allowed: each tag name once (Azure ignores case)"
        seen[name.lower()] = name
    return None
