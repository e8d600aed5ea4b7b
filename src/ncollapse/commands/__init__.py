"""One module per CLI subcommand; each defines ``register(subparsers)`` (see ``ncollapse.cli``)."""

import sys


def show_progress(args) -> bool:
    """Progress bars on stderr: on a terminal, unless ``--quiet``."""
    return not args.quiet and sys.stderr.isatty()
