r"""Train and evaluate one config; running the same command again resumes.

python -m experiments.train --config experiments/configs/mnist_simple_cnn.py --workdir runs/mnist \
    [--config.optimizer.learning_rate=3e-4 ...] [--force]

Exit status: 0 done, 2 bad input (one line "error: ..." on stderr names the bad value and what is accepted),
75 preempted (SIGTERM/SIGINT: checkpoint written; run the same command to resume).
"""

import importlib.util
import json
import os
import pathlib
import re
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path.py or path.py:smoke).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, checkpoints and results go.")
flags.DEFINE_bool("force", False, "Start over in a workdir that holds another experiment's checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])

BAD_INPUT = 2


def _fail(message: str):
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(BAD_INPUT)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _config_argument(argv):
    """The --config value as given (``path.py`` or ``path.py:arg``), or None."""
    for i, arg in enumerate(argv[1:], 1):
        if re.match(r"^--?config=", arg):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _load_config(spec: str):
    """The config ``spec`` names, loaded as config_flags loads it (used only to explain a bad override)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_cnn_train_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _explain_override(argv, spec, error) -> str:
    """One line for a --config.<field>=<value> that absl or ml_collections refused."""
    from cnn.train.fields import not_a_field

    message = " ".join(str(error).split())
    overrides = [(m.group(1), arg) for arg in argv[1:] if (m := re.match(r"^--?(?:no)?config\.([^=]+)", arg))]
    try:
        config = _load_config(spec) if spec else None
    except Exception:  # noqa: BLE001 - the config's own error comes up again when it is used
        config = None
    bad_type = re.match(r"^flag --config\.([^=]+)=(.*?): (.*)$", message)
    if bad_type:  # absl: the value does not parse as the field's type
        path, value, detail = bad_type.groups()
        if config is not None and not_a_field(config, path) is None:
            default = config
            for part in path.split("."):
                default = default[part]
            return f"--config.{path}={value}: {path} takes {_a(type(default).__name__)}, like the config's {default!r} ({detail})"
        return message
    if config is not None:  # ml_collections: an override of a field the config does not have
        for path, arg in overrides:
            reason = not_a_field(config, path)
            if reason:
                return f"{arg}: {reason}"
    return f"bad --config override ({message})"


def _parse_flags(argv):
    """absl's parsing, with each mistake said in one line (absl would end with a usage hint or a traceback)."""
    spec = _config_argument(argv)
    if spec:
        path = spec.partition(":")[0]
        if not os.path.isfile(path):
            _fail(f"--config={spec}: no config file {path}; give a Python config file such as "
                  f"experiments/configs/mnist_simple_cnn.py, optionally with :smoke")
    try:
        return FLAGS(argv)
    except flags.Error as error:  # a value of the wrong type, an unknown or missing flag, a config that raised
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        if "--config." in str(error):
            _fail(_explain_override(argv, spec, error))
        _fail(f"--config={spec}: cannot load it ({lines[-1]})" if len(lines) > 1 and spec else " ".join(lines))
    except (AttributeError, KeyError) as error:  # ml_collections: an override of a field the config lacks
        _fail(_explain_override(argv, spec, error))
    except Exception as error:  # noqa: BLE001 - the config file itself does not import (SyntaxError, ...)
        _fail(f"--config={spec}: cannot load it ({type(error).__name__}: {error})")


def _make_workdir(workdir: str) -> None:
    """Creates --workdir (the loop would too), or says in one line why it cannot be."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        _fail(f"--workdir={workdir} is a file, not a folder; choose another --workdir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"--workdir={workdir} cannot be created ({error.strerror}: {error.filename}); choose a folder you can write to")
    if not os.access(path, os.W_OK):
        _fail(f"--workdir={workdir} is not writable; choose a folder you can write to")


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}; every setting is a flag, e.g. --config.training.steps=100")
    logging.set_verbosity(logging.WARNING)
    from cnn.data import DataError  # imported here so that a mistake in the flags is reported at once
    from cnn.train import loop

    try:
        config = FLAGS.config
        with config.unlocked():
            config.force = bool(FLAGS.force or config.get("force", False))
    except OSError as error:  # config_flags defers a config file that failed to load until it is used
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        _fail(f"cannot load the config file: {lines[-1] if lines else type(error).__name__}")
    _make_workdir(FLAGS.workdir)
    try:
        results = loop.train_and_evaluate(config, FLAGS.workdir)
    except loop.Preempted as stop:
        print(f"{stop}; run the same command to resume", file=sys.stderr)
        sys.exit(loop.Preempted.exit_status)
    except (ValueError, KeyError, TypeError, OSError, DataError, loop.RunError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        _fail(message)
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
