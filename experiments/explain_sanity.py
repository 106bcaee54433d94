r"""The sanity checks of Adebayo et al. 2018 on MNIST: do the maps change when the model does?

python -m experiments.explain_sanity --output=docs/benchmarks/explain_sanity.json

Fits the seed's network (simple_cnn) to MNIST, then compares, for each method, its maps of test images
with the maps after re-initialising the layers one by one from the output down (cascading model
randomisation), and with the maps of the same network fitted to shuffled labels (data randomisation),
by Spearman rank correlation. The threshold is model-free: the correlation of the trained model's maps
with the Sobel edges of the input (``cnn.analysis.sanity``). Needs the MNIST files (CNN_DATA_DIR).
Prints markdown tables and writes JSON. docs/results.md, "Explanations".
"""

import json
import pathlib

import jax
from absl import app, flags, logging

from experiments import cli

flags.DEFINE_string("output", None, "JSON file to write (the tables are printed too).")
flags.DEFINE_string("methods", "grad_cam,grad_cam_plus_plus,vanilla_gradients,smoothgrad,integrated_gradients,occlusion",
                    "Comma-separated explanation methods.")
flags.DEFINE_string("model", "simple_cnn", "A zoo model that takes 28x28x1 inputs.")
flags.DEFINE_integer("steps", 1500, "Adam steps of the model fitted to the true labels.")
flags.DEFINE_integer("shuffled", 5000, "Training images of the model fitted to shuffled labels.")
flags.DEFINE_integer("shuffled_steps", 4000, "Adam steps of the model fitted to shuffled labels.")
flags.DEFINE_integer("images", 200, "Test images whose maps are compared.")
flags.DEFINE_integer("seed", 0, "Seed of the fits, the re-initialisation and SmoothGrad's noise.")
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS


def _cell(summary: dict, threshold: float) -> str:
    mark = "" if summary["mean"] < threshold else " (not below)"
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}{mark}"


def main(argv):
    cli.no_positional(argv, "--steps 1000")
    logging.set_verbosity(logging.WARNING)
    import cnn.data
    import cnn.models
    from cnn.analysis import benchmarks, explain

    try:
        methods = explain.check_methods(FLAGS.methods)
        cnn.models.entry(FLAGS.model)
    except ValueError as error:
        cli.fail(error)
    cli.require_positive(FLAGS, ("steps", "shuffled", "shuffled_steps", "images"))
    train = cnn.data.in_memory(cnn.data.source("mnist", "train"))
    test = cnn.data.in_memory(cnn.data.source("mnist", "test"))
    result = benchmarks.sanity_benchmark(
        train.images, train.labels, test.images, test.labels, jax.random.key(FLAGS.seed), methods=methods,
        model_name=FLAGS.model, steps=FLAGS.steps, shuffled_count=FLAGS.shuffled, shuffled_steps=FLAGS.shuffled_steps,
        test_count=FLAGS.images, report=cli.print_fit_progress)
    thresholds = {m: result["threshold"][m]["mean"] for m in methods}
    print(f"{FLAGS.model}: test accuracy {result['test_accuracy']:.4f}; Spearman rank correlation with the trained "
          f"model's maps (mean ± std over {FLAGS.images} test images)\n")
    print("| compared with | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods))
    print("| Sobel edges of the input (threshold) | " + " | ".join(f"{thresholds[m]:.2f}" for m in methods) + " |")
    for row in result["cascading"]:
        print(f"| randomised down to {row['randomised_down_to']} | "
              + " | ".join(_cell(row[m], thresholds[m]) for m in methods) + " |")
    shuffled = result["shuffled_labels"]
    print(f"| fitted to shuffled labels (train accuracy {shuffled['train_accuracy']:.2f}) | "
          + " | ".join(_cell(shuffled[m], thresholds[m]) for m in methods) + " |")
    path = pathlib.Path(FLAGS.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
