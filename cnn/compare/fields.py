"""Config fields by dotted path: explaining a path that is not a field, and setting fields from text.

``apply_overrides`` sets ``("optimizer.learning_rate", "0.1")`` pairs through ml_collections' own
``--config.<field>=<value>`` parsing, so a sweep's values are read exactly as the training command line
reads them; only fields below an open group (``model.overrides``, whose fields are the model's) are set
directly, from Python literals.
"""

from __future__ import annotations

import ast
import copy
import difflib
import re
from typing import Any, Optional, Sequence, Tuple

from cnn.text import a_or_an as _a

OPEN_GROUPS = ("model.overrides",)


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


def _text(value: Any) -> str:
    """A value as ``--config.<field>=`` text (strings stay as they are)."""
    return value if isinstance(value, str) else repr(value)


def apply_overrides(config: Any, overrides: Sequence[Tuple[str, Any]]) -> Any:
    """A copy of ``config`` with each ``(dotted.path, value)`` set; a bad field or value is a ValueError naming it."""
    from absl import flags
    from ml_collections import config_flags

    config = copy.deepcopy(config)
    argv = ["overrides"]
    for path, value in overrides:
        missing = not_a_field(config, path, open_groups=OPEN_GROUPS)
        if missing:
            raise ValueError(missing)
        group, _, leaf = path.rpartition(".")
        if group in OPEN_GROUPS:
            if isinstance(value, str):
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    pass  # a bare word: the string itself
            with config.unlocked():
                config[group.split(".")[0]][group.split(".")[1]][leaf] = value
        else:
            argv.append(f"--config.{path}={_text(value)}")
    if len(argv) == 1:
        return config
    values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=argv, lock_config=False)
        values(argv)
    except (flags.Error, ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        bad = re.match(r"^flag --config\.([^=]+)=(.*?): (.*)$", message)
        if bad:
            path, value, detail = bad.groups()
            current = config
            for part in path.split("."):
                current = current[part]
            message = f"{path}={value}: {path} takes {_a(type(current).__name__)} like {current!r} ({detail})"
        raise ValueError(message) from None
    return values.config
