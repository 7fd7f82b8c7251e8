"""Fuzzing every parser of untrusted input, without a network: frames, config files, headless lines.

The promise checked here: whatever arrives, a parser answers with its documented error and
nothing else. ``decode_client``/``decode_server`` raise only :class:`FrameError` with a code
from ``docs/protocol.md`` (``bad_json``, ``bad_frame``, ``unknown_type``); a frame they do
accept round-trips and holds only integers a client can store. ``tui_chat.core.config.load``
(and the CLI's ``load_config``, and the server's config) raise only ``ConfigError``.
``Headless.handle_line`` answers every line with ``ok`` or one ``error`` event and never raises.

Hypothesis runs derandomized (the same examples on every run and machine) and without an
example database, so CI is reproducible; example counts keep the file to a few seconds.
The strategies here are shared with ``test_fuzz_server.py`` and ``test_fuzz_client.py``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_chat import cli
from tui_chat import protocol as p
from tui_chat.configfile import ConfigError
from tui_chat.core import config as client_config
from tui_chat.core.engine import Engine
from tui_chat.headless import Headless
from tui_chat.server import config as server_config

# ---------------------------------------------------------------- settings


def fuzz_settings(max_examples: int, **kw: Any) -> settings:
    """Reproducible: derandomized, no example database; no per-example deadline (CI noise)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        **kw,
    )


# The documented codes a decoder may give (docs/protocol.md, "Error codes").
DECODE_CODES = {p.ErrorCode.BAD_JSON, p.ErrorCode.BAD_FRAME, p.ErrorCode.UNKNOWN_TYPE}

# ---------------------------------------------------------------- strategies: JSON and junk

# Numbers that break naive parsers: past 2**53, 2**63, 2**64, floats, exponents, -0.
HUGE_NUMBERS = [
    "9007199254740992",
    "9223372036854775808",
    "18446744073709551616",
    "-9223372036854775809",
    "1" + "0" * 400,
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "0.5",
    "1.0",
    "2e53",
    "NaN",
    "Infinity",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

# Values for an int field: in range, out of range, huge, or another type entirely.
wild_ints = (
    st.integers(min_value=-3, max_value=3)
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([2**53 - 1, 2**53, 2**60, 2**63 - 1, 2**63, 2**64, -(2**63) - 1])
)
wild_values = wild_ints | json_values | st.text(min_size=60, max_size=300)
# Values for a string field: short, empty, long, with controls and markup, or another type.
wild_strings = (
    st.text(max_size=70)
    | st.sampled_from(["", " ", "bob", "alice", "a b", "x" * 65, "[bold]x[/]", "\x1b[2J", "\u202e"])
    | st.text(min_size=250, max_size=600)
)


small_ints = st.integers(min_value=0, max_value=600)
names = st.sampled_from(["alice", "bob", "carol", "dave"]) | wild_strings
client_ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z") | wild_strings


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Choose a strategy by weight (``st.one_of`` drops repeats, so it cannot weight)."""
    choices = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(choices).flatmap(lambda strategy: strategy)


def _field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes something of a wrong type or absurd size."""
    return weighted((3, plausible), (1, wild_values))


CLIENT_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "hello": {
        "v": _field(st.just(1) | wild_ints),
        "user": _field(names),
        "token": _field(wild_strings),
        "cursors": _field(st.dictionaries(wild_strings, small_ints | wild_ints, max_size=4)),
    },
    "send": {
        "client_id": _field(client_ids),
        "to": _field(names),
        "body": _field(wild_strings),
    },
    "history": {
        "conv": _field(wild_strings),
        "before": _field(small_ints | wild_ints | st.none()),
        "limit": _field(small_ints | wild_ints),
        "after": _field(small_ints | wild_ints | st.none()),
    },
    "read": {"conv": _field(wild_strings), "seq": _field(small_ints | wild_ints)},
}

_message_fields: dict[str, st.SearchStrategy[Any]] = {
    "conv": _field(wild_strings),
    "seq": _field(small_ints | wild_ints),
    "sender": _field(names),
    "to": _field(names),
    "client_id": _field(client_ids),
    "body": _field(wild_strings),
    "ts": _field(small_ints | wild_ints),
}
SERVER_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "welcome": {
        "v": _field(st.just(1) | wild_ints),
        "user": _field(names),
        "epoch": _field(wild_strings),
        "server_time": _field(small_ints | wild_ints),
        "max_body": _field(small_ints | wild_ints),
    },
    "message": _message_fields,
    "synced": {
        "cursors": _field(st.dictionaries(wild_strings, small_ints | wild_ints, max_size=4))
    },
    "ack": {
        "client_id": _field(client_ids),
        "conv": _field(wild_strings),
        "seq": _field(small_ints | wild_ints),
        "ts": _field(small_ints | wild_ints),
        "duplicate": _field(st.booleans()),
    },
    "reject": {
        "client_id": _field(wild_strings),
        "code": _field(wild_strings),
        "reason": _field(wild_strings),
        "retryable": _field(st.booleans()),
        "retry_after": _field(st.floats(allow_nan=False) | st.none()),
    },
    "history": {
        "conv": _field(wild_strings),
        "messages": _field(
            st.lists(st.fixed_dictionaries({}, optional=_message_fields), max_size=3)
        ),
        "complete": _field(st.booleans()),
        "before": _field(small_ints | wild_ints | st.none()),
        "after": _field(small_ints | wild_ints | st.none()),
    },
    "receipt": {
        "conv": _field(wild_strings),
        "user": _field(names),
        "read_seq": _field(small_ints | wild_ints),
    },
    "error": {"code": _field(wild_strings), "reason": _field(wild_strings)},
}


def frame_dicts(fields: dict[str, dict[str, st.SearchStrategy[Any]]]) -> st.SearchStrategy[Any]:
    """Objects shaped like frames: a known or made-up type, fields present or not, extras."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        kind = draw(st.sampled_from(sorted(fields)) | st.text(max_size=10) | wild_values)
        known = fields.get(kind) if isinstance(kind, str) else None
        obj: dict[str, Any] = {}
        if draw(st.integers(0, 9)):  # almost always a type field
            obj["type"] = kind
        for name, strategy in (known or fields[draw(st.sampled_from(sorted(fields)))]).items():
            if draw(st.integers(0, 5)):  # a missing field now and then
                obj[name] = draw(strategy)
        if not draw(st.integers(0, 3)):  # unknown fields must be ignored
            obj.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
        return obj

    return build()


def nested(depth: int, opener: str, closer: str, inner: str = "1") -> str:
    return opener * depth + inner + closer * depth


@st.composite
def deep_nesting(draw: st.DrawFn, frame_type: str) -> str:
    """A frame holding (or being) a structure nested far beyond any real frame."""
    depth = draw(st.integers(min_value=50, max_value=40_000))
    shape = draw(st.sampled_from(["array", "object", "unbalanced", "in-field", "in-extra"]))
    if shape == "array":
        return nested(depth, "[", "]")
    if shape == "object":
        return nested(depth, '{"a":', "}")
    if shape == "unbalanced":
        return "[" * depth
    if shape == "in-field":
        return f'{{"type":"{frame_type}","body":{nested(depth, "[", "]")}}}'
    return f'{{"type":"{frame_type}","x":{nested(depth, "[", "]")},"conv":"c","seq":1}}'


@st.composite
def huge_numbers(draw: st.DrawFn, fields: dict[str, dict[str, Any]]) -> str:
    """A frame with a number no JSON library agrees on in one of its fields."""
    kind = draw(st.sampled_from(sorted(fields)))
    names = sorted(fields[kind])
    target = draw(st.sampled_from(names))
    number = draw(st.sampled_from(HUGE_NUMBERS))
    parts = [f'"type":"{kind}"']
    for name in names:
        parts.append(f'"{name}":{number if name == target else json.dumps("x")}')
    return "{" + ",".join(parts) + "}"


@st.composite
def mutated(draw: st.DrawFn, valid: list[bytes]) -> bytes:
    """A valid frame with a few bytes replaced, inserted or cut: invalid UTF-8, stray quotes…"""
    data = bytearray(draw(st.sampled_from(valid)))
    junk = st.binary(min_size=1, max_size=4) | st.sampled_from(
        [b"\xff", b"\xc3", b"\xed\xa0\x80", b'"', b"\\", b"{", b"]", b"\x00", b"\\ud800"]
    )
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "replace", "cut"]))
        if op == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            piece = draw(junk)
            data[at : at + (len(piece) if op == "replace" else 0)] = piece
    return bytes(data)


VALID_CLIENT = [
    p.encode(f)
    for f in (
        p.Hello(v=1, user="alice", token="t" * 43, cursors={"c0123456789ab": 3}),
        p.Send(client_id="01J9ZK3Q7W-a1", to="bob", body="hi bob"),
        p.HistoryRequest(conv="c0123456789ab", before=3, limit=1, after=None),
        p.Read(conv="c0123456789ab", seq=3),
    )
]
VALID_SERVER = [
    p.encode(f)
    for f in (
        p.Welcome(v=1, user="alice", epoch="453286477f8b0a91", server_time=1795740002710),
        p.Message("c1", 1, "alice", "bob", "a-1", "hi", 1795740004226),
        p.Synced(cursors={"c1": 2}),
        p.Ack("a-1", "c1", 1, 1795740004226, False),
        p.Reject("x2", "unknown_peer", "there is no user 'dave'", False, None),
        p.HistoryPage(
            "c1", [p.HistoryMessage("c1", 2, "alice", "bob", "a-2", "m", 17957)], False, 3, None
        ),
        p.Receipt("c1", "bob", 3),
        p.Error("bad_frame", "Expected `str`"),
    )
]


def junk_frames(
    fields: dict[str, dict[str, st.SearchStrategy[Any]]], valid: list[bytes]
) -> st.SearchStrategy[str | bytes]:
    """Everything a hostile peer might put in a frame, as text or bytes."""
    kinds = sorted(fields)
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        json_values.map(json.dumps),
        frame_dicts(fields).map(json.dumps),
        frame_dicts(fields).map(lambda o: json.dumps(o).encode()),
        st.sampled_from(kinds).flatmap(deep_nesting),
        huge_numbers(fields),
        mutated(valid),
    )


client_junk = junk_frames(CLIENT_FIELDS, VALID_CLIENT)
server_junk = junk_frames(SERVER_FIELDS, VALID_SERVER)


# ---------------------------------------------------------------- the decoders


# Every integer a client may store must fit the documented bound (and SQLite's INTEGER).
def _ints_in_bounds(frame: p.ServerFrame) -> list[int]:
    if isinstance(frame, p.Message | p.Ack):
        return [frame.seq, frame.ts]
    if isinstance(frame, p.HistoryPage):
        out = [m.seq for m in frame.messages] + [m.ts for m in frame.messages]
        return out + [x for x in (frame.before, frame.after) if x is not None]
    if isinstance(frame, p.Synced):
        return list(frame.cursors.values())
    if isinstance(frame, p.Receipt):
        return [frame.read_seq]
    if isinstance(frame, p.Welcome):
        return [frame.server_time]
    return []


def classify(decode: Any, raw: str | bytes) -> tuple[str, Any]:
    """("ok", frame) or ("error", code); anything else escapes and fails the test."""
    try:
        return "ok", decode(raw)
    except p.FrameError as exc:
        # The reason goes into error frames and the client's log: no raw control characters.
        assert isinstance(exc.reason, str) and exc.reason and exc.reason.isprintable()
        return "error", exc.code


@fuzz_settings(600)
@given(raw=client_junk)
def test_decode_client_raises_only_documented_frame_errors(raw: str | bytes) -> None:
    kind, value = classify(p.decode_client, raw)
    if kind == "error":
        assert value in DECODE_CODES
        return
    # Accepted: it round-trips, and it is within the documented limits.
    assert p.decode_client(p.encode(value)) == value
    if isinstance(value, p.Send):
        assert p.CLIENT_ID_RE.match(value.client_id) and 1 <= len(value.to) <= 64
    elif isinstance(value, p.Read):
        assert 0 <= value.seq <= p.MAX_SEQ
    elif isinstance(value, p.HistoryRequest):
        assert 1 <= value.limit <= 500
    elif isinstance(value, p.Hello):
        assert all(0 <= s <= p.MAX_SEQ for s in value.cursors.values())


@fuzz_settings(600)
@given(raw=server_junk)
def test_decode_server_raises_only_documented_frame_errors(raw: str | bytes) -> None:
    kind, value = classify(p.decode_server, raw)
    if kind == "error":
        assert value in DECODE_CODES
        return
    assert p.decode_server(p.encode(value)) == value
    for number in _ints_in_bounds(value):
        assert 0 <= number <= p.MAX_SEQ, value


@fuzz_settings(150)
@given(obj=frame_dicts(CLIENT_FIELDS))
def test_decode_client_codes_follow_the_documented_rules(obj: Any) -> None:
    """Valid JSON never gets ``bad_json``; a made-up ``type`` string is ``unknown_type``."""
    kind, value = classify(p.decode_client, json.dumps(obj))
    if kind == "ok":
        return
    assert value != p.ErrorCode.BAD_JSON
    frame_type = obj.get("type")
    if isinstance(frame_type, str) and frame_type not in CLIENT_FIELDS:
        assert value == p.ErrorCode.UNKNOWN_TYPE
    else:
        assert value == p.ErrorCode.BAD_FRAME


@pytest.mark.parametrize("decode", [p.decode_client, p.decode_server])
@pytest.mark.parametrize(
    ("raw", "code"),
    [
        # Invalid UTF-8 inside a string of a binary frame: msgspec raises UnicodeDecodeError.
        (b'{"type":"send","client_id":"a","to":"bob","body":"\xff"}', "bad_json"),
        (b'{"type":"error","code":"x","reason":"\xc3"}', "bad_json"),
        (b'{"type":"x\xed\xa0\x80"}', "bad_json"),
        # Deep nesting: msgspec raises RecursionError; one 64 KiB frame holds 32,000 levels.
        ("[" * 30_000 + "]" * 30_000, "bad_json"),
        ('{"type":"send","body":' + "[" * 5_000 + "]" * 5_000 + "}", "bad_json"),
        ('{"a":' * 5_000 + "1" + "}" * 5_000, "bad_json"),
        # Escaped lone surrogates are not text.
        ('{"type":"error","code":"x","reason":"\\udc00"}', "bad_json"),
        # "history" is both a client and a server frame.
        ('{"type":"history","conv":"c","before":1e400}', "bad_json"),
        ('{"type":"history","conv":"c","before":' + "9" * 400 + "}", "bad_frame"),
    ],
    ids=[
        "utf8-in-string",
        "utf8-truncated",
        "utf8-surrogate-bytes",
        "deep-array",
        "deep-in-field",
        "deep-object",
        "escaped-lone-surrogate",
        "float-overflow",
        "400-digit-int",
    ],
)
def test_decoders_turn_unreadable_json_into_bad_json(
    decode: Any, raw: str | bytes, code: str
) -> None:
    """Found by the fuzzers: these escaped as UnicodeDecodeError and RecursionError."""
    with pytest.raises(p.FrameError) as caught:
        decode(raw)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message", "conv": "c1", "seq": 0, "sender": "bob", "to": "alice",
         "client_id": "x", "body": "b", "ts": 1},
        {"type": "message", "conv": "c1", "seq": -1, "sender": "bob", "to": "alice",
         "client_id": "x", "body": "b", "ts": 1},
        {"type": "message", "conv": "c1", "seq": 2**60, "sender": "bob", "to": "alice",
         "client_id": "x", "body": "b", "ts": 1},
        {"type": "message", "conv": "c1", "seq": 1, "sender": "bob", "to": "alice",
         "client_id": "x", "body": "b", "ts": 10**30},
        {"type": "ack", "client_id": "x", "conv": "c1", "seq": 2**64, "ts": 1},
        {"type": "receipt", "conv": "c1", "user": "bob", "read_seq": 2**63},
        {"type": "synced", "cursors": {"c1": -1}},
        {"type": "history", "conv": "c1", "complete": True, "before": 0,
         "messages": []},
        {"type": "history", "conv": "c1", "complete": True, "messages": [
            {"conv": "c1", "seq": 2**53, "sender": "b", "to": "a", "client_id": "x",
             "body": "b", "ts": 1}]},
    ],
)  # fmt: skip
def test_decode_server_refuses_integers_outside_the_documented_bounds(frame: Any) -> None:
    """Integers are bounded to 0 … 2**53 - 1 (seq from 1): before the fix a huge seq, ts or
    read_seq passed and crashed the engine's SQLite insert with OverflowError, and a negative
    cursor in ``synced`` made it resync and reconnect in a tight loop."""
    with pytest.raises(p.FrameError) as caught:
        p.decode_server(json.dumps(frame))
    assert caught.value.code == p.ErrorCode.BAD_FRAME


# ---------------------------------------------------------------- config files

GOOD_CONFIG = '[server]\nurl = "ws://127.0.0.1:1"\n\n[account]\nuser = "alice"\ntoken = "secret"\n'
GOOD_SERVER_CONFIG = (
    "[server]\nport = 0\n[limits]\nmax_body = 10\n[durability]\nsynchronous = 'NORMAL'\n"
)

toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["ws://h:1", "wss://h:1", "http://x", "hold", "continue", "~/tok", "alice"])
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _toml_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's (DEL and the like stay raw and make the file invalid,
        # which is one more malformed case).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    lines = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for section, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_toml_key(section)}]")
            lines.extend(f"{_toml_key(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# Values of the right type for well-known keys, so that generated files get past the type
# checks into the range, pattern and cross-key checks.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "url": st.sampled_from(["ws://127.0.0.1:1", "wss://h:1", "http://x", "ws:/x", ""]),
    "user": st.sampled_from(["alice", "Alice", "a" * 33, "_x", "b.o-b"]),
    "token": st.sampled_from(["t", "", "  ", "x" * 300]),
    "token_file": st.sampled_from(["~/tok", "/nonexistent", ""]),
    "token_command": st.lists(st.text(max_size=5), max_size=2),
    "on_failure": st.sampled_from(["hold", "continue", "drop"]),
    "port": st.integers(-5, 70_000),
    "synchronous": st.sampled_from(["FULL", "NORMAL", "OFF"]),
}
for _name in (
    *client_config.SyncSection.__struct_fields__,
    *server_config.Limits.__struct_fields__,
):
    PLAUSIBLE.setdefault(_name, st.floats(min_value=-10, max_value=1e6) | st.integers(-10, 10**6))


def _section(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    known = st.fixed_dictionaries(
        {}, optional={k: PLAUSIBLE.get(k, toml_values) | toml_values for k in keys}
    )
    extra = st.dictionaries(st.text(max_size=10), toml_values, max_size=1)
    return st.builds(
        lambda a, b, on: {**a, **b} if on else a,
        known,
        extra,
        st.integers(0, 4).map(lambda n: n == 0),
    )


CLIENT_SECTIONS = {
    "server": ["url", "ca_file"],
    "account": ["user", "token", "token_file", "token_command"],
    "storage": ["dir"],
    "sync": list(client_config.SyncSection.__struct_fields__),
    "ui": list(client_config.UiSection.__struct_fields__),
    "keys": ["retry", "give_up", "quit", "retry_all", "nonsense"],
}
SERVER_SECTIONS = {
    "server": list(server_config.ServerSection.__struct_fields__),
    "limits": list(server_config.Limits.__struct_fields__),
    "durability": list(server_config.Durability.__struct_fields__),
    "keepalive": list(server_config.Keepalive.__struct_fields__),
}


def config_documents(sections: dict[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    """Config-shaped documents: the right sections and keys with values of any type and size,
    plus made-up sections and keys, and sections that are not tables at all."""
    known = st.fixed_dictionaries(
        {}, optional={name: _section(keys) | toml_values for name, keys in sections.items()}
    )
    extra = st.dictionaries(st.text(max_size=8), toml_values, max_size=1)
    return st.builds(
        lambda a, b, on: {**a, **b} if on else a,
        known,
        extra,
        st.integers(0, 4).map(lambda n: n == 0),
    )


@st.composite
def mutated_text(draw: st.DrawFn, good: str) -> bytes:
    data = bytearray(good.encode())
    junk = st.binary(min_size=1, max_size=3) | st.sampled_from(
        [b"\xff", b"=", b"[", b"]", b'"', b"'", b"\n", b"1979-05-27T07:32:00Z", b"[[x]]", b"\\u"]
    )
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            del data[at : at + draw(st.integers(1, 6))]
        else:
            data[at:at] = draw(junk)
    return bytes(data)


def config_files(good: str, sections: dict[str, list[str]]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        config_documents(sections).map(lambda d: toml_document(d).encode()),
        mutated_text(good),
    )


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


@fuzz_settings(400)
@given(data=config_files(GOOD_CONFIG, CLIENT_SECTIONS))
def test_client_config_load_raises_only_config_error(config_dir: Path, data: bytes) -> None:
    path = config_dir / "config.toml"
    path.write_bytes(data)
    for load in (client_config.load, lambda f: cli.load_config(str(f))[0]):
        try:
            cfg = load(path)
        except ConfigError as exc:
            assert str(path) in str(exc)
            # One line, whatever the file holds (a quoted key may contain "\n" or ESC).
            assert "\n" not in str(exc) and "\x1b" not in str(exc)
        else:
            assert isinstance(cfg, client_config.ClientConfig)


@fuzz_settings(200)
@given(data=config_files(GOOD_SERVER_CONFIG, SERVER_SECTIONS))
def test_server_config_load_raises_only_config_error(config_dir: Path, data: bytes) -> None:
    path = config_dir / "server.toml"
    path.write_bytes(data)
    try:
        cfg = server_config.load(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(cfg, server_config.ServerConfig)


def test_config_fuzz_strategies_reach_valid_files(config_dir: Path) -> None:
    """The generators are not all noise: the good files they start from do load."""
    for good, load in ((GOOD_CONFIG, client_config.load), (GOOD_SERVER_CONFIG, server_config.load)):
        path = config_dir / "good.toml"
        path.write_text(good)
        load(path)
    doc = {"account": {"user": "alice", "token": "t"}, "sync": {"on_failure": "continue"}}
    path.write_text(toml_document(doc))
    assert client_config.load(path).sync.on_failure == "continue"


# ---------------------------------------------------------------- headless input lines

HEADLESS_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": _field(st.text(max_size=8) | st.integers() | st.none()),
    "to": _field(wild_strings | st.sampled_from(["bob", "carol", "Bob", "a" * 40])),
    "body": _field(wild_strings),
    "client_id": _field(wild_strings),
    "peer": _field(wild_strings),
}
HEADLESS_CMDS = ["send", "retry", "retry_all", "give_up", "edit", "reconnect", "read", "status"]


@st.composite
def headless_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        obj["cmd"] = draw(st.sampled_from(HEADLESS_CMDS) | wild_values)
    obj.update(draw(st.fixed_dictionaries({}, optional=HEADLESS_FIELDS)))
    obj.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=1)))
    return obj


headless_lines = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    headless_objects().map(json.dumps),
    st.sampled_from(
        ["send", "{", "{}", "null", '{"cmd":"quit"', "[" * 20_000, '{"cmd":"\\ud800"}']
    ),
    st.builds(
        lambda d: '{"cmd":"send","to":"bob","body":' + "[" * d + "]" * d + "}",
        st.integers(1, 20_000),
    ),
)


def output_lines(out: io.StringIO) -> list[dict[str, Any]]:
    # Split on "\n" only, as a reader of the pipe does: str.splitlines() would also split
    # inside a reason that quotes U+0085 or U+2028, which JSON leaves unescaped.
    return [json.loads(x) for x in out.getvalue().split("\n") if x]


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A Headless over a real engine (store on disk) that never connects: lines only."""
    root = tmp_path_factory.mktemp("fuzz-headless")
    cfg = client_config.ClientConfig(
        account=client_config.AccountSection(user="alice", token="t"),
        server=client_config.ServerSection(url="ws://127.0.0.1:9"),
        storage=client_config.StorageSection(dir=str(root)),
    )
    engine = Engine(cfg, "t")
    out = io.StringIO()
    yield Headless(engine, out), out
    engine.close()


@fuzz_settings(400)
@given(line=headless_lines)
def test_headless_lines_get_ok_or_one_error_never_an_exception(headless: Any, line: str) -> None:
    handler, out = headless
    out.seek(0)
    out.truncate()
    keep_going = handler.handle_line(line)
    events = output_lines(out)
    replies = [e for e in events if e["event"] in ("ok", "error")]
    if not line.strip():
        assert keep_going and events == []
        return
    # Exactly one answer to the line, whatever else the engine reported.
    assert len(replies) == 1, events
    reply = replies[0]
    if reply["event"] == "error":
        assert reply["code"] in ("bad_command", "rejected") and isinstance(reply["reason"], str)
        assert keep_going
    else:
        assert keep_going is (reply["cmd"] != "quit")
    try:
        msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        assert reply == {"event": "error", "code": "bad_command", "reason": reply["reason"]}


def test_headless_odd_but_valid_lines(headless: Any) -> None:
    """A few lines worth naming: each gets exactly its documented answer."""
    handler, out = headless
    cases = [
        ('{"cmd":"send","to":"bob","body":"   "}', ("error", "rejected")),
        ('{"cmd":"send","to":"[bold]x[/]","body":"hi"}', ("error", "rejected")),
        ('{"cmd":"edit","client_id":"nope","body":"x"}', ("error", "rejected")),
        ('{"cmd":"give_up","client_id":"nope"}', ("error", "rejected")),
        ('{"cmd":"status","id":1.5}', ("error", "bad_command")),
        ('{"cmd":"status","id":' + "9" * 50 + "}", ("ok", None)),
        ('{"cmd":"read","peer":"\\u0000"}', ("ok", None)),
        ('{"cmd":"send","to":"bob","body":"hi","sender":"mallory"}', ("error", "bad_command")),
    ]
    for line, (event, code) in cases:
        out.seek(0)
        out.truncate()
        assert handler.handle_line(line)
        replies = [r for r in output_lines(out) if r["event"] in ("ok", "error")]
        assert [(r["event"], r.get("code")) for r in replies] == [(event, code)], (line, replies)
