"""Values another task owns once a resource exists (`kept_once_created` in normalise.yaml).

An app's image belongs to `invoke release` after the app is created: without this, the next
`deploy` would put the config's `image_tag` back and undo every release. The planner therefore
replaces the declared values at those paths with what Azure runs before comparing, so they plan
as unchanged and a PUT for another reason re-sends them. What "runs" is the resource itself, or
the child its `running_from` rule names (a container app's serving revision,
`revisions/{properties.latestReadyRevisionName}`): a revision that never became ready is not
what runs, so a failed rollout is not kept. An explicit `--tag` skips all of this (the runner
decides), so `deploy --tag Y` still sets Y.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from deploykit.engine.compare import adopt_running, at_path, rules_for
from deploykit.engine.model import ResourceSpec
from deploykit.parallel import each

_FIELD = re.compile(r"\{([A-Za-z0-9_.]+)\}")
READERS = 8


def keep_running_values(specs: Sequence[ResourceSpec], cache: Any) -> list[ResourceSpec]:
    """The specs with their kept values taken from Azure (specs of other types come back as they were).

    The resources come from `cache` (the planner has read them in the plan's one round); only the
    children named by `running_from` are read here.
    """
    kept = [s for s in specs if rules_for(s.type).kept_once_created]
    if not kept:
        return list(specs)
    adopted = dict(zip((s.address for s in kept), each(lambda s: _adopt(s, cache), kept, READERS, "kept"), strict=True))
    return [adopted.get(s.address, s) for s in specs]


def _adopt(spec: ResourceSpec, cache: Any) -> ResourceSpec:
    actual = cache.get(spec.address)
    if actual is None:
        return spec  # created now: the declared values are used
    running = _running(spec, actual, cache) or actual
    body = adopt_running(spec.type, spec.body, running)
    return spec if body == spec.body else dataclasses.replace(spec, body=body)


def _running(spec: ResourceSpec, actual: Mapping[str, Any], cache: Any) -> dict[str, Any] | None:
    """The child that holds what runs (first `running_from` template whose fields Azure filled).

    Read through the cache, so the run's result check can start from it (StateCache.recent_read)."""
    for template in sorted(rules_for(spec.type).running_from):
        values = [at_path(actual, field) for field in _FIELD.findall(template)]
        if not all(isinstance(v, str) and v for v in values):
            continue
        child = _FIELD.sub(lambda m: str(at_path(actual, m.group(1))), template)
        found = cache.read_child(spec.address, f"{spec.id}/{child}", spec.api_version)
        if found is not None:
            return found
    return None
