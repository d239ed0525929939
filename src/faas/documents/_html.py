"""HTML to markdown-ish text with the stdlib parser.

The stdlib `html.parser` is tolerant of broken markup, decodes entities and treats
script/style as raw text, which is all text extraction needs; lxml would be faster but its
HTML parser silently drops content after some malformed constructs, and keeping it out of
this path means one less C parser facing untrusted input.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Final

from faas.documents._model import UnreadableDocument
from faas.documents.formats import decode_text

_SKIP: Final = frozenset(
    {"script", "style", "noscript", "template", "svg", "math", "nav", "footer", "iframe", "object"}
    | {"canvas", "select", "button"}
)
_VOID: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
    | {"track", "wbr"}
)
_BLOCK: Final = frozenset(
    {"p", "div", "section", "article", "main", "header", "aside", "blockquote", "pre", "table"}
    | {"figure", "figcaption", "dl", "dt", "dd", "address", "details", "summary", "form"}
    | {"fieldset", "hr", "body", "ul", "ol", "caption", "thead", "tbody", "tfoot"}
)
_HEADINGS: Final = {f"h{n}": n for n in range(1, 7)}
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)


class _Extractor(HTMLParser):
    def __init__(self, max_chars: int) -> None:
        super().__init__(convert_charrefs=True)
        self.max_chars = max_chars
        self.blocks: list[str] = []
        self.size = 0
        self.title: str | None = None
        self.first_h1: str | None = None
        self._lines: list[str] = []
        self._parts: list[str] = []
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._pre = 0
        self._in_title = False
        self._title_parts: list[str] = []
        self._heading: int = 0
        self._row_cells = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_tag is not None:
            self._skip_depth += tag == self._skip_tag
            return
        hidden = any(k == "hidden" or (k == "aria-hidden" and v == "true") for k, v in attrs)
        if tag not in _VOID and (tag in _SKIP or hidden):
            self._skip_tag, self._skip_depth = tag, 1
        elif tag == "title":
            self._in_title = True
        elif tag in _HEADINGS:
            self._flush_block()
            self._heading = _HEADINGS[tag]
            self._parts.append("#" * self._heading + " ")
        elif tag == "br":
            self._flush_line()
        elif tag == "li":
            self._flush_line()
            self._parts.append("- ")
        elif tag == "tr":
            self._flush_line()
            self._row_cells = 0
        elif tag in ("td", "th"):
            if self._row_cells:
                self._parts.append(" | ")
            self._row_cells += 1
        elif tag in _BLOCK:
            self._flush_block()
            self._pre += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag == "title":
            self._in_title = False
            if self.title is None:
                self.title = " ".join("".join(self._title_parts).split()) or None
        elif tag in _HEADINGS:
            if self._heading == 1 and self.first_h1 is None:
                self.first_h1 = " ".join("".join(self._parts)[2:].split()) or None
            self._heading = 0
            self._flush_block()
        elif tag in ("tr", "li"):
            self._flush_line()
        elif tag in _BLOCK:
            self._pre = max(0, self._pre - (tag == "pre"))
            self._flush_block()

    def handle_data(self, data: str) -> None:
        if self._skip_tag is not None:
            return
        if self._in_title:
            self._title_parts.append(data)
            return
        if not self._pre:
            self._parts.append(data)
            return
        first, *rest = data.split("\n")
        self._parts.append(first)
        for line in rest:
            self._flush_line()
            self._parts.append(line)

    def close(self) -> None:
        super().close()
        self._flush_block()

    def _flush_line(self) -> None:
        raw = "".join(self._parts)
        self._parts = []
        line = raw.rstrip() if self._pre else " ".join(raw.split())
        if line.strip("#- |"):
            self._lines.append(line)
        elif self._pre and self._lines:
            self._lines.append("")

    def _flush_block(self) -> None:
        self._flush_line()
        if self._lines:
            block = "\n".join(self._lines).strip("\n")
            self._lines = []
            self.blocks.append(block)
            self.size += len(block) + 2
            if self.size > self.max_chars:
                raise UnreadableDocument(
                    f"HTML text exceeds {self.max_chars} characters",
                    reason="too_large",
                    details={"max_chars": self.max_chars},
                )


def html_to_text(data: bytes, max_chars: int) -> tuple[str, str | None, str]:
    """(text, title, encoding) of an HTML page; headings become markdown `#` lines."""
    match = _META_CHARSET.search(data[:4096])
    declared = match.group(1).decode("ascii", "replace") if match else None
    markup, encoding = decode_text(data, declared=declared)
    extractor = _Extractor(max_chars)
    extractor.feed(markup)
    extractor.close()
    return "\n\n".join(extractor.blocks), extractor.title or extractor.first_h1, encoding
