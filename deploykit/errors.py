"""The error types every layer raises; tasks turn them into exit codes (2 user, 1 apply)."""

from __future__ import annotations

# Exit statuses every task uses (README "Exit status").
EXIT_FAILED, EXIT_USAGE, EXIT_PENDING, EXIT_INTERRUPTED = 1, 2, 3, 130


class DeployKitError(Exception):
    """Base class: every message is one line, safe to print (no secrets)."""


class UserError(DeployKitError):
    """Invalid input or configuration: exit 2, nothing changed."""


class ApplyError(DeployKitError):
    """A failure while changing real state: exit 1."""


class AzureOperationError(DeployKitError):
    """An Azure request failed; keeps Azure's error code so callers can act on it."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code}: {message}" if code else message)


class ResourceLockedError(AzureOperationError):
    """A management lock refused the operation (Azure code ScopeLocked); never lifted by us."""
