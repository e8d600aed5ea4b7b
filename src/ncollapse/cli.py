"""Command-line interface: a thin layer over the Python API.

Every module in ``ncollapse.commands`` that defines ``register(subparsers)`` adds one subcommand;
``register`` creates the parser and sets ``func=run`` with ``run(args) -> int``, and ``HELP`` is its
one-line summary. Only the chosen subcommand's ``register`` runs; the others are listed by ``HELP``, and
command modules import torch inside ``run``, so ``--version``, ``--help`` and commands that need no
tensors start without importing torch.

``TypeError`` and ``ValueError`` (bad input), ``FileNotFoundError``, ``FileExistsError``, ``IsADirectoryError``,
``NotADirectoryError``, ``PermissionError`` and ``_io.DiskFullError`` (a full disk) become a one-line message on
stderr and exit status 2; ``KeyboardInterrupt`` exits 130; a closed stdout (``ncollapse ... | head``) exits 141
(128 + SIGPIPE) without a message. Everything else is a bug and keeps its traceback.

One OS-error boundary: an ``OSError`` from the operating system whose errno is in ``OS_ERRORS`` (read-only file
system, no space, name too long, permission, a folder where a file was expected or the reverse) is one line naming
the path and exit 2, wherever it happens, standard output included (``--json`` into a full disk).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import __version__, commands
from ._io import OS_ERRORS, DiskFullError, describe_os_error

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141
ONE_LINE_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                   PermissionError, DiskFullError)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of a failed stdout cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is 2 as well; keep its message on one line
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def command_names() -> list[str]:
    """Names of the subcommands (the public modules of ``ncollapse.commands``)."""
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only ``command``'s options are registered (all of them when ``command`` is None)."""
    parser = _Parser(prog="ncollapse", description="Measure, simulate and train for neural collapse.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ncollapse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in command_names():
        module = importlib.import_module(f"{commands.__name__}.{name}")
        if command is None or name == command:
            module.register(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return parser


def _chosen(argv: list[str]) -> str:
    """The subcommand named on the command line ('' when none): the first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (| head): stop quietly, like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # the final flush of stdout: a full disk behind --json > FILE
        if exc.errno not in OS_ERRORS:
            raise
        _silence_stdout()
        print(f"ncollapse {_chosen(argv)}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _main(argv: list[str]) -> int:
    parser = build_parser(_chosen(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except OSError as exc:
        if exc.errno in OS_ERRORS and not isinstance(exc, BrokenPipeError):
            if exc.filename is None:
                _silence_stdout()
            message = describe_os_error(exc, "an output (standard output or a file)")
        elif isinstance(exc, ONE_LINE_ERRORS):
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            raise
        print(f"ncollapse {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ONE_LINE_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ncollapse {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"ncollapse {args.command}: interrupted", file=sys.stderr)
        return 130
