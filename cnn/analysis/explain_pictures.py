"""PNG panels of explanations for a finished run: each test image next to its heat maps laid over it, with the
true class, the prediction and its confidence; misclassified images are chosen as well as correct ones.

``explanation_pictures(run, directory, ...)`` writes one ``<test index>_<correct|wrong>.png`` per image and
``index.json`` (file, index, label, prediction, confidence per image) into ``directory``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cnn.analysis.explain import check_methods, heat_maps
from cnn.analysis.plots import _pyplot, _save, _show_image


def choose_examples(run: Any, count: int, *, wrong: Optional[int] = None, limit: int = 10000,
                    batch_size: int = 500) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(test indices, images uint8, labels, probabilities [n, K])`` of ``count`` test images in test order:
    the first ``wrong`` misclassified ones (default half; fewer if the first ``limit`` images hold fewer) and
    the first correct ones for the rest."""
    wrong = count // 2 if wrong is None else min(wrong, count)
    chosen, wanted = {True: [], False: []}, {True: count, False: wrong}  # keyed by: correctly classified?
    offset = 0
    for images, labels in run.batches(batch_size, limit):
        probabilities = np.asarray(jax.nn.softmax(run.logits(images), axis=-1))
        for row, (image, label, probability) in enumerate(zip(images, labels, probabilities)):
            correct = bool(probability.argmax() == label)
            if len(chosen[correct]) < wanted[correct]:
                chosen[correct].append((offset + row, image, label, probability))
        offset += len(images)
        if len(chosen[True]) >= count and len(chosen[False]) >= wrong:
            break
    rows = chosen[False][:wrong]
    rows = sorted(rows + chosen[True][:count - len(rows)], key=lambda item: item[0])
    if not rows:
        raise ValueError("the run's test split is empty")
    indices, images, labels, probabilities = zip(*rows)
    return np.asarray(indices), np.stack(images), np.asarray(labels), np.stack(probabilities)


def _overlay(axis, image: np.ndarray, heat: np.ndarray, title: str) -> None:
    _show_image(axis, image)
    axis.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, interpolation="bilinear")
    axis.set_title(title, fontsize=9)
    axis.axis("off")


def plot_explanation(image: np.ndarray, maps: dict, path: Any, title: str) -> pathlib.Path:
    """One row: the image, then each ``{method: [H, W] map in [0, 1]}`` laid over it."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.4 * (1 + len(maps)), 2.8))
    _show_image(axes[0], image)
    axes[0].set_title("image", fontsize=9)
    axes[0].axis("off")
    for axis, (method, heat) in zip(axes[1:], maps.items()):
        _overlay(axis, image, heat, method.replace("_", " "))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def explanation_pictures(run: Any, directory: Any, *, count: int = 8, methods: Sequence[str] = ("grad_cam",),
                         key: jax.Array, layer: Optional[str] = None, limit: int = 10000) -> List[dict]:
    """Writes one panel per chosen test image (see ``choose_examples``) into ``directory`` and ``index.json``;
    returns the index records. Maps explain the predicted class; integrated gradients start from a black image."""
    methods = check_methods(methods)
    if run.normalize is None:
        raise ValueError("the loaded run has no differentiable normalisation (LoadedRun.normalize)")
    indices, images, labels, probabilities = choose_examples(run, count, limit=limit)
    inputs = run.normalize(jnp.asarray(images, jnp.float32))
    options = {"integrated_gradients": {"baseline": run.normalize(jnp.zeros_like(jnp.asarray(images, jnp.float32)))}}
    maps = {method: np.asarray(heat_maps(method, run.model, run.variables, inputs, key=jax.random.fold_in(key, i),
                                         layer=layer if method.startswith("grad_cam") else None,
                                         **options.get(method, {})))
            for i, method in enumerate(methods)}
    directory = pathlib.Path(directory)
    records = []
    for row, (index, image, label, probability) in enumerate(zip(indices, images, labels, probabilities)):
        predicted = int(probability.argmax())
        kind = "correct" if predicted == label else "wrong"
        name = f"{index:05d}_{kind}.png"
        title = (f"test image {index}: true {run.class_names[label]}, predicted {run.class_names[predicted]} "
                 f"({probability[predicted]:.1%})")
        plot_explanation(image, {method: maps[method][row] for method in methods}, directory / name, title)
        records.append({"file": name, "index": int(index), "label": int(label), "predicted": predicted,
                        "confidence": float(probability[predicted]), "correct": kind == "correct"})
    (directory / "index.json").write_text(json.dumps({"methods": methods, "images": records}, indent=2) + "\n")
    return records
