"""docs/protocol.md matches the code: every example is a real frame, every frame and code is
documented (the doc's own "Checking the examples" recipe, run as a test)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from tui_chat import protocol as p

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def _examples() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(r'^(?:[CS] )?(\{"type".*\})$', text, re.M)


def test_every_example_round_trips_byte_for_byte() -> None:
    lines = _examples()
    assert len(lines) >= 20
    for line in lines:
        if "…" in line:
            continue  # a shortened token
        encoded: set[str] = set()
        for decode in (p.decode_client, p.decode_server):
            with contextlib.suppress(p.FrameError):
                encoded.add(p.encode(decode(line)).decode())
        assert line in encoded, line


def test_every_frame_type_has_an_example_and_every_code_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    kinds = {line.split('"')[3] for line in _examples()}
    frames = [*p.ClientFrame.__args__, *p.ServerFrame.__args__]  # type: ignore[attr-defined]
    for frame in frames:
        tag = frame.__struct_config__.tag
        assert tag in kinds, f"no example of {tag!r}"
    codes = [v for k, v in vars(p.ErrorCode).items() if k.isupper()]
    for code in codes:
        assert f"`{code}`" in text, f"error/reject code {code!r} is not documented"
    for name, value in vars(p.CloseCode).items():
        if name.isupper() and isinstance(value, int):
            assert f"| {value} | `{name}` |" in text, f"close code {value} {name} not documented"
