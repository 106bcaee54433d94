"""absl flags for the analysis entry points, with every mistake said in one line and exit status 2.

``parse_flags`` is the ``flags_parser`` of ``app.run``; ``fail`` ends the program the same way for a bad
value found later (an unknown method, a workdir without a run)."""

import sys

from absl import flags

BAD_INPUT = 2


def fail(message: str) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(BAD_INPUT)


def parse_flags(argv):
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        fail(" ".join(line.strip() for line in str(error).splitlines() if line.strip()))
    if len(remaining) > 1:
        fail(f"unexpected arguments: {' '.join(remaining[1:])}; every setting is a flag (--name=value)")
    return remaining


def number_list(text: str, name: str, *, low: float = 0.0) -> list:
    """``"0.05,0.1"`` -> ``[0.05, 0.1]``, or a one-line failure naming the flag."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--{name}={text}: expected comma-separated numbers, e.g. 0.05,0.1,0.2")
    if not values or any(v < low for v in values):
        fail(f"--{name}={text}: expected one or more numbers >= {low:g}")
    return values
