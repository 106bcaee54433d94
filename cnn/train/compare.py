"""Architecture comparisons and sweeps: plan the trials, run each as a normal training run, tabulate.

A comparison config (``experiments/configs/compare_*.py``) holds ``base`` (a training config),
``runs`` (a list of ``dict(model=..., name=..., recipe=..., overrides={"dotted.field": value})``),
``seeds`` and ``plots`` (``feature_layer``, ``images``). Every (run, sweep point, seed) is a *trial*:
a training run with its own workdir ``DIR/runs/<name>-<recipe>[-<sweep>]-seed<k>/``, trained by
``cnn.train.loop.train_and_evaluate``, which returns at once for a finished run and resumes an
interrupted one from its checkpoint. ``write_report`` then writes ``results.csv``/``results.md``
(one row per run and sweep point, accuracy as mean ± std over seeds), ``trials.csv`` and the plots.
"""

from __future__ import annotations

import ast
import copy
import csv
import dataclasses
import difflib
import itertools
import logging
import math
import pathlib
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np

from cnn.analysis import plots, runs
from cnn.train.fields import not_a_field

log = logging.getLogger(__name__)
COMPARISON_PLOTS = ("accuracy_vs_params.png", "accuracy_vs_flops.png", "training_curves.png")


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


# ---------------------------------------------------------------- overrides


def _convert(current: Any, value: Any, path: str) -> Any:
    """``value`` (a command-line string, or already typed) as the type of the field's ``current`` value."""
    if not isinstance(value, str) or isinstance(current, str):
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # ConfigDict keeps a float field a float
        return value
    try:
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return value.lower() in ("true", "1")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, (tuple, list)):
            parsed = ast.literal_eval(value)
            return tuple(parsed) if isinstance(parsed, (tuple, list)) else (parsed,)
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"{path}={value}: {path} takes {type(current).__name__} values like {current!r} ({error})") from None
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[Tuple[str, Any]]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with each ``(dotted.path, value)`` set; an unknown field is a ValueError naming it."""
    config = copy.deepcopy(config)
    with config.unlocked():
        for path, value in overrides:
            missing = not_a_field(config, path, open_groups=("model.overrides",))
            if missing:
                raise ValueError(missing)
            *parents, leaf = path.split(".")
            node = config
            for part in parents:
                node = node[part]
            current = node[leaf] if leaf in node else None
            node[leaf] = _convert(current, value, path)
    return config


# ---------------------------------------------------------------- planning


def parse_sweep(text: str) -> Tuple[str, List[str]]:
    """``"optimizer.learning_rate=0.1,0.03"`` -> ``("optimizer.learning_rate", ["0.1", "0.03"])``."""
    path, equals, values = text.partition("=")
    items = [v.strip() for v in _split_values(values)]
    if not equals or not path.strip() or not items or any(not v for v in items):
        raise ValueError(f"--sweep {text!r}: expected FIELD=VALUE,VALUE,..., e.g. optimizer.learning_rate=0.1,0.03,0.01")
    return path.strip(), items


def _split_values(text: str) -> List[str]:
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
        from cnn.train.loop import train_and_evaluate as train
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


# ---------------------------------------------------------------- results


def _model_cost(config: ml_collections.ConfigDict, image_shape: Tuple[int, ...], num_classes: int) -> Tuple[int, float]:
    import jax.numpy as jnp

    import cnn.analysis
    import cnn.models

    overrides = dict(config.model.get("overrides", {}) or {})
    model = cnn.models.create(config.model.name, num_classes=num_classes, **{**overrides, "dtype": jnp.float32})
    measured = cnn.analysis.summary(model, image_shape)
    return measured.params, measured.flops


def collect(comparison: ml_collections.ConfigDict, trials: Sequence[Trial], workdir: Any) -> Tuple[List[dict], List[dict]]:
    """``(trial rows, group rows)`` from every finished trial's results.json and metrics.jsonl."""
    import cnn.data

    root = pathlib.Path(workdir) / "runs"
    trial_rows, costs = [], {}
    for trial in trials:
        directory = root / trial.directory
        result = runs.read_results(directory)
        if result is None:
            continue
        config = trial_config(comparison, trial)
        if trial.group not in costs:
            data = config.data
            test = cnn.data.source(data.name, data.get("test_split", "test"), data_dir=data.get("data_dir") or None,
                                   prepared_dir=data.get("prepared_dir") or None, **dict(data.get("options", {}) or {}))
            costs[trial.group] = _model_cost(config, test.image_shape, test.num_classes)
        params, flops = costs[trial.group]
        trial_rows.append(dict(
            trial=trial.directory, group=trial.group, label=trial.name, model=trial.model, recipe=trial.recipe,
            sweep=sweep_name(trial.sweep), seed=trial.seed, params=params, flops=flops,
            test_accuracy=result["test_accuracy"], test_loss=result["test_loss"], steps=result["steps"],
            epochs=result.get("epochs"), train_seconds=result["train_seconds"],
            resumed_from_step=result.get("resumed_from_step", 0),
            images_per_second=runs.images_per_second(runs.read_metrics(directory)),
        ))
    published = {dict(r).get("name") or dict(r)["model"]: dict(r).get("published", "") for r in comparison.runs}
    groups = []
    for group, members in itertools.groupby(trial_rows, key=lambda r: r["group"]):
        members = list(members)
        accuracies = np.asarray([m["test_accuracy"] for m in members])
        first = members[0]
        groups.append(dict(
            group=group, name=first["label"], label=first["group"] if first["sweep"] else first["label"], model=first["model"],
            recipe=first["recipe"], sweep=first["sweep"], params=first["params"], flops=first["flops"],
            accuracy_mean=float(accuracies.mean()), accuracy_std=float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
            seeds=len(members), epochs=first["epochs"],
            train_seconds=float(np.mean([m["train_seconds"] for m in members])),
            resumed=any(m["resumed_from_step"] for m in members),
            images_per_second=float(np.nanmean([m["images_per_second"] for m in members])),
            published=published.get(first["label"], ""),
        ))
    return trial_rows, groups


def _write_csv(path: pathlib.Path, rows: List[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(path)


def markdown_table(groups: List[dict]) -> str:
    """The results table: model, params, FLOPs, test accuracy mean ± std, train time, images/s."""
    show_sweep = any(g["sweep"] for g in groups)
    show_published = any(g["published"] for g in groups)
    header = ["model", "recipe"] + (["sweep"] if show_sweep else []) + [
        "params", "FLOPs / image", "test accuracy (ours)", "seeds", "epochs", "train time / run", "images/s"]
    header += ["published"] if show_published else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        accuracy = f"{100 * g['accuracy_mean']:.2f} ± {100 * g['accuracy_std']:.2f}%"
        cells = [f"`{g['name']}`" + (f" ({g['model']})" if g["model"] != g["name"] else ""), g["recipe"]]
        cells += [g["sweep"]] if show_sweep else []
        cells += [f"{g['params']:,}", _flops_text(g["flops"]), accuracy, str(g["seeds"]),
                  f"{g['epochs']:g}" if g["epochs"] is not None else "", f"{g['train_seconds']:.0f} s" + (" *" if g["resumed"] else ""),
                  f"{g['images_per_second']:,.0f}" if math.isfinite(g["images_per_second"]) else ""]
        cells += [g["published"] or ""] if show_published else []
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Test accuracy: mean ± standard deviation over seeds (ours, measured by this command). "
             "FLOPs: forward, per image, a multiply-add counted as 2 (`cnn.analysis.summary`). "
             "Train time: the mean over seeds of `train_seconds` in results.json; images/s: the median logged training throughput."]
    if any(g["resumed"] for g in groups):
        notes.append("* resumed: the time counts the last invocation only.")
    if show_published:
        notes.append("published: the figure reported by the source named in the config, not run here.")
    return "\n".join(lines + notes) + "\n"


def _flops_text(flops: float) -> str:
    return f"{flops / 1e9:.2f} G" if flops >= 1e9 else f"{flops / 1e6:.2f} M"


def write_report(workdir: Any, trial_rows: List[dict], groups: List[dict], title: str = "") -> List[pathlib.Path]:
    """results.csv, results.md, trials.csv and the three comparison plots in ``workdir``."""
    workdir = pathlib.Path(workdir)
    written = [workdir / "results.csv", workdir / "trials.csv", workdir / "results.md"]
    _write_csv(written[0], groups)
    _write_csv(written[1], trial_rows)
    body = (f"# {title}\n\n" if title else "") + markdown_table(groups) + "\nPlots: " + ", ".join(
        f"[{name}]({name})" for name in COMPARISON_PLOTS) + "; per run: `runs/<trial>/plots/`.\n"
    tmp = written[2].with_name("results.md.tmp")
    tmp.write_text(body)
    tmp.replace(written[2])
    written.append(plots.plot_accuracy_against(groups, "params", workdir / COMPARISON_PLOTS[0], "parameters"))
    written.append(plots.plot_accuracy_against(groups, "flops", workdir / COMPARISON_PLOTS[1], "forward FLOPs per image"))
    curves: Dict[str, List[List[dict]]] = {}
    labels = {g["group"]: g["label"] for g in groups}
    for row in trial_rows:
        curves.setdefault(labels[row["group"]], []).append(runs.read_metrics(workdir / "runs" / row["trial"]))
    written.append(plots.plot_training_curves(curves, workdir / COMPARISON_PLOTS[2]))
    return written


def compare(comparison: ml_collections.ConfigDict, workdir: Any, *, sweeps: Sequence[str] = (),
            train: Optional[Callable[[Any, Any], dict]] = None) -> List[dict]:
    """Validates, runs every trial (a grid over ``sweeps``), writes the report; returns the table's rows."""
    parsed = [parse_sweep(s) for s in sweeps]
    for text, (path, values) in zip(sweeps, parsed):
        for value in values:
            try:
                apply_overrides(comparison.base, [(path, value)])
            except ValueError as error:
                raise ValueError(f"--sweep {text}: {error}") from None
    points = grid(parsed)
    trials = plan(comparison, points)
    validate(comparison, trials)  # every mistake surfaces before the first run starts
    run_trials(comparison, trials, workdir, train=train)
    trial_rows, groups = collect(comparison, trials, workdir)
    write_report(workdir, trial_rows, groups, title=comparison.get("title", ""))
    return groups
