r"""Accuracy of a finished run under adversarial attack, for several radii.

python -m experiments.robustness --workdir runs/mnist --eps 0.05,0.1,0.2,0.3 [--attack pgd] [--steps 10] [--restarts 1]

Reads the run's config.json and newest checkpoint (``cnn.analysis.runs.load_run``); attacks the test
images in [0, 1] pixel space (the run's normalisation inside the model function) with FGSM or L-inf PGD
(``cnn.robust``; step size 2.5 eps / steps unless --step_size); writes robustness.md, robustness.json and
accuracy_vs_eps.png into RUN/robustness/ and prints the table.

Exit status: 0 done, 2 bad input (one line "error: ..." on stderr).
"""

import pathlib

import jax
from absl import app, flags, logging

from experiments import cli

flags.DEFINE_string("workdir", None, "A finished run's folder (config.json, checkpoints/).")
flags.DEFINE_string("eps", "0.05,0.1,0.2,0.3", "Comma-separated radii in pixels / 255 units.")
flags.DEFINE_enum("attack", "pgd", ["pgd", "fgsm"], "The attack.")
flags.DEFINE_enum("norm", "linf", ["linf", "l2"], "PGD's ball.")
flags.DEFINE_integer("steps", 10, "PGD steps.")
flags.DEFINE_integer("restarts", 1, "PGD random restarts (each example keeps its worst).")
flags.DEFINE_float("step_size", None, "PGD step size; default 2.5 * eps / steps.")
flags.DEFINE_integer("limit", None, "Attack only the first LIMIT test images.")
flags.DEFINE_integer("batch_size", 500, "Test images per attacked batch.")
flags.DEFINE_integer("seed", 0, "Seed of PGD's random starts.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def _radii(text: str) -> list:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 <= v <= 1 for v in values):
        cli.fail(f"--eps={text}: expected comma-separated radii in [0, 1], e.g. 0.05,0.1,0.2,0.3")
    return sorted(set(values))


def main(argv):
    cli.no_positional(argv, "--eps 0.1,0.3")
    logging.set_verbosity(logging.WARNING)
    radii = _radii(FLAGS.eps)
    cli.require_positive(FLAGS, ("steps", "restarts", "batch_size") + (("limit",) if FLAGS.limit is not None else ()))
    if FLAGS.step_size is not None and FLAGS.step_size <= 0:
        cli.fail(f"--step_size={FLAGS.step_size}: expected a positive step")
    from cnn.robust import report, robust_accuracy

    run = cli.load_finished_run(FLAGS.workdir)
    workdir = pathlib.Path(FLAGS.workdir)
    logits_fn = lambda pixels: run.model.apply(run.variables, run.normalize(pixels * 255.0), train=False)
    result = robust_accuracy(logits_fn, run.batches(FLAGS.batch_size, FLAGS.limit), jax.random.key(FLAGS.seed),
                             eps=radii, attack=FLAGS.attack, steps=FLAGS.steps, restarts=FLAGS.restarts,
                             step_size=FLAGS.step_size, norm=FLAGS.norm)
    result["settings"] = {"attack": FLAGS.attack, "norm": FLAGS.norm, "checkpoint_step": run.step,
                          **({"steps": FLAGS.steps, "restarts": FLAGS.restarts,
                              "step_size": FLAGS.step_size or "2.5 eps / steps"} if FLAGS.attack == "pgd" else {})}
    paths = report.write_report(result, workdir / "robustness")
    print(report.markdown(result))
    print(f"written: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
