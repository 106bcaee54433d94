"""The two explanation benchmarks, end to end on digit arrays: the pointing game on cluttered digits and the
sanity checks (cascading model randomisation, shuffled labels). ``experiments/explain_localisation.py``
and ``experiments/explain_sanity.py`` call them with their flags and print the tables.

Both fit their models with ``cnn.analysis.fit`` (a few thousand Adam steps on the CPU).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import cnn.models
from cnn.analysis import localisation, sanity
from cnn.analysis.explain import check_methods, heat_maps
from cnn.analysis.fit import fit_classifier

# Options of the slower methods in both benchmarks (the defaults of ``heat_maps`` otherwise).
METHOD_OPTIONS = {"smoothgrad": {"samples": 16}, "integrated_gradients": {"steps": 16}, "occlusion": {"window": 8, "stride": 4}}


def _pixels(images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32) / 255.0


LOCALISATION_MODEL = dict(name="resnet18", stage_sizes=(2,), widths=(48,), stem_width=24)


def localisation_model(num_classes: int = 10):
    """A small residual network whose last feature map is 1/4 of the input (16x16 on a 64x64 canvas, each
    position seeing 43 pixels): an ImageNet-style stem (7x7/2 conv, 3x3/2 max pool), one stage of two basic
    blocks, global average pooling. Grad-CAM's resolution is the last feature map's: at 1/8 (8x8) its peak
    missed narrow digits such as ones by a pixel or two (docs/results.md, "Explanations")."""
    fields = {k: v for k, v in LOCALISATION_MODEL.items() if k != "name"}
    return cnn.models.create(LOCALISATION_MODEL["name"], num_classes=num_classes, **fields)


def all_maps(model, variables, images: np.ndarray, methods: Sequence[str], key: jax.Array, *, target: Any = None,
             batch_size: int = 100) -> Dict[str, np.ndarray]:
    """``{method: [N, H, W] maps in [0, 1]}`` of uint8 ``images`` (pixels / 255 are the model inputs), in batches."""
    maps = {}
    for method in methods:
        parts = []
        for start in range(0, len(images), batch_size):
            batch = _pixels(jnp.asarray(images[start:start + batch_size]))
            batch_target = None if target is None else jnp.asarray(target[start:start + batch_size])
            parts.append(np.asarray(heat_maps(method, model, variables, batch, key=jax.random.fold_in(key, start),
                                              target=batch_target, **METHOD_OPTIONS.get(method, {}))))
        maps[method] = np.concatenate(parts)
    return maps


def pointing_game_benchmark(train_digits: np.ndarray, train_labels: np.ndarray, test_digits: np.ndarray,
                            test_labels: np.ndarray, key: jax.Array, *, methods: Sequence[str], train_count: int = 60000,
                            test_count: int = 500, steps: int = 4000, batch_size: int = 64, learning_rate: float = 2e-3,
                            canvas: int = 64, fragments: int = 8,
                            report: Optional[Callable[[int, float, float], None]] = None) -> Dict[str, Any]:
    """Fits ``localisation_model`` on cluttered training digits and plays the pointing game on cluttered test
    digits (digits of the test split) for every method, the canvas centre and a random point. The maps
    explain the true class (as in Zhang et al. 2016), whatever the model predicts."""
    methods = check_methods(methods)
    data_key, fit_key, map_key = jax.random.split(key, 3)
    train_key, test_key = jax.random.split(data_key)
    train_images, train_targets, _ = localisation.cluttered_digits(
        train_key, jnp.asarray(train_digits), jnp.asarray(train_labels), count=train_count, canvas=canvas, fragments=fragments)
    test_images, test_targets, boxes = (np.asarray(a) for a in localisation.cluttered_digits(
        test_key, jnp.asarray(test_digits), jnp.asarray(test_labels), count=test_count, canvas=canvas, fragments=fragments))
    model = localisation_model(int(np.max(train_labels)) + 1)
    start = time.time()
    fitted = fit_classifier(model, np.asarray(train_images), np.asarray(train_targets), fit_key, steps=steps,
                            batch_size=batch_size, learning_rate=learning_rate, transform=_pixels, report=report)
    train_seconds = time.time() - start
    test_accuracy = fitted.accuracy(np.asarray(_pixels(jnp.asarray(test_images))), test_targets)
    start = time.time()
    maps = all_maps(model, fitted.variables, test_images, methods, map_key, target=test_targets)
    rates = {method: float(np.mean(localisation.pointing_game(m, boxes))) for method, m in maps.items()}
    rates["centre (baseline)"] = float(np.mean(localisation.centre_hits(boxes, (canvas, canvas))))
    rates["random point (baseline)"] = float(np.mean(localisation.area_fractions(boxes, (canvas, canvas))))
    return {
        "pointing_game": rates,
        "test_accuracy": test_accuracy,
        "train_final_loss": fitted.losses[-1],
        "train_seconds": train_seconds,
        "map_seconds": time.time() - start,
        "mean_box_area_fraction": rates["random point (baseline)"],
        "settings": dict(train_count=train_count, test_count=test_count, steps=steps, batch_size=batch_size,
                         learning_rate=learning_rate, canvas=canvas, fragments=fragments, model=LOCALISATION_MODEL,
                         method_options=METHOD_OPTIONS),
    }


def _summary(values: np.ndarray) -> Dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def sanity_benchmark(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                     key: jax.Array, *, methods: Sequence[str], model_name: str = "simple_cnn", steps: int = 1500,
                     shuffled_count: int = 5000, shuffled_steps: int = 4000, batch_size: int = 128,
                     learning_rate: float = 1e-3, test_count: int = 200,
                     report: Optional[Callable[[int, float, float], None]] = None) -> Dict[str, Any]:
    """Adebayo et al.'s checks on ``model_name`` fitted to uint8 digits ``[M, H, W, C]``.

    Maps explain the trained model's predicted class on ``test_count`` test images, for every model
    compared. Returns, per method, the Spearman correlation with the trained model's map after each
    cascading randomisation step and for the model fitted to shuffled labels (on ``shuffled_count``
    training images, long enough to memorise them), and the edge-map threshold.
    """
    methods = check_methods(methods)
    fit_key, shuffle_key, shuffled_fit_key, random_key, map_key = jax.random.split(key, 5)
    num_classes = int(np.max(train_labels)) + 1
    model = cnn.models.create(model_name, num_classes=num_classes)
    trained = fit_classifier(model, train_images, train_labels, fit_key, steps=steps, batch_size=batch_size,
                             learning_rate=learning_rate, transform=_pixels, report=report)
    images = test_images[:test_count]
    inputs = np.asarray(_pixels(jnp.asarray(images)))
    accuracy = trained.accuracy(np.asarray(_pixels(jnp.asarray(test_images))), test_labels)
    target = trained.logits(inputs).argmax(-1)
    original = all_maps(model, trained.variables, images, methods, map_key, target=target)
    edges = sanity.edge_maps(inputs)
    result: Dict[str, Any] = {
        "test_accuracy": accuracy,
        "threshold": {m: _summary(sanity.spearman(original[m], edges)) for m in methods},
        "cascading": [],
    }
    for layer, variables in sanity.cascading_randomisation(model, trained.variables, random_key, jnp.asarray(inputs[:1])):
        maps = all_maps(model, variables, images, methods, map_key, target=target)
        result["cascading"].append({"randomised_down_to": layer,
                                    **{m: _summary(sanity.spearman(original[m], maps[m])) for m in methods}})

    rows = np.asarray(jax.random.permutation(shuffle_key, len(train_labels))[:shuffled_count])
    shuffled_labels = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, 1), train_labels[rows]))
    shuffled = fit_classifier(model, train_images[rows], shuffled_labels, shuffled_fit_key, steps=shuffled_steps,
                              batch_size=batch_size, learning_rate=learning_rate, transform=_pixels, report=report)
    maps = all_maps(model, shuffled.variables, images, methods, map_key, target=target)
    result["shuffled_labels"] = {
        "train_accuracy": shuffled.accuracy(np.asarray(_pixels(jnp.asarray(train_images[rows]))), shuffled_labels),
        "test_accuracy": shuffled.accuracy(np.asarray(_pixels(jnp.asarray(test_images))), test_labels),
        **{m: _summary(sanity.spearman(original[m], maps[m])) for m in methods},
    }
    result["settings"] = dict(model=model_name, steps=steps, shuffled_count=shuffled_count, shuffled_steps=shuffled_steps,
                              batch_size=batch_size, learning_rate=learning_rate, test_count=test_count,
                              method_options=METHOD_OPTIONS)
    return result
