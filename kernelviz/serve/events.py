"""The server-sent events of the explorer, declared once: each event's type and fields.

The worker's tasks make their events with :func:`event` (a field not declared here is refused), and the pages
hand the table to ``static/app.js`` (``data-events``, :func:`events_json`), which dispatches on the declared types
and reports an event it does not know. One event connection per page carries all of them.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["EVENTS", "TASKS", "event", "events_json"]

#: What a ``progress`` event's ``task`` says is running.
TASKS = ("batch", "preview", "variant", "examples", "trust", "ablate", "importance", "concepts", "photo")

#: Every event type, with its fields and what each holds.
EVENTS: dict[str, dict[str, str]] = {
    "progress": {
        "task": f"what runs: one of {', '.join(TASKS)}",
        "layer": "the layer it runs for (null for a photo at every depth)",
        "filters": "the filters of a batch or of a variant (null otherwise)",
        "variant": "the variant being made (null otherwise)",
        "stage": "the stage of the task (optimize, scan, sampling, coding, importance, pictures, part i/n)",
        "step": "how much of the stage is done",
        "steps": "how much there is",
        "value": "the objective reached (null outside an optimization)",
    },
    "preview": {"layer": "the layer", "filter": "the filter", "src": "its quick preview's URL"},
    "done": {
        "layer": "the layer",
        "filter": "the filter whose picture was written",
        "src": "the picture's URL",
        "value": "its final mean activation",
        "dead": "whether the optimizer could not raise the unit from noise",
    },
    "variant": {"layer": "the layer", "filter": "the filter", "variant": "the variant made", "src": "its URL"},
    "examples": {"layer": "the layer whose dataset examples were written"},
    "trust": {"layer": "the layer", "filter": "the filter whose picture was path-checked", "flagged": "its verdict"},
    "importance": {"layer": "the layer whose units' importance was written into its units.json"},
    "ablate": {"layer": "the layer", "filter": "the filter switched off or amplified", "ablation": "zero or x4"},
    "concepts": {"layer": "the layer whose concepts were found", "class": "the class they were found in (or null)"},
    "error": {"key": "the task that failed", "message": "what went wrong, in one line"},
}


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event of type ``kind`` with ``fields`` (every declared field present, ``None`` where not given).

    Raises:
        ValueError: an undeclared type or field (a bug in the explorer, not a user's error).
    """
    declared = EVENTS.get(kind)
    if declared is None:
        raise ValueError(f"undeclared event type {kind!r}")
    unknown = set(fields) - set(declared)
    if unknown:
        raise ValueError(f"undeclared fields of a {kind!r} event: {', '.join(sorted(unknown))}")
    return {"type": kind, **{name: fields.get(name) for name in declared}}


def events_json() -> str:
    """The event table for the page's ``data-events`` attribute: ``{type: [fields]}``."""
    return json.dumps({kind: list(fields) for kind, fields in EVENTS.items()})
