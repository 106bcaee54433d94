"""A comparison's results: every finished trial collected, grouped over seeds, and written as
``results.csv``, ``results.md`` (one row per run and sweep point, accuracy as mean ± std over seeds),
``trials.csv`` and the comparison plots."""

from __future__ import annotations

import csv
import itertools
import math
import pathlib
from typing import Any, Dict, List, Sequence, Tuple

import ml_collections
import numpy as np

from cnn.analysis import plots, runs
from cnn.compare.trials import Trial, sweep_name, trial_config

COMPARISON_PLOTS = ("accuracy_vs_params.png", "accuracy_vs_flops.png", "training_curves.png")


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
             "FLOPs: forward, per image, 2 x the multiply-adds of convolutions and matrix products "
             "(`cnn.analysis.summary(...).flops`, the published convention). "
             "Train time: the mean over seeds of `train_seconds` in results.json; images/s: the median logged training throughput."]
    if any(g["resumed"] for g in groups):
        notes.append("* resumed: the time counts the last invocation only.")
    if show_published:
        notes.append("published: the figure reported by the source named in the config, not run here.")
    return "\n".join(lines + notes) + "\n"


def _flops_text(flops: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f}"


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


