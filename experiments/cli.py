"""What every command line here shares: one-line errors with exit status 2, absl flag parsing whose every
mistake is said in one line, the workdir flag's checks, how a run's stop becomes an exit status, and
the CPU's name for the benchmarks' records.

Exit status: 0 done, 2 bad input (one line "error: ..." on stderr names the bad value and what is
accepted), 75 preempted (SIGTERM/SIGINT; run the same command to resume).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import sys

from absl import flags

from cnn.text import a_or_an

BAD_INPUT = 2


def fail(message: str):
    """Prints ``error: <message>`` on one line and exits with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(BAD_INPUT)


def no_positional(argv, example: str) -> None:
    """absl's ``argv`` holds the program name only: every setting is a flag (exit 2 otherwise)."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}; every setting is a flag, e.g. {example}")


def require_positive(flag_values, names) -> None:
    """Each of the integer flags ``names`` is >= 1 (one line and exit 2 otherwise)."""
    for name in names:
        if getattr(flag_values, name) < 1:
            fail(f"--{name}={getattr(flag_values, name)}: expected a positive integer")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none), for the benchmarks' records."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def print_fit_progress(step: int, loss: float, accuracy: float) -> None:
    """Every 500 steps of a benchmark's fit, one line (``cnn.analysis.fit`` calls it)."""
    if step % 500 == 0:
        print(f"  step {step}: loss {loss:.3f}, train accuracy {accuracy:.3f}", flush=True)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def config_argument(argv):
    """The --config value as given (``path.py`` or ``path.py:arg``), or None."""
    for i, arg in enumerate(argv[1:], 1):
        if re.match(r"^--?config=", arg):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def load_config(spec: str):
    """The config ``spec`` names, loaded as config_flags loads it (used only to explain a bad override)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_cnn_cli_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def explain_override(argv, spec, error) -> str:
    """One line for a --config.<field>=<value> that absl or ml_collections refused."""
    from cnn.compare.fields import not_a_field

    message = " ".join(str(error).split())
    overrides = [(m.group(1), arg) for arg in argv[1:] if (m := re.match(r"^--?(?:no)?config\.([^=]+)", arg))]
    try:
        config = load_config(spec) if spec else None
    except Exception:  # noqa: BLE001 - the config's own error comes up again when it is used
        config = None
    bad_type = re.match(r"^flag --config\.([^=]+)=(.*?): (.*)$", message)
    if bad_type:  # absl: the value does not parse as the field's type
        path, value, detail = bad_type.groups()
        if config is not None and not_a_field(config, path) is None:
            default = config
            for part in path.split("."):
                default = default[part]
            return (f"--config.{path}={value}: {path} takes {a_or_an(type(default).__name__)}, like the config's "
                    f"{default!r} ({detail})")
        return message
    if config is not None:  # ml_collections: an override of a field the config does not have
        for path, arg in overrides:
            reason = not_a_field(config, path)
            if reason:
                return f"{arg}: {reason}"
    return f"bad --config override ({message})"


def parse_flags(argv):
    """absl's parsing, with each mistake said in one line (absl would end with a usage hint or a traceback)."""
    spec = config_argument(argv)
    if spec:
        path = spec.partition(":")[0]
        if not os.path.isfile(path):
            fail(f"--config={spec}: no config file {path}; give a Python config file such as "
                 f"experiments/configs/mnist_simple_cnn.py, optionally with :smoke")
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:  # a value of the wrong type, an unknown or missing flag, a config that raised
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        if "--config." in str(error):
            fail(explain_override(argv, spec, error))
        fail(f"--config={spec}: cannot load it ({lines[-1]})" if len(lines) > 1 and spec else " ".join(lines))
    except (AttributeError, KeyError) as error:  # ml_collections: an override of a field the config lacks
        fail(explain_override(argv, spec, error))
    except Exception as error:  # noqa: BLE001 - the config file itself does not import (SyntaxError, ...)
        fail(f"--config={spec}: cannot load it ({type(error).__name__}: {error})")


def loaded_config(flag_value):
    """The --config flag's ConfigDict; a config file that failed to load is one line."""
    try:
        config = flag_value
        config.keys()  # config_flags defers a config file that failed to load until it is used
        return config
    except OSError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        fail(f"cannot load the config file: {lines[-1] if lines else type(error).__name__}")


def check_workdir(workdir: str) -> None:
    """--workdir must name a folder: '' (the current directory, by accident) is refused."""
    if not workdir or not workdir.strip():
        fail("--workdir='' names no folder; give the run's own folder, e.g. --workdir runs/mnist")


def load_finished_run(workdir: str):
    """``cnn.analysis.runs.load_run`` of ``--workdir``: a folder without ``config.json`` or a run that cannot be
    read is one line and exit 2."""
    check_workdir(workdir)
    if not (pathlib.Path(workdir) / "config.json").is_file():
        fail(f"--workdir={workdir} holds no run (no config.json); train one with experiments.train first")
    from cnn.analysis import runs

    try:
        return runs.load_run(pathlib.Path(workdir))
    except (ValueError, FileNotFoundError) as error:
        fail(first_line(error))
