"""ARM API versions by resource type, from the one table in playbooks/api-versions.yaml."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from deploykit.errors import UserError
from deploykit.paths import display, playbook_dir

TABLE_NAME = "api-versions.yaml"


def api_version(resource_type: str) -> str:
    """The API version used for this ARM type (case-insensitive), or a one-line error."""
    path = playbook_dir() / TABLE_NAME
    table = _load(path)
    version = table.get(resource_type.lower())
    if version is None:
        raise UserError(f"{display(path)}: no API version for {resource_type}; add one line for it")
    return version


@functools.cache
def _load(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{display(path)}: cannot read the API version table ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UserError(f"{display(path)}: must map each ARM type to a version string")
    return {k.lower(): v for k, v in data.items()}
