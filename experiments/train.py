r"""Train and evaluate one config; running the same command again resumes.

python -m experiments.train --config experiments/configs/mnist_simple_cnn.py --workdir runs/mnist \
    [--config.optimizer.learning_rate=3e-4 ...] [--force]
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cnn.data import DataError
from cnn.train import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path.py or path.py:smoke).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, checkpoints and results go.")
flags.DEFINE_bool("force", False, "Start over in a workdir that holds another experiment's checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    with config.unlocked():
        config.force = bool(FLAGS.force or config.get("force", False))
    try:
        results = loop.train_and_evaluate(config, FLAGS.workdir)
    except loop.Preempted as stop:
        print(f"{stop}; run the same command to resume", file=sys.stderr)
        sys.exit(loop.Preempted.exit_status)
    except (ValueError, KeyError, TypeError, OSError, DataError, loop.RunError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
