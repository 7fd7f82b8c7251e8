"""Titles and notifications written to the terminal (tui_chat.ui.terminal)."""

from __future__ import annotations

from tui_chat.ui.terminal import TerminalSignals, safe


def test_safe_text_holds_no_control_character_and_is_bounded() -> None:
    text = safe("a\x1b]0;x\x07b\u009bc\u202ed\nnext", 80)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert "\u202e" not in text  # no bidi override either
    assert safe("x" * 500, 10) == "x" * 9 + "…"


def test_notifications_are_off_by_default_and_each_style_is_one_sequence() -> None:
    out: list[str] = []
    off = TerminalSignals(out.append)
    assert not off.desktop_alert("bob", "hi") and out == []
    osc9 = TerminalSignals(out.append, "osc9")
    assert osc9.desktop_alert("bob", "hi; you")
    assert out == ["\x1b]9;bob: hi; you\x07"]
    out.clear()
    osc777 = TerminalSignals(out.append, "osc777")
    osc777.desktop_alert("a;b", "c;d")
    assert out == ["\x1b]777;notify;a,b;c,d\x07"]


def test_a_title_is_written_once_per_change() -> None:
    out: list[str] = []
    t = TerminalSignals(out.append)
    t.set_title("tui-chat · alice")
    t.set_title("tui-chat · alice")
    t.set_title("(2) tui-chat · alice")
    assert out == ["\x1b]2;tui-chat · alice\x07", "\x1b]2;(2) tui-chat · alice\x07"]
