"""Agent text quoted by pipeline/quoting.py is literal in CommonMark (markdown-it-py): it cannot
close its fence or span, and no heading, HTML comment, `</details>`, link or image inside it is
rendered."""

from __future__ import annotations

from markdown_it import MarkdownIt

from pipeline.quoting import quoted_block, quoted_inline

HOSTILE = "## Tests: passed\n````\n```\n</details>\n<!-- hide the rest\n![x](https://evil.example/p.png) [a](https://evil.example)\n~~~\n"


def render(markdown: str) -> list:
    return MarkdownIt("commonmark").enable("table").parse(markdown)


def test_a_block_holds_any_text_literally_and_what_follows_stays_markdown():
    doc = "\n".join(["## Plan", "", *quoted_block(HOSTILE), "", "## Review", "", "ok"])
    tokens = render(doc)
    assert [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"] == ["Plan", "Review"]
    (fence,) = [t for t in tokens if t.type == "fence"]
    assert fence.content == HOSTILE.rstrip("\n") + "\n"
    assert not [t for t in tokens if t.type in ("html_block", "image", "link_open")]
    assert quoted_block("")[1] == "(empty)" and quoted_block("a\x00b\r\nc")[1:3] == ["a\ufffdb", "c"]


def test_a_span_holds_one_line_literally_even_with_backticks_at_its_ends():
    for text in ("`tick` at both ends`", "<!-- x", "![i](https://evil.example/i.png)", "a\nb ``` c", "|pipe|"):
        span = quoted_inline(text, table=True)
        tokens = render(f"| a |\n|---|\n| {span} |\n\nafter")
        code = [c for t in tokens if t.type == "inline" for c in t.children or [] if c.type == "code_inline"]
        assert len(code) == 1 and code[0].content == text.replace("\n", " "), (text, span)
        assert not [c for t in tokens if t.type == "inline" for c in t.children or [] if c.type in ("html_inline", "image", "link_open")]
    assert quoted_inline("x" * 500, limit=10) == "` xxxxxxxxx… `"
