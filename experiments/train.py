r"""Train and evaluate one config; running the same command again resumes.

python -m experiments.train --config experiments/configs/mnist_simple_cnn.py --workdir runs/mnist \
    [--config.optimizer.learning_rate=3e-4 ...] [--force]

Exit status: 0 done, 2 bad input (one line "error: ..." on stderr names the bad value and what is accepted),
75 preempted (SIGTERM/SIGINT: checkpoint written; run the same command to resume).
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path.py or path.py:smoke).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, checkpoints and results go.")
flags.DEFINE_bool("force", False, "Start over in a workdir that holds another experiment (its files are set aside).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.no_positional(argv, "--config.training.steps=100")
    logging.set_verbosity(logging.WARNING)
    from cnn.data import DataError  # imported here so that a mistake in the flags is reported at once
    from cnn.train import loop

    config = cli.loaded_config(FLAGS.config)
    cli.check_workdir(FLAGS.workdir)
    with config.unlocked():
        config.force = bool(FLAGS.force or config.force)
    try:
        results = loop.train_and_evaluate(config, FLAGS.workdir)
    except loop.Preempted as stop:
        print(f"{stop}; run the same command to resume", file=sys.stderr)
        sys.exit(loop.Preempted.exit_status)
    except (ValueError, KeyError, TypeError, OSError, DataError, loop.RunError) as error:
        cli.fail(cli.first_line(error))
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
