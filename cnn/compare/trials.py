"""The trials of a comparison: every (run, sweep point, seed) planned, configured and run as a normal run.

A comparison config (``experiments/configs/compare_*.py``) holds ``base`` (a training config),
``runs`` (a list of ``dict(model=..., name=..., recipe=..., overrides={"dotted.field": value})``),
``seeds`` and ``plots`` (``feature_layer``, ``images``). Every (run, sweep point, seed) is a *trial*:
a training run with its own workdir ``DIR/runs/<name>-<recipe>[-<sweep>]-seed<k>/``, trained by
``cnn.train.loop.train_and_evaluate``, which returns at once for a finished run and resumes an
interrupted one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import logging
import pathlib
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple

import ml_collections

from cnn.analysis import plots, runs
from cnn.compare.fields import apply_overrides
from cnn.train.loop import train_and_evaluate

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training run of a comparison."""

    name: str  # the run's label, e.g. "vgg_small"
    model: str  # registry name
    recipe: str
    seed: int
    overrides: Tuple[Tuple[str, Any], ...] = ()  # the run's own config changes
    sweep: Tuple[Tuple[str, Any], ...] = ()  # the sweep point's changes (on top of the run's)

    @property
    def group(self) -> str:
        """The trial's name without the seed: the rows of the results table."""
        parts = [self.name, self.recipe] + ([sweep_name(self.sweep)] if self.sweep else [])
        return "-".join(_safe(p) for p in parts)

    @property
    def directory(self) -> str:
        return f"{self.group}-seed{self.seed}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", str(text))


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return "x".join(_value_text(v) for v in value)
    return str(value)


def sweep_name(sweep: Sequence[Tuple[str, Any]]) -> str:
    """``learning_rate=0.1,batch_size=64``: the last part of each field's path and its value."""
    tails = [path.rsplit(".", 1)[-1] for path, _ in sweep]
    names = [tail if tails.count(tail) == 1 else path for tail, (path, _) in zip(tails, sweep)]
    return ",".join(f"{name}={_value_text(value)}" for name, (_, value) in zip(names, sweep))




def parse_sweep(text: str) -> Tuple[str, List[str]]:
    """``"optimizer.learning_rate=0.1,0.03"`` -> ``("optimizer.learning_rate", ["0.1", "0.03"])``."""
    path, equals, values = text.partition("=")
    items = [v.strip() for v in split_values(values)]
    if not equals or not path.strip() or not items or any(not v for v in items):
        raise ValueError(f"--sweep {text!r}: expected FIELD=VALUE,VALUE,..., e.g. optimizer.learning_rate=0.1,0.03,0.01")
    return path.strip(), items


def split_values(text: str) -> List[str]:
    """Splits on commas outside brackets, so tuple values like ``(16,32)`` stay whole."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([" and 1 or 0
        depth -= char in ")]" and 1 or 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current] if text else []


def grid(sweeps: Sequence[Tuple[str, List[str]]]) -> List[Tuple[Tuple[str, Any], ...]]:
    """The cross product of every sweep's values: one tuple of ``(path, value)`` per point."""
    if not sweeps:
        return [()]
    paths = [path for path, _ in sweeps]
    if len(set(paths)) != len(paths):
        raise ValueError(f"--sweep: a field is swept twice ({', '.join(sorted(p for p in paths if paths.count(p) > 1))})")
    return [tuple(zip(paths, point)) for point in itertools.product(*(values for _, values in sweeps))]


def plan(comparison: ml_collections.ConfigDict, points: Sequence[Tuple[Tuple[str, Any], ...]] = ((),)) -> List[Trial]:
    """Every (run, sweep point, seed) of ``comparison`` as a Trial, runs in config order."""
    if not comparison.runs or not comparison.seeds:
        raise ValueError(f"the comparison has runs={len(comparison.runs)} and seeds={tuple(comparison.seeds)}; it needs at "
                         f"least one run and one seed (e.g. seeds=(0, 1, 2))")
    trials = []
    for run in comparison.runs:
        run = dict(run)
        unknown = set(run) - {"model", "name", "recipe", "overrides", "published"}
        if unknown or "model" not in run:
            raise ValueError(f"comparison run {run}: expected keys model (required), name, recipe, overrides, published")
        for point in points:
            for seed in comparison.seeds:
                trials.append(Trial(
                    name=run.get("name") or run["model"], model=run["model"], recipe=run.get("recipe") or "default",
                    seed=int(seed), overrides=tuple((run.get("overrides") or {}).items()), sweep=tuple(point),
                ))
    names = [t.directory for t in trials]
    if len(set(names)) != len(names):
        raise ValueError(f"two trials share a workdir ({next(n for n in names if names.count(n) > 1)}); give the runs distinct names")
    return trials


def trial_config(comparison: ml_collections.ConfigDict, trial: Trial) -> ml_collections.ConfigDict:
    """The training config of ``trial``: base, then the run's overrides, its model and seed, then the sweep point."""
    config = apply_overrides(comparison.base, [("model.name", trial.model), *trial.overrides])
    config = apply_overrides(config, [("training.seed", trial.seed), *trial.sweep])
    return config


def validate(comparison: ml_collections.ConfigDict, trials: Sequence[Trial]) -> None:
    """Builds every trial's config and checks its model name before anything runs (raises ValueError)."""
    import cnn.models

    known = set(cnn.models.names())
    for trial in trials:
        model = trial_config(comparison, trial).model.name
        if model not in known:
            close = difflib.get_close_matches(model, sorted(known), n=3)
            raise ValueError(f"unknown model {model!r} in run {trial.name!r}"
                             f"{'; did you mean ' + ', '.join(close) + '?' if close else ''}")
        config = trial_config(comparison, trial)
        overrides = dict(config.model.get("overrides", {}) or {})
        overrides.pop("num_classes", None)  # the engine refuses it with its own message
        cnn.models.create(model, num_classes=10, **overrides)  # unknown or mistyped model fields fail here


# ---------------------------------------------------------------- running


def run_trials(comparison: ml_collections.ConfigDict, trials: Sequence[Trial], workdir: Any, *,
               train: Optional[Callable[[Any, Any], dict]] = None, pictures: bool = True) -> List[dict]:
    """Trains every trial in turn (finished ones return at once, interrupted ones resume), then its pictures."""
    if train is None:
        train = train_and_evaluate
    results = []
    root = pathlib.Path(workdir) / "runs"
    for index, trial in enumerate(trials, 1):
        directory = root / trial.directory
        config = trial_config(comparison, trial)
        finished = runs.read_results(directory) is not None
        log.warning("[%d/%d] %s%s", index, len(trials), trial.directory, " (finished earlier)" if finished else "")
        results.append(train(config, directory))
        if pictures and not plots.pictures_done(directory):
            options = comparison.get("plots", {}) or {}
            plots.run_pictures(config, directory, layer=options.get("feature_layer", "") or "",
                               images=int(options.get("images", 4)), confusion_limit=options.get("confusion_limit") or None)
    return results


