"""Container apps in the sandbox: the ARM type, its revisions, and the apps the revisions run."""

from __future__ import annotations

from deploykit.sandbox.armtype import ArmType

# container-app/*: display-name locations (azure-facts.md 2.2, 3.14)
TYPES: tuple[ArmType, ...] = (ArmType("Microsoft.App/containerApps", long_running=True, display_location=True),)
