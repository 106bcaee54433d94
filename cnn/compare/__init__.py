"""Architecture comparisons and sweeps above the training engine: plan the trials, run each as a normal
training run, tabulate. ``compare(comparison, workdir, sweeps=...)`` runs a comparison (a grid over the
sweeps); ``cnn.compare.search.search`` an optuna search. See docs/compare.md.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import ml_collections

from cnn.compare.fields import apply_overrides, not_a_field
from cnn.compare.report import COMPARISON_PLOTS, collect, markdown_table, write_report
from cnn.compare.trials import Trial, grid, parse_sweep, plan, run_trials, sweep_name, trial_config, validate

__all__ = ["COMPARISON_PLOTS", "Trial", "apply_overrides", "collect", "compare", "grid", "markdown_table",
           "not_a_field", "parse_sweep", "plan", "run_trials", "sweep_name", "trial_config", "validate", "write_report"]


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
