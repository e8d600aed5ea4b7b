"""The shell examples of README.md, docs/*.md and every --help parse, name configs that exist, and read only
run directories that an earlier example of the same page writes."""

import importlib
import re
import shlex
from pathlib import Path

import pytest

from ncollapse.cli import build_parser, command_names

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _shell_lines(text: str) -> list[list[str]]:
    """``ncollapse ...`` command lines (continuations joined, comments dropped) as argument lists."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("ncollapse ")]


def _page_commands(page: Path) -> list[list[str]]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    return [argv for block in blocks for argv in _shell_lines(block)]


def _help_commands() -> list[list[str]]:
    out = []
    for name in command_names():
        module = importlib.import_module(f"ncollapse.commands.{name}")
        text = getattr(module, "EXAMPLES", "") + getattr(module, "DESCRIPTION", "")
        out += _shell_lines(text)
    return out


def _parses(argv: list[str]) -> None:
    try:
        build_parser(argv[1]).parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"example does not parse: {shlex.join(argv)}")


def _config_exists(argv: list[str], written: set[str] | None) -> None:
    args = build_parser(argv[1]).parse_args(argv[1:])
    config = getattr(args, "config", None) or getattr(args, "grid", None)
    if config is None or config.startswith("runs/"):
        if config is not None and written is not None:
            assert str(Path(config).parent) in written, f"{shlex.join(argv)}: no earlier example writes {config}"
        return
    if re.fullmatch(r"[A-Z]\S*\.toml", config) or "$" in config:  # placeholder such as C.toml or ${m}
        return
    assert (ROOT / config).is_file(), f"{shlex.join(argv)}: {config} does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run_as_written(page):
    written: set[str] = set()
    for argv in _page_commands(page):
        _parses(argv)
        _config_exists(argv, written)
        args = build_parser(argv[1]).parse_args(argv[1:])
        for run in [getattr(args, "run", None), *(getattr(args, "compare", None) or [])]:
            if run is not None:
                assert run in written, f"{page.name}: {shlex.join(argv)} reads {run}, which no earlier example writes"
        if getattr(args, "out", None):
            written.add(args.out)


def test_readme_shows_train_then_evaluate_and_report():
    commands = [argv[1] for argv in _page_commands(ROOT / "README.md")]
    assert commands.index("train") < commands.index("evaluate") < commands.index("report")


def test_help_examples_parse_and_name_real_configs():
    examples = _help_commands()
    assert len(examples) > 20
    for argv in examples:
        _parses(argv)
        _config_exists(argv, None)
