r"""Explanation panels for a finished run: test images (correct and misclassified) with their heat maps.

python -m experiments.explain --workdir runs/mnist [--images 8] [--method grad_cam,integrated_gradients]

Reads the run's config.json and newest checkpoint (``cnn.analysis.runs.load_run``); writes one PNG per
image (the image, each method's map laid over it, the true class, the prediction and its confidence)
and index.json into RUN/plots/explain/. Half the images are misclassified ones where the first 10,000
test images hold enough. Methods: grad_cam, grad_cam_plus_plus, vanilla_gradients, smoothgrad,
integrated_gradients, occlusion (docs/explain.md).

Exit status: 0 done, 2 bad input (one line "error: ..." on stderr).
"""

import pathlib

import jax
from absl import app, flags, logging

from experiments import cli

flags.DEFINE_string("workdir", None, "A finished run's folder (config.json, checkpoints/).")
flags.DEFINE_integer("images", 8, "Test images to explain (half of them misclassified where possible).")
flags.DEFINE_string("method", "grad_cam,integrated_gradients", "Comma-separated explanation methods.")
flags.DEFINE_string("layer", None, "Feature map of the Grad-CAM methods (a module path); default: the last one.")
flags.DEFINE_integer("seed", 0, "Seed of SmoothGrad's noise.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_positional(argv, "--images 8")
    logging.set_verbosity(logging.WARNING)
    from cnn.analysis import explain, explain_pictures

    try:
        methods = explain.check_methods(FLAGS.method)
    except ValueError as error:
        cli.fail(f"--method={FLAGS.method}: {error}")
    if FLAGS.images < 1:
        cli.fail(f"--images={FLAGS.images}: expected a positive number of test images")
    run = cli.load_finished_run(FLAGS.workdir)
    workdir = pathlib.Path(FLAGS.workdir)
    try:
        records = explain_pictures.explanation_pictures(run, workdir / "plots" / "explain", count=FLAGS.images,
                                                        methods=methods, key=jax.random.key(FLAGS.seed), layer=FLAGS.layer)
    except (ValueError, FileNotFoundError) as error:
        cli.fail(cli.first_line(error))
    wrong = sum(not r["correct"] for r in records)
    print(f"{len(records)} panels ({wrong} misclassified) of {', '.join(methods)} in {workdir / 'plots' / 'explain'}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
