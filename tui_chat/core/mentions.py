"""Whether a message names the user: the rule behind highlights and mention counts.

A text from someone else mentions me when it contains my name as a whole word,
optionally written ``@name``, in any case. Word characters around the name are
``[A-Za-z0-9_.-]`` (the characters of a user name), so ``alice`` is not mentioned by
``alice.b`` or ``malice``. One leniency: dots or dashes right after the name that are
not followed by a letter, digit or ``_`` end the sentence, not the name ("thanks alice.").
"""

from __future__ import annotations

import functools
import re

_WORD = "A-Za-z0-9_.-"


@functools.lru_cache(maxsize=64)
def _pattern(user: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?<![{_WORD}@])@?(?<![{_WORD}]){re.escape(user)}(?![.-]*[A-Za-z0-9_])",
        re.IGNORECASE,
    )


def mention_spans(text: str, user: str) -> list[tuple[int, int]]:
    """(start, end) of every mention of ``user`` in ``text`` (the "@" included)."""
    if not user:
        return []
    return [m.span() for m in _pattern(user).finditer(text)]


def mentions(text: str, user: str) -> bool:
    """True when ``text`` names ``user`` (see the module's rule)."""
    return bool(user) and _pattern(user).search(text) is not None
