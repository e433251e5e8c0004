"""The examples of docs/api.md run as written, from the repository's root; each asserts its own
expected results (the verdicts of specs/expected.csv, a repaired file the verifier proves)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block."""
    return [(text.count("\n", 0, match.start()) + 1, match.group(1))
            for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)]


BLOCKS = python_blocks(DOC.read_text())


def test_the_document_has_its_examples() -> None:
    code = "\n".join(block for _, block in BLOCKS)
    assert len(BLOCKS) >= 5
    assert all(f"verirepair.{name}(" in code for name in ("verify", "check_and_fix", "bench", "check_certificate"))


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_example(line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"{DOC}:{line}", "exec"), {"__name__": f"api_md_line{line}"})  # noqa: S102 - the document's own examples
