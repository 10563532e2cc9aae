"""A small document model (headings, paragraphs, tables, images) rendered as Markdown and as HTML.

The report is built once as blocks and rendered twice, so report.md and report.html always say
the same thing. The HTML is one self-contained file: inline CSS, images embedded as base64 data
URIs, no script and no external resource.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    """A section heading (level 1 to 4)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph; ``kind`` "note", "warn", "ok" or "bad" renders it as a callout."""

    text: str
    kind: str = ""


@dataclass(frozen=True)
class Bullets:
    """A bulleted list of plain-text items."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``align`` per column ("l" or "r"); ``row_kinds`` colors rows ("ok", "bad", "warn")."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""
    row_kinds: tuple[str, ...] = ()
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG written next to the report (``filename`` is relative to the report's folder)."""

    filename: str
    alt: str


@dataclass(frozen=True)
class Details:
    """A collapsible section (``<details>``, which GitHub Markdown renders too)."""

    summary: str
    blocks: tuple[object, ...] = field(default=())


Block = object


def _md_text(text: str) -> str:
    """Plain text for Markdown: escape what would turn into markup by accident (``_`` only at word edges)."""
    text = re.sub(r"([\\*`<\[\]])", r"\\\1", str(text))
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    align = table.align or "l" * len(table.headers)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = []
    if table.caption:
        lines += [f"*{_md_text(table.caption)}*", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    lines.append("| " + " | ".join(sep) + " |")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    return lines


_CALLOUT = {"note": "ℹ️", "warn": "⚠️", "ok": "✅", "bad": "❌"}


def render_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown (reads well as a CI job summary)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            if block.kind:
                prefix = _CALLOUT.get(block.kind, "")
                text = block.text if block.text.startswith(prefix) else f"{prefix} {block.text}".strip()
                out += ["> " + _md_text(text), ""]
            else:
                out += [_md_text(block.text), ""]
        elif isinstance(block, Bullets):
            out += [f"- {_md_text(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            out += _md_table(block) + [""]
        elif isinstance(block, Image):
            out += [f"![{_md_cell(block.alt)}]({block.filename})", ""]
        elif isinstance(block, Details):
            out += ["<details>", f"<summary>{html.escape(block.summary)}</summary>", ""]
            out += render_markdown(block.blocks).splitlines() + ["", "</details>", ""]
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    return "\n".join(out).rstrip() + "\n"


# Fonts. Chromium on a minimal Debian (fonts-dejavu-core and fonts-noto-color-emoji only) resolves none of
# "Segoe UI", "Noto Sans", Helvetica, Arial or even the generic sans-serif, so an emoji font named later in the
# stack drew every digit and space (Noto Color Emoji has glyphs for 0-9): numbers came out twice as wide. The
# text stack therefore names fonts that such systems do have (system-ui, DejaVu Sans, Liberation Sans) before
# the generic one, and the emoji fonts are reached only through "Report Emoji", a face limited by
# unicode-range to emoji code points: a digit can never come from it. Checked in tests/report/
# test_report_browser.py against Debian 12's chromium with exactly those two font packages.
EMOJI_RANGES = (
    "U+200D, U+2190-21FF, U+2300-23FF, U+2460-24FF, U+25A0-27BF, U+2900-297F, U+2B00-2BFF, U+FE0F, U+1F000-1FAFF"
)
EMOJI_FACE = (
    '@font-face { font-family: "Report Emoji"; '
    'src: local("Noto Color Emoji"), local("Apple Color Emoji"), local("Segoe UI Emoji"), local("Twemoji Mozilla"); '
    f"unicode-range: {EMOJI_RANGES}; }}"
)
TEXT_FONTS = (
    'system-ui, -apple-system, "Segoe UI", "Noto Sans", "DejaVu Sans", "Liberation Sans", Helvetica, Arial, sans-serif'
)
FONT_STACK = f'{TEXT_FONTS}, "Report Emoji"'

CSS = EMOJI_FACE + """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --head:#f6f8fa; --ok:#dafbe1; --bad:#ffebe9; --warn:#fff8c5;
        --note:#ddf4ff; }
* { box-sizing: border-box; }
body { font-family: FONT_STACK; font-variant-numeric: tabular-nums; color: var(--fg);
       max-width: 1180px; margin: 24px auto; padding: 0 20px; line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.8em; border-bottom: 1px solid var(--line); padding-bottom: .3em; }
h2 { font-size: 1.4em; border-bottom: 1px solid var(--line); padding-bottom: .25em; margin-top: 1.6em; }
h3 { font-size: 1.15em; margin-top: 1.3em; }
h4 { font-size: 1em; margin-top: 1.1em; }
p { margin: .5em 0 .8em; }
.callout { border-left: 4px solid #888; padding: .5em .8em; border-radius: 4px; }
.callout.note { background: var(--note); border-color: #0969da; }
.callout.warn { background: var(--warn); border-color: #bf8700; }
.callout.ok { background: var(--ok); border-color: #1a7f37; }
.callout.bad { background: var(--bad); border-color: #cf222e; }
.table-wrap { overflow-x: auto; margin: .4em 0 1em; }
table { border-collapse: collapse; font-size: 13px; }
caption { text-align: left; color: var(--muted); font-style: italic; padding-bottom: .3em; }
th, td { border: 1px solid var(--line); padding: 4px 7px; vertical-align: top; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 14em; }
th { background: var(--head); text-align: left; white-space: nowrap; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.ok td { background: var(--ok); }
tr.bad td { background: var(--bad); }
tr.warn td { background: var(--warn); }
tbody tr:not(.ok):not(.bad):not(.warn):nth-child(even) td { background: #fafbfc; }
figure { margin: .6em 0 1.2em; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 14px; }
details { margin: .4em 0 1em; }
summary { cursor: pointer; color: #0969da; }
ul { margin: .3em 0 1em; }
""".replace("FONT_STACK", FONT_STACK)


def _html_table(table: Table) -> str:
    align = table.align or "l" * len(table.headers)
    cls = [' class="r"' if a == "r" else "" for a in align]
    parts = ['<div class="table-wrap"><table>']
    if table.caption:
        parts.append(f"<caption>{html.escape(table.caption)}</caption>")
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for h, c in zip(table.headers, cls, strict=True))
    parts.append(f"<thead><tr>{head}</tr></thead><tbody>")
    for i, row in enumerate(table.rows):
        kind = table.row_kinds[i] if i < len(table.row_kinds) and table.row_kinds[i] else ""
        row_cls = f' class="{kind}"' if kind else ""
        cells = "".join(
            f"<td{_cell_class(str(v), c)}>{html.escape(str(v))}</td>" for v, c in zip(row, cls, strict=True)
        )
        parts.append(f"<tr{row_cls}>{cells}</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


WRAP_AT = 24  # cells longer than this may wrap; shorter ones stay on one line


def _cell_class(text: str, cls: str) -> str:
    return ' class="wrap"' if len(text) > WRAP_AT and not cls else cls


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _render_html_blocks(blocks: Sequence[Block], base: Path) -> list[str]:
    out: list[str] = []
    images: list[str] = []

    def flush() -> None:
        if images:
            out.append('<div class="plots">' + "".join(images) + "</div>")
            images.clear()

    for block in blocks:
        if isinstance(block, Image):
            images.append(
                f'<figure><img src="{_data_uri(base / block.filename)}" alt="{html.escape(block.alt, quote=True)}">'
                f"<figcaption>{html.escape(block.filename)}</figcaption></figure>"
            )
            continue
        flush()
        if isinstance(block, Heading):
            anchor = re.sub(r"[^a-z0-9]+", "-", block.text.lower()).strip("-")
            out.append(f'<h{block.level} id="{anchor}">{html.escape(block.text)}</h{block.level}>')
        elif isinstance(block, Para):
            cls = f' class="callout {block.kind}"' if block.kind else ""
            out.append(f"<p{cls}>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(_html_table(block))
        elif isinstance(block, Details):
            out.append(f"<details><summary>{html.escape(block.summary)}</summary>")
            out += _render_html_blocks(block.blocks, base)
            out.append("</details>")
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    flush()
    return out


def render_html(blocks: Sequence[Block], title: str, base: Path) -> str:
    """One self-contained HTML page; images are read from ``base`` and embedded."""
    body = "\n".join(_render_html_blocks(blocks, base))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
