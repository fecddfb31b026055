"""HTML to main-content text with Resiliparse (see README: chosen over trafilatura for speed)."""

from __future__ import annotations

from typing import Optional

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree


def decode(payload: bytes, charset: Optional[str]) -> str:
    """Bytes to text: the declared charset when it decodes cleanly, else a detected one."""
    if charset:
        try:
            return payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    return bytes_to_str(payload, detect_encoding(payload))


def html_to_text(html: str) -> str:
    tree = HTMLTree.parse(html)
    return extract_plain_text(tree, main_content=True, preserve_formatting=True, alt_texts=False,
                              list_bullets=False)
