"""Where the project lives, resolved once per process, so tasks work from any folder inside it.

Data (config, playbooks, certificates, the sandbox and audit state, migrations) is found under the
project root: DEPLOYKIT_ROOT if set, else the nearest folder at or above the working directory
holding `config/shared.yaml`, else the checkout this package came from. Code assets (runbooks,
templates) always come from the checkout itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The root for this process's working directory (a task runs in one; resolved once for it)."""
    override = os.environ.get("DEPLOYKIT_ROOT")
    if override:
        return Path(override).resolve()
    return _root_above(os.getcwd())


@functools.cache
def _root_above(cwd: str) -> Path:
    here = Path(cwd).resolve()
    for folder in (here, *here.parents):
        if (folder / "config" / "shared.yaml").is_file():
            return folder
    return PACKAGE_ROOT


def under_root(relative: str | Path) -> Path:
    """A path given relative to the project root (absolute paths are kept as given)."""
    path = Path(relative)
    return path if path.is_absolute() else project_root() / path


def given_path(value: str | Path) -> Path:
    """A path typed on the command line: relative to the folder the command runs in, as a shell reads it.

    Config files name paths relative to the project root (`under_root`); a flag's value is the
    user's own, and a command can be run from any folder of the project.
    """
    return Path(value).expanduser().absolute()


def config_dir() -> Path:
    return project_root() / "config"


def playbook_dir() -> Path:
    return project_root() / "playbooks"


def certs_dir() -> Path:
    return project_root() / "certs"


def sandbox_dir() -> Path:
    """The in-process sandbox's state: DEPLOYKIT_SANDBOX_DIR, else .sandbox/ under the root."""
    override = os.environ.get("DEPLOYKIT_SANDBOX_DIR")
    return Path(override).resolve() if override else project_root() / ".sandbox"


def audit_dir() -> Path:
    """The audit log's folder: DEPLOYKIT_AUDIT_DIR, else .deploykit/ under the root (git-ignored)."""
    override = os.environ.get("DEPLOYKIT_AUDIT_DIR")
    return Path(override).resolve() if override else project_root() / ".deploykit"


def state_dir() -> Path:
    """Run state that is not the audit log (locks): beside the audit log."""
    return audit_dir()


def runbook_dir() -> Path:
    return PACKAGE_ROOT / "runbooks"


def template_dir() -> Path:
    return PACKAGE_ROOT / "templates"


def display(path: Path) -> str:
    """A path as an operator would type it from the project root (config/beta.yaml), else as given."""
    try:
        return path.resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)
