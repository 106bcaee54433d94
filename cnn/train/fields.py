"""Explaining a dotted config path that is not a field: what was meant and what is there."""

from __future__ import annotations

import difflib
from typing import Any, Optional, Sequence


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def not_a_field(config: Any, path: str, *, open_groups: Sequence[str] = ()) -> Optional[str]:
    """Why ``path`` (``"optimizer.learning_rate"``) is not a field of ``config``, or None when it is one.

    The reason names the closest field (``did you mean ...?``) and lists the fields of the deepest group
    reached. Below a group in ``open_groups`` (e.g. ``"model.overrides"``, whose fields are the model's) any
    name is accepted.
    """
    node, walked = config, []
    for part in path.split("."):
        where = ".".join(walked) or "the config"
        if walked and ".".join(walked) in open_groups:
            return None
        if not hasattr(node, "keys") or not hasattr(node, "__contains__"):
            return f"the config has no field {path}: {where} is {_a(type(node).__name__)}, not a group of fields"
        if part not in node:
            fields = sorted(node.keys())
            close = difflib.get_close_matches(part, fields, n=1)
            rest = path.split(".")[len(walked) + 1:]
            hint = f"did you mean {'.'.join(walked + close + rest)}? " if close else ""
            listing = f"{where} has: {', '.join(fields)}" if fields else f"{where} has no fields (set them in a config file)"
            return f"the config has no field {path}; {hint}{listing}"
        node, walked = node[part], walked + [part]
    return None
