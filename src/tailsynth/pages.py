"""One look for every HTML page tailsynth writes (run report, model card, data validation, synthesizer gates, OOD
selection, monitoring windows): one stylesheet, one `page()` and the pieces pages are made of. Text is escaped
here; a `Markup` string is HTML already and passes through. Base tier: imports nothing from the packages.

Documents with a markdown twin (the run report, the model card) are lists of sections, `(heading, kind, payload)`
with kind `text` ([paragraph]), `table` ([header, rows]), `facts` (a table of text, left-aligned: [header, rows]),
`image` ([src, alt]), `links` ([(label, href), ...]), `list` ([item, ...]) or `code` ([text]),
rendered by `sections_html` and `sections_markdown` alike.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

from .formatting import fmt

STYLESHEET = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top;white-space:nowrap}"
    "td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}"
    "table.text td,table.text th{text-align:left;white-space:normal}"
    "img{max-width:100%}.summary{font-size:1.05em}code{background:#f4f4f4;padding:0 3px}"
    "pre{background:#f4f4f4;padding:.5em;overflow-x:auto}pre code{padding:0}"
    "nav{font-size:.9em;margin-bottom:1em}"
    ".ok{background:#efe}.bad,.drift{background:#fdd}.insufficient{color:#888}")

Section = tuple[str, str, list]


class Markup(str):
    """A string that is HTML already: `page` and `table` insert it as it is."""


def esc(v) -> Markup:
    """V as escaped HTML text (numbers through `formatting.fmt`); Markup unchanged."""
    return v if isinstance(v, Markup) else Markup(html.escape(fmt(v)))


def inline(text: str) -> Markup:
    """Escaped text with markdown's **bold** and `code` spans."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", t))


def link(href: str, label) -> Markup:
    return Markup(f"<a href='{html.escape(href)}'>{esc(label)}</a>")


def code(text) -> Markup:
    return Markup(f"<code>{esc(text)}</code>")


def bold(text) -> Markup:
    return Markup(f"<b>{esc(text)}</b>")


def heading(text, level: int = 2) -> Markup:
    return Markup(f"<h{level}>{esc(text)}</h{level}>")


def para(*parts, cls: str = "") -> Markup:
    """A paragraph of PARTS (text escaped, Markup as is)."""
    attr = f" class='{html.escape(cls)}'" if cls else ""
    return Markup(f"<p{attr}>" + "".join(esc(p) for p in parts) + "</p>")


def bullets(items: Iterable) -> Markup:
    return Markup("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")


def image(src: str, alt: str) -> Markup:
    return Markup(f"<p><img src='{html.escape(src)}' alt='{html.escape(alt)}'></p>")


class Cell:
    """A table cell with a class (e.g. a status colour) or spanning COLSPAN columns."""

    def __init__(self, value, cls: str = "", colspan: int = 1):
        self.value, self.cls, self.colspan = value, cls, colspan


def _cell(v, tag: str) -> str:
    if isinstance(v, Cell):
        attrs = (f" class='{html.escape(v.cls)}'" if v.cls else "") + (f" colspan={v.colspan}" if v.colspan > 1 else "")
        return f"<{tag}{attrs}>{esc(v.value)}</{tag}>"
    return f"<{tag}>{esc(v)}</{tag}>"


def table(header: Sequence, rows: Iterable[Sequence], row_classes: Sequence[str] | None = None,
          text: bool = False) -> Markup:
    """A table; ROW_CLASSES: a class per row; TEXT: left-aligned cells that wrap (prose rather than numbers)."""
    th = "".join(_cell(h, "th") for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = f" class='{html.escape(row_classes[i])}'" if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(_cell(v, "td") for v in r) + "</tr>")
    attr = " class='text'" if text else ""
    return Markup(f"<table{attr}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def page(title: str, *body, nav: Sequence[tuple[str, str]] = (), h1: str | None = None) -> str:
    """A standalone HTML page: TITLE (and the H1 heading, TITLE unless given), the NAV links [(label, href)] above
    it, then BODY (text escaped, Markup as is)."""
    top = ("<nav>" + " · ".join(link(href, label) for label, href in nav) + "</nav>") if nav else ""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLESHEET}</style></head><body>{top}"
            f"<h1>{html.escape(h1 if h1 is not None else title)}</h1>\n"
            + "\n".join(esc(b) for b in body) + "\n</body></html>\n")


def sections_html(title: str, summary: str, sections: Sequence[Section],
                  nav: Sequence[tuple[str, str]] = ()) -> str:
    parts = [para(inline(summary), cls="summary")] if summary else []
    for head, kind, payload in sections:
        if head:
            parts.append(heading(head))
        if kind in ("table", "facts"):  # cells as in markdown: **bold** and `code` spans
            rows = [[inline(v) if isinstance(v, str) else v for v in r] for r in payload[1]]
            parts.append(table(payload[0], rows, text=kind == "facts"))
        elif kind == "text":
            parts.append(para(inline(payload[0])))
        elif kind == "image":
            parts.append(image(payload[0], payload[1]))
        elif kind == "links":
            parts.append(bullets(link(href, label) for label, href in payload))
        elif kind == "list":
            parts.append(bullets(inline(i) for i in payload))
        elif kind == "code":
            parts.append(Markup(f"<pre><code>{esc(payload[0])}</code></pre>"))
    return page(title, *parts, nav=nav)


def sections_markdown(title: str, summary: str, sections: Sequence[Section]) -> str:
    md = [f"# {title}", ""] + ([summary, ""] if summary else [])
    for head, kind, payload in sections:
        if head:
            md += [f"## {head}", ""]
        if kind in ("table", "facts"):
            md += [markdown_table(payload[0], payload[1]), ""]
        elif kind == "text":
            md += [payload[0], ""]
        elif kind == "image":
            md += [f"![{payload[1]}]({payload[0]})", ""]
        elif kind == "links":
            md += [f"- [{label}]({href})" for label, href in payload] + [""]
        elif kind == "list":
            md += [f"- {i}" for i in payload] + [""]
        elif kind == "code":
            md += ["```", payload[0], "```", ""]
    return "\n".join(md)


def markdown_table(header: Sequence, rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
