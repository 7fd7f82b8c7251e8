"""What a user may read of a group: reads that honour membership intervals.

A member sees every event of a group from the seq at which they joined (the ``created``
event, or their own ``added``) up to and including the event that ended their membership
(their ``removed`` or ``left``); re-added, a new interval begins at the new ``added``. The
intervals are rows of the ``members`` table, so each read below joins ``messages`` with
them *in the same statement*: a removal committed while a replay or a history request runs
can never let an event after it through, whatever the client asked for.

Seqs at or below an existing event never become visible or invisible later (an interval
only ever ends at a new event, and a new one only starts at a new event), so checks that
run as separate statements about seqs below what was read (``complete``) stay true.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Final

from tui_chat.protocol import Message

_COLUMNS: Final = "m.conv, m.seq, m.sender, m.recipient, m.client_id, m.body, m.ts, "
# Rows of ``messages`` inside one of ``account``'s intervals of the group. ``mine`` marks
# the ``added`` event that began an interval: that copy carries the member list.
_VISIBLE: Final = (
    "SELECT " + _COLUMNS + "m.kind, m.user, m.title, m.members, "
    "(m.kind = 'added' AND m.seq = v.joined_seq) AS mine "
    "FROM messages m JOIN members v ON v.conv = m.conv AND v.user_id = :account "
    "AND m.seq >= v.joined_seq AND (v.left_seq IS NULL OR m.seq <= v.left_seq) "
    "WHERE m.conv = :conv "
    # The same rule once more as bounds of the primary-key range, so that a former member
    # asking for the newest page of a long group does not walk every later event.
    "AND m.seq >= (SELECT MIN(joined_seq) FROM members WHERE conv = :conv AND user_id = :account) "
    "AND m.seq <= (SELECT MAX(COALESCE(left_seq, :top)) FROM members "
    "WHERE conv = :conv AND user_id = :account) "
)
_TOP: Final = 2**62


def is_group(conn: sqlite3.Connection, conv: str) -> bool:
    return conn.execute("SELECT 1 FROM groups WHERE id=?", (conv,)).fetchone() is not None


def ever_member(conn: sqlite3.Connection, conv: str, account: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM members WHERE conv=? AND user_id=? LIMIT 1", (conv, account)
    ).fetchone()
    return row is not None


def groups_of(conn: sqlite3.Connection, account: int) -> dict[str, int]:
    """Every group ``account`` was ever a member of -> the last seq visible to it."""
    rows = conn.execute(
        "SELECT v.conv, MAX(CASE WHEN v.left_seq IS NULL THEN g.last_seq ELSE v.left_seq END) "
        "FROM members v JOIN groups g ON g.id = v.conv WHERE v.user_id=? GROUP BY v.conv",
        (account,),
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def members_at(conn: sqlite3.Connection, conv: str, seq: int) -> list[str]:
    """The members of ``conv`` just after its event ``seq``, in join order."""
    rows = conn.execute(
        "SELECT user FROM members WHERE conv=? AND joined_seq<=? "
        "AND (left_seq IS NULL OR left_seq>?) ORDER BY ord",
        (conv, seq, seq),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _message(conn: sqlite3.Connection, r: tuple[object, ...]) -> Message:
    conv, seq, sender, _recipient, client_id, body, ts, kind, user, title, members, mine = r
    names: list[str] | None = None
    if members is not None:
        names = json.loads(str(members))
    elif mine:
        names = members_at(conn, str(conv), int(seq))  # type: ignore[call-overload]
    return Message(
        conv=str(conv),
        seq=int(seq),  # type: ignore[call-overload]
        sender=str(sender),
        client_id=str(client_id),
        body=str(body),
        ts=int(ts),  # type: ignore[call-overload]
        kind=str(kind),
        user=None if user is None else str(user),
        title=None if title is None else str(title),
        members=names,
    )


def visible_after(
    conn: sqlite3.Connection, account: int, conv: str, after: int, limit: int
) -> list[Message]:
    """Up to ``limit`` visible events of group ``conv`` with seq > ``after``, ascending."""
    rows = conn.execute(
        _VISIBLE + "AND m.seq > :after ORDER BY m.seq LIMIT :limit",
        {"account": account, "conv": conv, "top": _TOP, "after": after, "limit": limit},
    ).fetchall()
    return [_message(conn, r) for r in rows]


def visible_before(
    conn: sqlite3.Connection, account: int, conv: str, before: int | None, after: int, limit: int
) -> list[Message]:
    """Up to ``limit`` newest visible events with ``after < seq < before``, ascending."""
    upper = before if before is not None else _TOP
    rows = conn.execute(
        _VISIBLE + "AND m.seq < :before AND m.seq > :after ORDER BY m.seq DESC LIMIT :limit",
        {
            "account": account,
            "conv": conv,
            "top": _TOP,
            "before": upper,
            "after": after,
            "limit": limit,
        },
    ).fetchall()
    rows.reverse()
    return [_message(conn, r) for r in rows]


def visible_between(
    conn: sqlite3.Connection, account: int, conv: str, after: int, before: int
) -> bool:
    """Is any event of ``conv`` with ``after < seq < before`` visible to ``account``?"""
    row = conn.execute(
        "SELECT 1 FROM members WHERE conv=? AND user_id=? AND joined_seq < ? "
        "AND (left_seq IS NULL OR left_seq > ?) "
        "AND MAX(joined_seq, ? + 1) <= MIN(COALESCE(left_seq, ?), ? - 1) LIMIT 1",
        (conv, account, before, after, after, before, before),
    ).fetchone()
    return row is not None


def group_read_positions(conn: sqlite3.Connection, account: int) -> list[tuple[str, str, int]]:
    """Read positions of the current members of every group ``account`` is in now."""
    rows = conn.execute(
        "SELECT r.conv, r.user, r.read_seq FROM members me JOIN reads r ON r.conv = me.conv "
        "WHERE me.user_id=? AND me.left_seq IS NULL AND EXISTS ("
        " SELECT 1 FROM members v WHERE v.conv = r.conv AND v.user = r.user"
        " AND v.left_seq IS NULL)",
        (account,),
    ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
