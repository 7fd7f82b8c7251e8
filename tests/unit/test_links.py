"""Finding links in text, and choosing how to open one (tui_chat.ui.links)."""

from __future__ import annotations

from tui_chat.ui.links import find_urls, os_opener


def urls(text: str) -> list[str]:
    return [u for _, _, u in find_urls(text)]


def test_links_end_where_the_sentence_does() -> None:
    assert urls("see https://example.org/a.") == ["https://example.org/a"]
    assert urls("(at http://x.org/p?q=1)") == ["http://x.org/p?q=1"]
    assert urls("https://en.wikipedia.org/wiki/Foo_(bar) ok") == [
        "https://en.wikipedia.org/wiki/Foo_(bar)"
    ]
    assert urls("two: https://a.org, https://b.org!") == ["https://a.org", "https://b.org"]


def test_only_web_links_and_nothing_a_terminal_obeys() -> None:
    assert urls("file:///etc/passwd javascript:alert(1) ftp://x.org") == []
    assert urls("https://x.org/\x1b]8;;evil\x07") == ["https://x.org/"]
    assert urls("https://") == []


def test_the_opener_is_the_desktops_or_none() -> None:
    assert os_opener({}, "darwin") == ["open"]
    assert os_opener({}, "linux") is None  # no desktop: never a text browser in our terminal
