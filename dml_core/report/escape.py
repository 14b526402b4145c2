"""Free text made inert before it reaches a page: the one place that escapes it.

Errors, log lines, class and file names, recipe values, hardware strings and run names come from
data, from the command line or from other programs: a ``<script>`` in a class folder's name, a
fence or a MyST directive in an error must show as text, never act. Every writer of HTML or
Markdown (the book, the findings, the run pages' displays) passes such text through one of:

- :func:`html_text`: for HTML (an element or an attribute): ``& < > " '`` and the backtick
  escaped, so it is also inert inside a MyST raw-HTML block;
- :func:`markdown_text`: for Markdown (CommonMark, MyST): one line that renders as exactly the
  text, every ASCII punctuation character backslash-escaped (no HTML, emphasis, link, role,
  directive, math or fence can start) and line breaks as spaces;
- :func:`markdown_code`: an inline code span holding the text (its own backticks cannot end it);
- :func:`pre_block`: a log or an error, as an escaped ``<pre>`` block in a raw-HTML block;
- :func:`raw_html`: HTML that we built (escaped already) as a MyST raw block, fenced with more
  backticks than it contains.
"""
from __future__ import annotations

import html
import re
import string

__all__ = ["html_text", "markdown_text", "markdown_code", "raw_html", "pre_block"]

_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
_BACKTICKS = re.compile(r"`+")


def _one_line(text: object) -> str:
    """``text`` as a string on one line (every kind of line break a space, NUL replaced)."""
    return " ".join(str(text).replace("\0", "\ufffd").splitlines())


def html_text(text: object) -> str:
    """``text`` escaped for HTML, quotes and backticks included."""
    return html.escape(str(text).replace("\0", "\ufffd"), quote=True).replace("`", "&#96;")


def markdown_text(text: object) -> str:
    """``text`` as one line of Markdown that renders as the text itself (see the module)."""
    return _PUNCTUATION.sub(r"\\\1", _one_line(text)) if text is not None else ""


def markdown_code(text: object) -> str:
    """``text`` (one line) as an inline code span: fenced by one backtick more than its longest
    backtick run, padded with spaces when it starts or ends with a backtick."""
    text = _one_line(text)
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def raw_html(html_block: str) -> str:
    """A MyST ``{raw} html`` block holding ``html_block`` (which must start with a tag, so that its
    first line is never read as a directive option); the fence is longer than any backtick run
    inside, so nothing in it can close the block."""
    if not html_block.lstrip().startswith("<"):
        raise ValueError("raw_html takes HTML that starts with a tag")
    fence = "`" * max(3, max((len(m) for m in _BACKTICKS.findall(html_block)), default=0) + 1)
    return f"{fence}{{raw}} html\n{html_block}\n{fence}\n"


def pre_block(text: object, css_class: str = "dml-log") -> str:
    """A log or an error as it appears on a page: an escaped ``<pre>`` in a raw-HTML block."""
    return raw_html(f'<pre class="{html_text(css_class)}">{html_text(text)}</pre>')
