"""A robustness report: accuracy under attack for several radii, as a markdown table, JSON and a PNG curve.

``write_report(result, directory)`` writes ``robustness.md``, ``robustness.json`` and
``accuracy_vs_eps.png`` for a result of ``robust_accuracy`` (plus the settings that produced it).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Dict


def markdown(result: Dict[str, Any]) -> str:
    """The table: one row per radius (0 is the clean accuracy), with the attack's settings above it."""
    settings = result.get("settings", {})
    described = ", ".join(f"{k}={v}" for k, v in settings.items())
    lines = [f"Robust accuracy on {result['examples']} test images ({described})", "",
             "| eps | accuracy |", "|---|---|", f"| 0 (clean) | {result['clean']:.2%} |"]
    lines += [f"| {eps:g} | {accuracy:.2%} |" for eps, accuracy in sorted(result["robust"].items())]
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Any) -> pathlib.Path:
    """Accuracy against eps, the clean accuracy at eps = 0."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    radii = [0.0] + sorted(result["robust"])
    accuracies = [result["clean"]] + [result["robust"][eps] for eps in radii[1:]]
    fig, axis = plt.subplots(figsize=(5, 3.6))
    axis.plot(radii, accuracies, marker="o")
    settings = result.get("settings", {})
    axis.set(xlabel=f"eps ({settings.get('norm', 'linf')}, pixels in [0, 1])", ylabel="top-1 accuracy", ylim=(0, 1.02),
             title=f"{settings.get('attack', 'attack')} on {result['examples']} test images")
    axis.grid(alpha=0.3)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(result: Dict[str, Any], directory: Any) -> Dict[str, pathlib.Path]:
    """``robustness.md``, ``robustness.json`` (radii as strings) and ``accuracy_vs_eps.png`` in ``directory``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = directory / "robustness.md"
    table.write_text(markdown(result))
    data = directory / "robustness.json"
    data.write_text(json.dumps({**result, "robust": {f"{k:g}": v for k, v in sorted(result["robust"].items())}},
                               indent=2) + "\n")
    return {"markdown": table, "json": data, "png": plot(result, directory / "accuracy_vs_eps.png")}
