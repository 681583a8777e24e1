"""The shared container registry's images: tag digests (ACR data plane) and imports by digest (ARM importImage).

Use `shared_registry(ctx)` from a planner, then `.digest(repository, tag)` and `.import_by_digest(...)`.
"""

from deploykit.registry.client import Registry, data_endpoint, shared_registry

__all__ = ["Registry", "data_endpoint", "shared_registry"]
