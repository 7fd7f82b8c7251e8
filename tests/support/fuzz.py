"""Hypothesis settings and strategies for the fuzz tests: wild values, junk frames.

Shared by the decoder, server and client fuzz tests so that all three throw the same junk.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tui_chat import protocol as p

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


def maybe(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes something of a wrong type or absurd size."""
    return weighted((3, plausible), (1, wild_values))


CLIENT_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "hello": {
        "v": maybe(st.just(1) | wild_ints),
        "user": maybe(names),
        "token": maybe(wild_strings),
        "cursors": maybe(st.dictionaries(wild_strings, small_ints | wild_ints, max_size=4)),
    },
    "send": {
        "client_id": maybe(client_ids),
        "to": maybe(names),
        "body": maybe(wild_strings),
    },
    "history": {
        "conv": maybe(wild_strings),
        "before": maybe(small_ints | wild_ints | st.none()),
        "limit": maybe(small_ints | wild_ints),
        "after": maybe(small_ints | wild_ints | st.none()),
    },
    "read": {"conv": maybe(wild_strings), "seq": maybe(small_ints | wild_ints)},
}

_message_fields: dict[str, st.SearchStrategy[Any]] = {
    "conv": maybe(wild_strings),
    "seq": maybe(small_ints | wild_ints),
    "sender": maybe(names),
    "to": maybe(names),
    "client_id": maybe(client_ids),
    "body": maybe(wild_strings),
    "ts": maybe(small_ints | wild_ints),
}
SERVER_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "welcome": {
        "v": maybe(st.just(1) | wild_ints),
        "user": maybe(names),
        "epoch": maybe(wild_strings),
        "server_time": maybe(small_ints | wild_ints),
        "max_body": maybe(small_ints | wild_ints),
    },
    "message": _message_fields,
    "synced": {"cursors": maybe(st.dictionaries(wild_strings, small_ints | wild_ints, max_size=4))},
    "ack": {
        "client_id": maybe(client_ids),
        "conv": maybe(wild_strings),
        "seq": maybe(small_ints | wild_ints),
        "ts": maybe(small_ints | wild_ints),
        "duplicate": maybe(st.booleans()),
    },
    "reject": {
        "client_id": maybe(wild_strings),
        "code": maybe(wild_strings),
        "reason": maybe(wild_strings),
        "retryable": maybe(st.booleans()),
        "retry_after": maybe(st.floats(allow_nan=False) | st.none()),
    },
    "history": {
        "conv": maybe(wild_strings),
        "messages": maybe(
            st.lists(st.fixed_dictionaries({}, optional=_message_fields), max_size=3)
        ),
        "complete": maybe(st.booleans()),
        "before": maybe(small_ints | wild_ints | st.none()),
        "after": maybe(small_ints | wild_ints | st.none()),
    },
    "receipt": {
        "conv": maybe(wild_strings),
        "user": maybe(names),
        "read_seq": maybe(small_ints | wild_ints),
    },
    "error": {"code": maybe(wild_strings), "reason": maybe(wild_strings)},
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
        p.Message("c1", 1, "alice", "a-1", "hi", 1795740004226, to="bob"),
        p.Synced(cursors={"c1": 2}),
        p.Ack("a-1", "c1", 1, 1795740004226, False),
        p.Reject("x2", "unknown_peer", "there is no user 'dave'", False, None),
        p.HistoryPage(
            "c1", [p.HistoryMessage("c1", 2, "alice", "a-2", "m", 17957, to="bob")], False, 3, None
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
