"""Characters that can act on a terminal or disguise text, and how magray shows them.

Stored text is anyone's: a note copied from a web page may hold ``ESC [2J`` (clear the
screen), ``ESC ] 0;...BEL`` (retitle the window), a carriage return that hides the start of a
line, or a right-to-left override that shows ``ls -la`` for what is really
``curl ... | sh``. magray keeps such text exactly, and never lets it reach a terminal raw:

- ``visible`` escapes it for people (tables, ``show``, messages): ``\\x1b``, ``\\r``, ``\\u202e``;
- ``field`` escapes it for plain piped lines, reversibly, one record per line: backslash,
  tab, newline and CR as ``\\\\ \\t \\n \\r`` (PostgreSQL's COPY text format) and the rest as
  above;
- ``dumps`` writes JSON that decodes to exactly the stored text, with the same characters
  written as ``\\uXXXX`` escapes (so a lone surrogate never makes the encoder fail either).

A leaf: no magray imports.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls, DEL and C1 controls; lone surrogates (invalid UTF-8 read with
# surrogateescape); line and paragraph separators; and the invisible format characters
# (category Cf) that reorder or hide text: soft hyphen, Arabic/Syriac marks, the Mongolian
# vowel separator, zero-width space, LRM/RLM, bidi embeddings, overrides and isolates, word
# joiner and invisible operators, BOM, interlinear annotation, Unicode tag characters (which
# can smuggle invisible ASCII)... ZWNJ and ZWJ (U+200C, U+200D) are left alone: they join
# emoji and letters of many scripts, and move nothing.
_UNSAFE = ("\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
           "\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
           "\ud800-\udfff\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
           "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f")
UNSAFE = re.compile(f"[{_UNSAFE}]")
_FIELD = re.compile(f"[\\\\{_UNSAFE}]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_char(ch: str) -> str:
    """One character as a Python-style escape: ``\\t``, ``\\x1b``, ``\\u202e``."""
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, keep: str = "") -> str:
    """``text`` for a person at a terminal: every unsafe character escaped, except those in
    ``keep`` (``show`` keeps newlines and tabs in a record's body)."""
    return UNSAFE.sub(lambda m: m[0] if m[0] in keep else escape_char(m[0]), text)


def field(text: str) -> str:
    """``text`` as one tab-separated field of one line: reversible (backslash doubled)."""
    return _FIELD.sub(lambda m: escape_char(m[0]), text)


def dumps(data: Any, **options: Any) -> str:
    """JSON for ``data`` (ensure_ascii off, so text stays readable), with unsafe characters
    written as ``\\uXXXX``. This changes no value: inside strings json already escapes
    C0 controls, so a raw tab or newline is indentation; outside strings all is ASCII."""
    return UNSAFE.sub(lambda m: m[0] if m[0] in "\t\n\r" else json.dumps(m[0])[1:-1],
                      json.dumps(data, ensure_ascii=False, **options))


def has_surrogate(text: str) -> bool:
    """Does ``text`` hold a lone surrogate: bytes that were not UTF-8, or a JSON ``\\ud800``
    escape with no partner? Such text cannot be stored, exported or printed."""
    return _SURROGATE.search(text) is not None


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, the replacement character."""
    return _SURROGATE.sub("\ufffd", text)
