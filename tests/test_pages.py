"""One page helper (tailsynth.pages): one stylesheet, escaping, and no other module writes a page by hand."""

from __future__ import annotations

import re
from pathlib import Path

from tailsynth.pages import (
    STYLESHEET,
    Cell,
    Markup,
    link,
    page,
    para,
    sections_html,
    sections_markdown,
    table,
)

ROOT = Path(__file__).resolve().parents[1]


def test_text_is_escaped_and_markup_passes():
    html = page("a <b> & c", para("x < y", link("p.html", "<go>")), table(["h"], [[Cell("<td>", "bad")], [1.23456]]))
    assert "<title>a &lt;b&gt; &amp; c</title>" in html and "x &lt; y<a href='p.html'>&lt;go&gt;</a>" in html
    assert "<td class='bad'>&lt;td&gt;</td>" in html and "<td>1.235</td>" in html  # numbers as formatting.fmt
    assert html.count("<style>") == 1 and STYLESHEET in html
    assert page("t", Markup("<i>x</i>")).count("<i>x</i>") == 1


def test_sections_render_alike_in_markdown_and_html():
    sections = [("Facts", "facts", [["item", "value"], [["rev", "`abc`"]]]), ("", "text", ["**bold** words"]),
                ("", "image", ["f.png", "a figure"]), ("Links", "links", [("card", "m/card.html")]),
                ("", "list", ["one"]), ("Run", "code", ["make run"])]
    md, html = sections_markdown("T", "S", sections), sections_html("T", "S", sections, nav=[("back", "../r.html")])
    assert "| rev | `abc` |" in md and "![a figure](f.png)" in md and "- [card](m/card.html)" in md
    assert "```\nmake run\n```" in md
    assert "<td><code>abc</code></td>" in html and "<b>bold</b> words" in html and "<img src='f.png'" in html
    assert "<nav><a href='../r.html'>back</a></nav>" in html and "<pre><code>make run</code></pre>" in html


def test_no_other_module_builds_a_page_or_a_stylesheet():
    hand_made = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "src").rglob("*.py")) if p.name != "pages.py"
                 and re.search(r"<style|<!doctype|<html", p.read_text(), re.IGNORECASE)]
    assert hand_made == []
