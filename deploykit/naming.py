"""Azure naming rules per resource type, checked before anything is sent.

Source: azure-facts.md section 3 (resource-name-rules.md and the REST specs). Each rule is data:
length bounds, a pattern, and the sentence shown to the user when a name breaks it.
"""

from __future__ import annotations

import re
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
}


def name_problem(resource_type: str, name: str) -> str | None:
    """Why `name` is invalid for `resource_type`, or None (types without a rule pass)."""
    rule = RULES.get(resource_type.lower())
    return rule.problem(name) if rule else None
