"""Links in message bodies: found, shown underlined, and opened only after the user has
seen the whole URL (a link's text is the peer's, and so is where it leads)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Final

# http(s) only: a file:// or javascript: link from a peer is text, never something to open.
_URL: Final = re.compile(r"https?://[^\s<>\"'`\x00-\x1f\x7f-\x9f]+", re.IGNORECASE)
# Trailing punctuation is the sentence's, not the URL's ("see https://x.org/a.").
_TRAILING: Final = ".,;:!?'\")]}»”’"


def find_urls(text: str) -> list[tuple[int, int, str]]:
    """(start, end, url) of each link in ``text``, in order."""
    out: list[tuple[int, int, str]] = []
    for m in _URL.finditer(text):
        url = m.group(0)
        while url and url[-1] in _TRAILING:
            # A closing parenthesis stays when the URL opened one: wiki/Foo_(bar).
            if url[-1] == ")" and url.count("(") >= url.count(")"):
                break
            url = url[:-1]
        if len(url) > len("https://"):
            out.append((m.start(), m.start() + len(url), url))
    return out


def os_opener(env: Mapping[str, str], platform: str) -> list[str] | None:
    """The command that hands a URL to the desktop's browser, or None where there is none.

    Not Python's ``webbrowser``: without a desktop it falls back to a text browser in this
    very terminal, under the app.
    """
    if platform == "darwin":
        return ["open"]
    if (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")) and shutil.which("xdg-open"):
        return ["xdg-open"]
    return None


def open_url(url: str) -> str | None:
    """Open ``url`` with the desktop's opener; returns why not, or None when it was handed
    over (whether a browser then shows it is the desktop's business)."""
    opener = os_opener(os.environ, sys.platform)
    if opener is None:
        return "no desktop browser to open it with here (no DISPLAY)"
    try:
        subprocess.Popen(
            [*opener, url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        return f"{opener[0]} failed: {exc.strerror}"
    return None
