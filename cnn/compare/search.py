"""Bayesian (optuna TPE) or random search over config ranges; each trial is a normal comparison trial.

``--search "optimizer.learning_rate=log:1e-4:1e-1"`` (also ``float:LOW:HIGH``, ``int:LOW:HIGH``,
``choice:A,B,C``). optuna samples a point; every (run, seed) of the comparison trains at that point
in its own workdir (named from the sampled values, rounded to 4 significant digits so the name is the
value); the mean test accuracy over them is the trial's objective. The study lives in
``DIR/search.journal``: running the command again goes on where it stopped, a trial cut off midway is
asked again with the same values, so its runs resume from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from cnn import compare
from cnn.compare.trials import split_values

log = logging.getLogger(__name__)
ALGORITHMS = ("tpe", "random")
KINDS = ("log", "float", "int", "choice")


@dataclasses.dataclass(frozen=True)
class Range:
    path: str
    kind: str  # log | float | int | choice
    low: float = 0.0
    high: float = 0.0
    choices: Tuple[str, ...] = ()


def parse_range(text: str) -> Range:
    """``"optimizer.learning_rate=log:1e-4:1e-1"`` -> Range; a malformed one is a ValueError saying the syntax."""
    path, equals, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    usage = (f"--search {text!r}: expected FIELD=KIND:..., KIND one of log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH, "
             f"choice:A,B,...; e.g. optimizer.learning_rate=log:1e-4:1e-1")
    if not equals or not path.strip() or kind not in KINDS or not rest:
        raise ValueError(usage)
    if kind == "choice":
        return Range(path.strip(), kind, choices=tuple(c.strip() for c in split_values(rest)))
    try:
        low, high = (float(v) for v in rest.split(":"))
    except ValueError:
        raise ValueError(usage) from None
    if not low < high or (kind == "log" and low <= 0):
        raise ValueError(f"--search {text!r}: need LOW < HIGH{' and LOW > 0 on a log scale' if kind == 'log' else ''}")
    return Range(path.strip(), kind, low, high)


def _suggest(trial, spec: Range) -> Any:
    if spec.kind == "choice":
        return trial.suggest_categorical(spec.path, list(spec.choices))
    if spec.kind == "int":
        return trial.suggest_int(spec.path, int(spec.low), int(spec.high))
    value = trial.suggest_float(spec.path, spec.low, spec.high, log=spec.kind == "log")
    return float(f"{value:.4g}")


def _sampler(algorithm: str, seed: int):
    import optuna

    if algorithm not in ALGORITHMS:
        raise ValueError(f"--search-algorithm={algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
    return optuna.samplers.RandomSampler(seed=seed)


def search(comparison: Any, workdir: Any, ranges: Sequence[str], *, trials: int, algorithm: str = "tpe", seed: int = 0,
           train: Optional[Callable[[Any, Any], dict]] = None) -> List[dict]:
    """Runs the study to ``trials`` finished trials, writes the comparison report; returns its rows."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    specs = [parse_range(r) for r in ranges]
    if trials < 1:
        raise ValueError(f"--trials={trials}; expected at least 1")
    _sampler(algorithm, seed)  # a bad algorithm name fails here, before anything runs
    # Every field must exist before anything runs: try the comparison at each range's low end.
    probe = [(s.path, s.choices[0] if s.kind == "choice" else (int(s.low) if s.kind == "int" else s.low)) for s in specs]
    for text, field in zip(ranges, probe):
        try:
            compare.apply_overrides(comparison.base, [field])
        except ValueError as error:
            raise ValueError(f"--search {text}: {error}") from None
    compare.validate(comparison, compare.plan(comparison, [tuple(probe)]))

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(workdir / "search.journal")))
    study = optuna.create_study(storage=storage, study_name="compare", direction="maximize", load_if_exists=True)
    study.sampler = _sampler(algorithm, seed + len(study.trials))  # a resumed study does not redraw its first points
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)  # cut off earlier: ask it again
        study.enqueue_trial(frozen.params)
    all_trials: List[compare.Trial] = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        all_trials += compare.plan(comparison, [_point(specs, frozen.params)])

    def done() -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    while done() < trials:
        trial = study.ask()
        point = tuple((s.path, _suggest(trial, s)) for s in specs)
        planned = compare.plan(comparison, [point])
        log.warning("search trial %d: %s", trial.number, compare.sweep_name(point))
        results = compare.run_trials(comparison, planned, workdir, train=train)
        accuracies = [r["test_accuracy"] for r in results]
        objective = float(np.mean(accuracies))
        study.tell(trial, objective if math.isfinite(objective) else None,
                   state=None if math.isfinite(objective) else optuna.trial.TrialState.FAIL)
        all_trials += planned

    trial_rows, groups = compare.collect(comparison, _unique(all_trials), workdir)
    compare.write_report(workdir, trial_rows, groups, title=comparison.get("title", ""))
    _write_study(workdir, study)
    return groups


def _point(specs: Sequence[Range], params: dict) -> Tuple[Tuple[str, Any], ...]:
    return tuple((s.path, float(f"{params[s.path]:.4g}") if s.kind in ("log", "float") else params[s.path]) for s in specs)


def _unique(trials: Sequence[compare.Trial]) -> List[compare.Trial]:
    seen, unique = set(), []
    for trial in trials:
        if trial.directory not in seen:
            seen.add(trial.directory)
            unique.append(trial)
    return unique


def _write_study(workdir: pathlib.Path, study) -> None:
    """``search.csv``: every optuna trial, its values, objective and state, in order."""
    lines = ["number,state,objective," + ",".join(sorted({k for t in study.trials for k in t.params}))]
    keys = lines[0].split(",")[3:]
    for t in study.trials:
        values = [str(t.params.get(k, "")) for k in keys]
        lines.append(f"{t.number},{t.state.name},{'' if t.value is None else t.value}," + ",".join(values))
    (workdir / "search.csv").write_text("\n".join(lines) + "\n")
