"""A self-contained HTML page: inline CSS, images as base64 data URIs, no scripts, no external URLs."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1150px;
       color: #1d1d1f; background: #ffffff; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #3a6ea5; padding-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; color: #254a73; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #c8ced6; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.3em; font-weight: bold; color: #fff; }
.good { background: #2e7d32; } .bad { background: #c62828; } .open { background: #8d6e00; }
.note { color: #555; font-size: 0.92em; }
figure { margin: 1em 0; } figcaption { color: #444; font-size: 0.9em; max-width: 1100px; }
img { max-width: 100%; border: 1px solid #e0e0e0; }
code { background: #f3f3f3; padding: 0 0.25em; }
"""

GOOD = ("unsat", "held", "repaired", "proven")
BAD = ("sat", "error", "not-proven", "wrong")


class Badge(str):
    """Markup for a verdict, shown as is in `Page.fields`."""


def verdict_badge(verdict: str | None) -> Badge:
    """A coloured label: green for a property that holds, red for a violation or failure, amber otherwise."""
    text = verdict or "-"
    kind = "good" if text in GOOD else "bad" if text in BAD else "open"
    return Badge(f'<span class="verdict {kind}">{escape(text)}</span>')


def cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="number">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="number">{value}</td>'
    return f"<td>{escape(str(value))}</td>"


class Page:
    """Sections of HTML appended in order; `render` wraps them in one document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{escape(text)}</h2>")

    def paragraph(self, text: str, note: bool = False) -> None:
        self.parts.append(f'<p class="note">{escape(text)}</p>' if note else f"<p>{escape(text)}</p>")

    def fields(self, rows: Sequence[tuple[str, object]]) -> None:
        """A two-column table of names and values; a value that is already a badge is kept as markup."""
        body = "".join(f"<tr><th>{escape(name)}</th>{_value_cell(value)}</tr>" for name, value in rows)
        self.parts.append(f"<table>{body}</table>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, png: bytes, caption: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
                          f"<figcaption>{escape(caption)}</figcaption></figure>")

    def render(self) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{escape(self.title)}</title><style>{STYLE}</style></head>"
                f"<body><h1>{escape(self.title)}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n")


def _value_cell(value: object) -> str:
    if isinstance(value, Badge):
        return f"<td>{value}</td>"
    return cell(value)
