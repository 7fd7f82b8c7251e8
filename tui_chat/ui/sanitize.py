"""Make text that a peer or a server wrote safe to put on a terminal.

Textual strips only some control characters; an ESC that reaches the terminal
can move the cursor, change colours or worse. Every C0/C1 control (except
newline), DEL and the bidirectional overrides that can disguise text are
replaced by visible symbols, so the reader sees that they were there.
"""

from __future__ import annotations

import re
from typing import Final

_C0_PICTURES: Final = {i: chr(0x2400 + i) for i in range(0x20)}  # ␀ … ␟
_BIDI: Final = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"

_UNSAFE_RE: Final = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f" + _BIDI + "]")


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if ch == "\t":
        return "    "
    if code < 0x20:
        return _C0_PICTURES[code]
    if code == 0x7F:
        return "␡"
    if code <= 0x9F:
        return f"<{code:02X}>"
    return f"<U+{code:04X}>"


def clean(text: str, *, single_line: bool = False) -> str:
    """Replace control characters with visible symbols (newlines too if single_line)."""
    out = _UNSAFE_RE.sub(_visible, text)
    if single_line:
        out = out.replace("\n", "␤")
    return out
