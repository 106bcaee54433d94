r"""The pointing game on cluttered MNIST: does each explanation's peak fall on the digit?

python -m experiments.explain_localisation --output=docs/benchmarks/explain_localisation.json

A digit pasted at a random position of a 64x64 canvas with fragments of other digits' strokes; a small
residual network (16x16 last feature map) fitted to it (``cnn.analysis.benchmarks.localisation_model``); for test canvases built
from MNIST's test digits, the share whose heat-map peak lies inside the digit's box, for each method,
against a map peaking at the centre and a uniformly random point (the box's area fraction). Needs the
MNIST files (CNN_DATA_DIR). Prints a markdown table and writes JSON. docs/results.md, "Explanations".
"""

import json
import pathlib

import jax
import numpy as np
from absl import app, flags, logging

from experiments import cli

flags.DEFINE_string("output", None, "JSON file to write (the table is printed too).")
flags.DEFINE_string("methods", "grad_cam,grad_cam_plus_plus,vanilla_gradients,smoothgrad,integrated_gradients,occlusion",
                    "Comma-separated explanation methods.")
flags.DEFINE_integer("train", 60000, "Training canvases (from MNIST's training digits).")
flags.DEFINE_integer("test", 500, "Test canvases (from MNIST's test digits).")
flags.DEFINE_integer("steps", 4000, "Adam steps.")
flags.DEFINE_integer("batch_size", 64, "Canvases per step.")
flags.DEFINE_integer("fragments", 8, "Clutter fragments per canvas.")
flags.DEFINE_integer("seed", 0, "Seed of the canvases, the fit and SmoothGrad's noise.")
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_positional(argv, "--steps 1000")
    logging.set_verbosity(logging.WARNING)
    import cnn.data
    from cnn.analysis import benchmarks, explain

    try:
        methods = explain.check_methods(FLAGS.methods)
    except ValueError as error:
        cli.fail(f"--methods={FLAGS.methods}: {error}")
    cli.require_positive(FLAGS, ("train", "test", "steps", "batch_size"))
    train = cnn.data.in_memory(cnn.data.source("mnist", "train"))
    test = cnn.data.in_memory(cnn.data.source("mnist", "test"))
    result = benchmarks.pointing_game_benchmark(
        train.images, train.labels, test.images, test.labels, jax.random.key(FLAGS.seed), methods=methods,
        train_count=FLAGS.train, test_count=FLAGS.test, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
        fragments=FLAGS.fragments, report=cli.print_fit_progress)
    print(f"test accuracy {result['test_accuracy']:.4f} on {FLAGS.test} cluttered canvases; "
          f"mean box area {result['mean_box_area_fraction']:.1%} of the canvas\n")
    print("| method | pointing game |\n|---|---|")
    for method, rate in result["pointing_game"].items():
        print(f"| {method} | {rate:.1%} |")
    path = pathlib.Path(FLAGS.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=lambda x: np.asarray(x).tolist()) + "\n")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
