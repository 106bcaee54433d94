r"""Run an architecture comparison (every model, recipe and seed of a config), or a sweep, and tabulate it.

python -m experiments.compare --config experiments/configs/compare_mnist.py --workdir runs/compare_mnist \
    [--sweep "optimizer.learning_rate=0.1,0.03,0.01" --sweep "training.batch_size=64,128"] \
    [--search "optimizer.learning_rate=log:1e-4:1e-1" --trials 8 --search-algorithm tpe|random] \
    [--config.base.training.epochs=1 ...]

Writes DIR/runs/<trial>/ (a normal training workdir, with plots/), DIR/results.csv, DIR/results.md,
DIR/trials.csv and DIR/accuracy_vs_params.png, accuracy_vs_flops.png, training_curves.png. Running the
same command again skips finished runs and resumes interrupted ones. See docs/compare.md.

Exit status: 0 done, 2 bad input (one line "error: ..." on stderr), 75 preempted (run it again to resume).
"""

import logging as std_logging
import pathlib
import sys

from absl import app, flags, logging

from experiments import cli
from experiments import train as train_cli  # noqa: F401  (defines the --config, --workdir and --force flags)

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("sweep", [], 'A grid axis, FIELD=V1,V2,... (repeat for a cross product), e.g. "optimizer.learning_rate=0.1,0.01".')
flags.DEFINE_multi_string("search", [], 'A search range, FIELD=log:LOW:HIGH | float:LOW:HIGH | int:LOW:HIGH | choice:A,B.')
flags.DEFINE_integer("trials", 8, "Search trials to finish (with --search).")
flags.DEFINE_string("search_algorithm", "tpe", "optuna sampler for --search: tpe (Bayesian) or random.")
flags.DEFINE_integer("search_seed", 0, "Seed of the search's sampler.")


def _parse_flags(argv):
    """``--search-algorithm`` is accepted as well as absl's ``--search_algorithm``."""
    argv = [arg.replace("--search-algorithm", "--search_algorithm", 1) if arg.startswith("--search-algorithm") else
            arg.replace("--search-seed", "--search_seed", 1) if arg.startswith("--search-seed") else arg for arg in argv]
    return cli.parse_flags(argv)


def main(argv):
    cli.no_positional(argv, "--sweep FIELD=V1,V2")
    logging.set_verbosity(logging.WARNING)
    std_logging.basicConfig(format="%(message)s")
    std_logging.getLogger("cnn.compare").setLevel(std_logging.WARNING)
    from cnn import compare
    from cnn.compare import search
    from cnn.data import DataError
    from cnn.train import loop

    comparison = cli.loaded_config(FLAGS.config)
    cli.check_workdir(FLAGS.workdir)
    if "base" not in comparison or "runs" not in comparison:
        cli.fail("--config: not a comparison config (it needs base, runs and seeds; see experiments/configs/compare_mnist.py)")
    if FLAGS.sweep and FLAGS.search:
        cli.fail("--sweep and --search both given; use a grid (--sweep) or a search (--search), not both")
    workdir = pathlib.Path(FLAGS.workdir)
    if workdir.exists() and not workdir.is_dir():
        cli.fail(f"--workdir={FLAGS.workdir} is a file, not a folder; choose another --workdir")
    with comparison.unlocked():
        comparison.base.force = bool(FLAGS.force or comparison.base.get("force", False))
    try:
        if FLAGS.search:
            groups = search.search(comparison, workdir, FLAGS.search, trials=FLAGS.trials,
                                   algorithm=FLAGS.search_algorithm, seed=FLAGS.search_seed)
        else:
            groups = compare.compare(comparison, workdir, sweeps=FLAGS.sweep)
    except loop.Preempted as stop:
        print(f"{stop}; run the same command to resume", file=sys.stderr)
        sys.exit(loop.Preempted.exit_status)
    except (ValueError, KeyError, TypeError, OSError, DataError, loop.RunError) as error:
        cli.fail(cli.first_line(error))
    print((workdir / "results.md").read_text())
    print(f"{len(groups)} rows; results in {workdir}/results.md, results.csv, trials.csv and the plots")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
