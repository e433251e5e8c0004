"""The README's examples run as written, and the documentation stays inside the repository.

The examples are run from the repository root: every ``$ verirepair ...`` line of a ``console``
block through this interpreter, every ``python`` block as a script whose printed output must be
the ``text`` block after it. Timings differ from run to run, so seconds are masked; the verdicts
and everything else must match. The exit code must be the one the CLI contract gives the verdict.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from verirepair.cli import EXIT_CODES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Top-level folders whose paths, written in backticks in a document, must exist.
REPOSITORY_FOLDERS = ("verirepair/", "tools/", "specs/", "models/", "tests/", "docs/")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
SECONDS = re.compile(r"\d+(\.\d+)?s\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`([A-Za-z0-9_./-]+)`")
OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def _console_examples() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every ``$ `` line of the README's console blocks."""
    examples: list[tuple[str, list[str]]] = []
    for language, body in _blocks(README.read_text()):
        if language != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            else:
                examples[-1][1].append(line)
    return examples


def _python_examples() -> list[tuple[str, str]]:
    """(code, expected output) for every python block followed by a text block."""
    blocks = _blocks(README.read_text())
    return [(code, output) for (language, code), (next_language, output) in itertools.pairwise(blocks)
            if language == "python" and next_language == "text"]


def _masked(lines: list[str]) -> list[str]:
    return [SECONDS.sub("<seconds>", line.rstrip()) for line in lines if line.strip()]


def test_the_readme_has_examples():
    assert len(_console_examples()) >= 1
    assert len(_python_examples()) >= 1


@pytest.mark.parametrize("command, expected", _console_examples(), ids=lambda value: str(value)[:60])
def test_console_example_runs_as_written(command, expected):
    argv = shlex.split(command)
    assert argv[0] == "verirepair", f"README examples run verirepair only: {command}"
    done = subprocess.run([sys.executable, "-m", "verirepair", *argv[1:]], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert _masked(done.stdout.splitlines()) == _masked(expected), done.stderr
    verdict = expected[0].split()[0]
    assert done.returncode == EXIT_CODES[verdict]


@pytest.mark.parametrize("code, expected", _python_examples())
def test_python_example_prints_what_the_readme_shows(code, expected):
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _masked(done.stdout.splitlines()) == _masked(expected.splitlines())


def test_readme_exit_code_table_matches_the_cli():
    """Each verdict's row of the README's exit-code table starts with the code the CLI returns."""
    rows = [line for line in README.read_text().splitlines() if re.match(r"\| \d", line)]
    for status in ("unsat", "sat", "unknown", "timeout"):
        row = next(r for r in rows if re.search(rf"\| `{status}`", r))
        assert row.split("|")[1].strip() == str(EXIT_CODES[status])


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_document_stays_inside_the_repository(document):
    text = document.read_text()
    assert "../shared" not in text and "/work/" not in text
    for target in LINK.findall(text):
        assert "://" not in target, f"{target} points outside the repository"
        if target.startswith("#"):
            continue
        resolved = (document.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{target} leaves the repository"
        assert resolved.exists(), f"{target} does not exist"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_paths_named_in_a_document_exist(document):
    for name in CODE_PATH.findall(document.read_text()):
        if name.startswith(REPOSITORY_FOLDERS):
            path = ROOT / name
            assert path.exists(), f"{document.name} names {name}, which does not exist"


def _help_of(*command: str) -> str:
    from verirepair.cli import build_parser

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    return printed.getvalue()


def _mentions(page: str, option: str) -> bool:
    return option in ("-h", "--help") or re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page) is not None


def test_cli_page_documents_every_command_and_option():
    page = (ROOT / "docs" / "cli.md").read_text()
    top = _help_of()
    commands = re.search(r"\{([a-z,-]+)\}", top).group(1).split(",")
    missing = [o for o in OPTION.findall(top) if not _mentions(page, o)]
    for command in commands:
        if f"## {command}" not in page:
            missing.append(command)
        missing += [f"{command} {o}" for o in OPTION.findall(_help_of(command))
                    if not _mentions(page, o)]
    assert not missing, f"docs/cli.md does not mention: {', '.join(sorted(set(missing)))}"


def test_index_maps_every_page():
    linked = set(LINK.findall((ROOT / "docs" / "index.md").read_text()))
    pages = {path.name for path in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs/index.md does not link {', '.join(sorted(pages - linked))}"
