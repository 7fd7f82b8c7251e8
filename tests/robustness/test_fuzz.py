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
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import (
    CLIENT_FIELDS,
    DECODE_CODES,
    client_junk,
    frame_dicts,
    fuzz_settings,
    json_values,
    maybe,
    server_junk,
    wild_strings,
    wild_values,
)
from tui_chat import cli
from tui_chat import protocol as p
from tui_chat.configfile import ConfigError
from tui_chat.core import config as client_config
from tui_chat.core.engine import Engine
from tui_chat.headless import Headless
from tui_chat.server import config as server_config

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
    "id": maybe(st.text(max_size=8) | st.integers() | st.none()),
    "to": maybe(wild_strings | st.sampled_from(["bob", "carol", "Bob", "a" * 40])),
    "body": maybe(wild_strings),
    "client_id": maybe(wild_strings),
    "peer": maybe(wild_strings),
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
