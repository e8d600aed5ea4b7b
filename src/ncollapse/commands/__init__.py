"""One module per CLI subcommand; each defines ``register(subparsers)`` (see ``ncollapse.cli``)."""

import sys
import warnings
from contextlib import contextmanager


def show_progress(args) -> bool:
    """Progress bars on stderr: on a terminal, unless ``--quiet``."""
    return not args.quiet and sys.stderr.isatty()


@contextmanager
def warnings_as_lines(prefix: str):
    """Record the warnings raised in the block and say each on stderr as one line ``{prefix}{message}`` after it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"{prefix}{w.message}", file=sys.stderr)


def write_or_print(outputs, out, text: str, end: str = "") -> None:
    """``text`` into ``out`` through the command's ``io_safe.Outputs`` (saying so on stderr), or on stdout + ``end``."""
    if out:
        outputs.write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text + end)
