"""The delivery checker of the chaos runs: reads every view of every message and judges it.

A chaos run ends with a server database, one local store per client and one event log per
client (the JSON lines its ``tui-chat headless`` processes printed, one list per process
lifetime, an *incarnation*). :func:`check` compares them and returns a :class:`Report` with a
list of :class:`Violation` s; a run passes only if that list is empty.

What counts as what
-------------------
*Composed*: a message the user wrote, i.e. a client_id in an ``ok`` reply to ``send`` or
``edit`` in the sender's log; the reply also repeats the recipient (``to``) and ``body`` as
they were asked for, which is what every view must then hold. *On the wire*: a ``wire``
line (printed by :mod:`harness.chaos_client` just before a ``send`` frame goes to the socket; a line
may appear for a frame that a SIGKILL then stopped, never the other way round). *Acked*: an
event that claims the server stored the message: an own message in state ``sent``, or any
message event that carries a ``seq``. *Given up*: the client_id of an ``ok`` reply to
``give_up``, or the ``replaces`` of an ``ok`` reply to ``edit``.

The rules (the ``kind`` of each violation in brackets)
------------------------------------------------------
1. An acked message must be on the server at the seq the event named, and in the final
   store of both members [``lost``, or ``disagree`` if the server has another message at
   that seq]. Every server message must be in the final store of both members [``lost``].
2. Every message on the server, in a store's messages or in a store's outbox was composed
   by its sender [``phantom``].
3. No client_id twice: not twice on the server, not at two seqs of a store, not both in a
   store's messages and among its unsent (pending/failed) outbox rows (a view would show
   it twice), and no second ``message`` event in one incarnation for a message the view
   already shows (what the store held when the incarnation started, plus earlier
   ``message`` events; an own message shows as ``message`` and then changes by
   ``state``; an ``epoch`` event rebuilds the view from the store, which then holds only
   the unsent rows). With ``unique_bodies`` (the harness makes every body unique) the same
   body twice on the server is a duplicate too [``duplicated``].
4. Per conversation, the server's seqs are 1..n with no gap and match its ``last_seq``;
   each store holds 1..k with no gap below k and its watermark is k; every view (server,
   stores, events) agrees on which message sits at each seq [``gap``, ``disagree``].
5. One sender's messages to one peer are in compose order on the server (seq order ==
   order of the ``ok`` lines; an edit takes the place of the message it replaced). Not
   compared: given-up and edited-away messages, and, for a client with
   ``on_failure = "continue"``, messages that failed, were retried, or are edits of a
   message that had failed (or whose state the process did not show: loaded at start-up, it
   may have expired silently), since sending later ones past a failed message is what that
   setting asks for [``reordered``].
6. Given up: a message given up before it was ever on the wire must appear nowhere
   (server, stores, acked events), and no message may go on the wire after it was given up.
   A message that was on the wire before the give-up may legitimately be on the server
   (its ack was lost); then rule 7 requires the client to show it as sent. When a log has
   no ``wire`` lines at all (plain ``tui-chat headless``) the wire part is skipped
   [``given_up``].
7. End states: an own message the server has must end ``sent`` (not pending, failed or
   given up) and one it lacks must not be ``sent``; within one incarnation a state never
   moves back (``sent`` is final; ``given_up`` only becomes ``sent``; ``cancelling`` becomes
   ``given_up`` or ``sent``, or ``failed`` if the user takes the give-up back); and in the last
   incarnation the last state the events showed for a message equals its final state in
   the store: the screen was told. For a client whose freshness window outlasts the run
   (``always_fresh``), a message to an existing peer is never shown ``failed``
   [``wrong_state``].
8. The clients converged within ``convergence_limit`` seconds of the faults stopping
   [``not_converged``].
9. What is stored is what was composed: every copy of a composed message (on the server, in
   any store's messages, in the sender's outbox) has the body and the recipient the user
   asked for [``altered``].
10. Every composed message ends somewhere: sent (on the server), failed and still in the
    sender's outbox, or given up by an explicit command (rule 6 and 7 then say where it may
    be). One that is in no outbox and not on the server was dropped [``dropped``]; one left
    pending or cancelling after the clients converged never ended [``wrong_state``]; one
    shown ``cancelling``, or shown or stored ``given_up``, without a ``give_up`` (or
    ``edit``) command for it was given up by nobody [``given_up``].
11. Groups (the visibility rule). The server's stream of a group follows the group rules:
    ``created`` once at seq 1 with the creator first; every event's sender a member just
    before it; ``added`` and ``removed`` only by the creator, of a non-member / a member;
    ``left`` names its sender [``membership``]. From that stream each user's visible seqs
    follow: from the event that made them a member (``created``, their ``added``) to the
    one that ended it (their ``removed`` or ``left``), each interval again if re-added
    (:mod:`harness.visibility`). Each device's store holds exactly its user's visible seqs
    up to its watermark, which is a visible seq: nothing outside them [``leaked``], no hole
    inside an interval [``gap``], and, as for direct conversations, every visible server
    event is in the final store [``lost``]. No event shows a seq its user does not see
    [``leaked``]. The member list a client derives equals the one the server's events
    imply at the same seq: the store's members at its watermark, a member list carried by
    a shown event at that event's seq, and a ``conversation`` summary at some seq between
    the events shown before and after it [``members``]. A group command (create, add,
    remove, leave, rename) is a composed message like a send: rules 1-10 hold for it, and
    it must become the event it asked for, of the user and with the title it named
    [``altered``].
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from harness.visibility import GroupStream

__all__ = [
    "KINDS",
    "ClientRecord",
    "Incarnation",
    "Report",
    "Violation",
    "check",
    "read_server",
    "read_store",
]

KINDS: Final = (
    "lost",
    "phantom",
    "duplicated",
    "gap",
    "disagree",
    "reordered",
    "given_up",
    "wrong_state",
    "not_converged",
    "altered",
    "dropped",
    "leaked",
    "membership",
    "members",
)

Key = tuple[str, str]  # (sender, client_id): names one message everywhere


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str
    key: Key | None = None

    def __str__(self) -> str:
        return f"[{self.kind}] {self.detail}"


@dataclass
class Incarnation:
    """One client process lifetime: its output lines and what its view showed at start."""

    lines: list[dict[str, Any]]
    # Keys of the messages the view showed when this process started: the store's messages
    # and its unsent outbox rows at that moment (empty for the first start).
    initial_view: frozenset[Key] = frozenset()


@dataclass
class ClientRecord:
    user: str
    store_path: Path
    incarnations: list[Incarnation]
    on_failure: str = "hold"
    # The client's freshness window outlasts the whole run: none of its messages may fail,
    # except by a final reject (a peer with no account).
    always_fresh: bool = False
    # Set for a second device of ``user`` (its own store and log): names it in reports.
    device: str = ""

    @property
    def name(self) -> str:
        return self.device or self.user


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> dict[str, int]:
        """Distinct messages (or findings, for rules without a message) per violation kind."""
        seen: dict[str, set[object]] = {k: set() for k in KINDS}
        for v in self.violations:
            seen.setdefault(v.kind, set()).add(v.key if v.key is not None else v.detail)
        return {k: len(s) for k, s in seen.items()}


# ---------------------------------------------------------------- reading the views


@dataclass(frozen=True)
class Row:
    """One event of a conversation's stream, shaped like the protocol's ``message``."""

    conv: str
    seq: int
    sender: str
    recipient: str  # "" in a group
    client_id: str
    body: str
    kind: str = "text"
    user: str | None = None
    title: str | None = None
    # On ``created`` (and on the ``added`` copy its new member gets): the list after it.
    members: tuple[str, ...] | None = None

    @property
    def key(self) -> Key:
        return (self.sender, self.client_id)


@dataclass(frozen=True)
class OutRow:
    client_id: str
    peer: str  # the conversation key: a peer, "#" + conv, or "+" + a pending create's id
    body: str
    state: str
    ord: int
    retryable: bool
    kind: str | None = None  # None: a store without group columns (never compared)
    user: str | None = None
    title: str | None = None


@dataclass
class ServerView:
    messages: list[Row]
    # conv -> (user_a, user_b, last_seq): the direct conversations
    conversations: dict[str, tuple[str, str, int]]
    # conv -> last_seq: the groups
    groups: dict[str, int] = field(default_factory=dict)
    # conv -> user -> [(joined_seq, left_seq or None)]: the server's own membership record
    # (the ``members`` table, what its checks read), when the schema has one
    intervals: dict[str, dict[str, list[tuple[int, int | None]]]] | None = None


@dataclass
class StoreView:
    messages: list[Row]
    outbox: list[OutRow]
    # conv -> watermark (conversations that have a conv id)
    watermarks: dict[str, int]
    # conv -> the member list the client derived (groups only)
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    # A plain connection, not mode=ro: a read-only connection cannot open a WAL database
    # whose -shm file is gone (the last writer closed cleanly). query_only keeps it honest.
    conn = sqlite3.connect(path, timeout=10)
    try:
        conn.execute("PRAGMA query_only=1")
        yield conn
    finally:
        conn.close()


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def _members(value: object) -> tuple[str, ...] | None:
    """A member list as stored: a JSON array (or None)."""
    if value is None or value == "":
        return None
    decoded = json.loads(str(value)) if isinstance(value, str) else value
    return tuple(str(u) for u in decoded) if isinstance(decoded, list) else None


def _rows(conn: sqlite3.Connection) -> list[Row]:
    # The group columns (kind, user, title, members) are read when the schema has them,
    # so that a database without groups reads as before.
    have = set(_columns(conn, "messages"))
    extra = [c for c in ("kind", "user", "title", "members") if c in have]
    cols = ", ".join(["conv", "seq", "sender", "recipient", "client_id", "body", *extra])
    out: list[Row] = []
    for r in conn.execute(f"SELECT {cols} FROM messages ORDER BY conv, seq"):
        fields = dict(zip(extra, r[6:], strict=True))
        out.append(
            Row(
                str(r[0]),
                int(r[1]),
                str(r[2]),
                str(r[3] or ""),
                str(r[4]),
                str(r[5]),
                kind=str(fields.get("kind") or "text"),
                user=None if fields.get("user") is None else str(fields["user"]),
                title=None if fields.get("title") is None else str(fields["title"]),
                members=_members(fields.get("members")),
            )
        )
    return out


def read_server(path: Path) -> ServerView:
    with _read_only(path) as conn:
        rows = _rows(conn)
        have = set(_columns(conn, "conversations"))
        kind = "kind" if "kind" in have else "'direct'"
        convs = conn.execute(
            f"SELECT id, user_a, user_b, last_seq, {kind} FROM conversations"
        ).fetchall()
        groups_table = "groups" in {
            str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        extra_groups = (
            conn.execute("SELECT id, last_seq FROM groups").fetchall() if groups_table else []
        )
        intervals: dict[str, dict[str, list[tuple[int, int | None]]]] | None = None
        if groups_table and {"conv", "user", "joined_seq", "left_seq"} <= set(
            _columns(conn, "members")
        ):
            intervals = defaultdict(lambda: defaultdict(list))
            for conv, user, joined, left in conn.execute(
                "SELECT conv, user, joined_seq, left_seq FROM members ORDER BY conv, joined_seq"
            ):
                intervals[str(conv)][str(user)].append(
                    (int(joined), None if left is None else int(left))
                )
    direct = {
        str(c[0]): (str(c[1] or ""), str(c[2] or ""), int(c[3]))
        for c in convs
        if str(c[4]) != "group"
    }
    groups = {str(c[0]): int(c[3]) for c in convs if str(c[4]) == "group"}
    groups.update({str(g[0]): int(g[1]) for g in extra_groups})
    # A group is also known by its first event, whatever the schema calls it.
    for r in rows:
        if r.seq == 1 and r.kind == "created" and r.conv not in groups:
            groups[r.conv] = int(direct.pop(r.conv, ("", "", 0))[2])
    return ServerView(rows, direct, groups, intervals)


def read_server_pg(url: str) -> ServerView:
    """The same view of a PostgreSQL store (the nodes' schema is SQLite's v3, see
    ``tui_chat.server.pg.schema``), read in one snapshot."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rows = [
            Row(
                str(r[0]), int(r[1]), str(r[2]), str(r[3] or ""), str(r[4]), str(r[5]),
                kind=str(r[6] or "text"),
                user=None if r[7] is None else str(r[7]),
                title=None if r[8] is None else str(r[8]),
                members=_members(r[9]),
            )
            for r in conn.execute(
                'SELECT conv, seq, sender, recipient, client_id, body, kind, "user", title,'
                " members FROM messages ORDER BY conv, seq"
            )
        ]  # fmt: skip
        direct = {
            str(c[0]): (str(c[1]), str(c[2]), int(c[3]))
            for c in conn.execute("SELECT id, user_a, user_b, last_seq FROM conversations")
        }
        groups = {str(g[0]): int(g[1]) for g in conn.execute("SELECT id, last_seq FROM groups")}
        intervals: dict[str, dict[str, list[tuple[int, int | None]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for conv, user, joined, left in conn.execute(
            'SELECT conv, "user", joined_seq, left_seq FROM members ORDER BY conv, joined_seq'
        ):
            intervals[str(conv)][str(user)].append(
                (int(joined), None if left is None else int(left))
            )
    return ServerView(rows, direct, groups, intervals)


def read_server_any(where: Path | str) -> ServerView:
    """An SQLite database file, or a postgresql:// store."""
    if isinstance(where, str) and where.startswith("postgresql://"):
        return read_server_pg(where)
    return read_server(Path(where))


_OP_KINDS: Final = {
    "send": "text",
    "create": "created",
    "add": "added",
    "remove": "removed",
    "leave": "left",
    "rename": "renamed",
}


def read_store(path: Path) -> StoreView:
    if not path.exists():
        return StoreView([], [], {})
    with _read_only(path) as conn:
        rows = _rows(conn)
        have = set(_columns(conn, "outbox"))
        # The engine's outbox names a group command by op and arg (the user, the title,
        # or a create's JSON); older stores have neither.
        extra = [c for c in ("op", "arg") if c in have]
        cols = ", ".join(["client_id", "peer", "body", "state", "ord", "retryable", *extra])
        out = conn.execute(f"SELECT {cols} FROM outbox ORDER BY ord, rowid").fetchall()
        wms = conn.execute("SELECT conv, wm FROM conversations WHERE conv IS NOT NULL").fetchall()
        tables = {
            str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        member_rows: list[tuple[object, ...]] = []
        if "members" in tables:
            mcols = _columns(conn, "members")
            key_col = next((c for c in ("key", "peer", "conv") if c in mcols), mcols[0])
            order = next((c for c in ("ord", "joined", "position") if c in mcols), "rowid")
            member_rows = conn.execute(
                f"SELECT c.conv, m.user FROM members m JOIN conversations c "
                f"ON c.{'peer' if key_col != 'conv' else 'conv'} = m.{key_col} "
                f"WHERE c.conv IS NOT NULL ORDER BY m.{order}"
            ).fetchall()
    members: dict[str, list[str]] = defaultdict(list)
    for conv, user in member_rows:
        members[str(conv)].append(str(user))
    outrows = []
    for o in out:
        fields = dict(zip(extra, o[6:], strict=True))
        op = None if "op" not in fields else str(fields["op"] or "send")
        arg = None if fields.get("arg") is None else str(fields["arg"])
        title = arg if op == "rename" else None
        if op == "create" and arg:
            with contextlib.suppress(ValueError, AttributeError):
                title = str(json.loads(arg).get("title"))
        outrows.append(
            OutRow(
                str(o[0]),
                str(o[1]),
                str(o[2]),
                str(o[3]),
                int(o[4]),
                bool(o[5]),
                kind=None if op is None else _OP_KINDS.get(op, op),
                user=arg if op in ("add", "remove") else None,
                title=title,
            )
        )
    return StoreView(
        rows,
        outrows,
        {str(w[0]): int(w[1]) for w in wms},
        {conv: tuple(users) for conv, users in members.items()},
    )


# ---------------------------------------------------------------- what the logs say


@dataclass
class _Composed:
    client_id: str
    peer: str | None  # the conversation key asked for: a peer, "#" + conv (a group)
    body: str | None
    position: int  # compose order among this sender's messages
    at: int  # index of the ok line in the sender's whole log
    # What a group command asked for: the kind of event it must become, and its fields.
    kind: str = "text"
    user: str | None = None
    title: str | None = None
    members: tuple[str, ...] | None = None


# headless command -> the kind of event it becomes on the server
_COMMAND_KINDS: Final = {
    "send": "text",
    "create": "created",
    "add": "added",
    "remove": "removed",
    "leave": "left",
    "rename": "renamed",
}


def _asked_peer(line: dict[str, Any], shown: dict[str, Any]) -> str | None:
    """The conversation key a command was for, as asked (a group by its conv id)."""
    if isinstance(line.get("conv"), str) and line["conv"]:
        return "#" + str(line["conv"])
    to = line.get("to", line.get("peer", shown.get("peer")))
    return None if to is None or to == "" else str(to)


@dataclass
class _ClientFacts:
    user: str
    on_failure: str
    name: str = ""
    composed: dict[str, _Composed] = field(default_factory=dict)
    given_up: dict[str, int] = field(default_factory=dict)  # client_id -> log index
    edited_away: set[str] = field(default_factory=set)
    retried: set[str] = field(default_factory=set)
    ever_failed: set[str] = field(default_factory=set)
    wire: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # Own messages some event showed as given up or cancelling (whether or not anyone asked).
    shown_given_up: set[str] = field(default_factory=set)
    has_wire_log: bool = False
    acked: int = 0


def _facts(rec: ClientRecord) -> _ClientFacts:
    f = _ClientFacts(rec.user, rec.on_failure, rec.name)
    index = 0
    position = 0
    for inc in rec.incarnations:
        own_added: dict[str, dict[str, Any]] = {}
        # What this process showed of each own message; unknown for rows it loaded at start
        # (they may have expired to failed without an event).
        last_state: dict[str, str] = {}
        state_at_give_up: dict[str, str | None] = {}
        for line in inc.lines:
            index += 1
            ev = line.get("event")
            if ev == "message" and line.get("own"):
                own_added[str(line.get("client_id"))] = line
            if ev in ("message", "state") and line.get("own"):
                key_cid, state = str(line.get("client_id")), str(line.get("state"))
                if state == "failed":
                    f.ever_failed.add(key_cid)
                if state == "given_up" and last_state.get(key_cid) != "given_up":
                    state_at_give_up[key_cid] = last_state.get(key_cid)
                if state in ("given_up", "cancelling"):
                    f.shown_given_up.add(key_cid)
                last_state[key_cid] = state
            if ev == "wire":
                f.has_wire_log = True
                f.wire[str(line.get("client_id"))].append(index)
            if ev != "ok":
                continue
            cmd = line.get("cmd")
            cid = str(line.get("client_id"))
            shown = own_added.get(cid, {})
            # What was asked (the reply repeats it); older logs only have what was shown.
            peer, body = _asked_peer(line, shown), line.get("body", shown.get("body"))
            if cmd in _COMMAND_KINDS:
                position += 1
                kind = _COMMAND_KINDS[str(cmd)]
                listed = line.get("members")
                f.composed[cid] = _Composed(
                    cid,
                    None if kind == "created" else peer,
                    body if kind == "text" else "",
                    position,
                    index,
                    kind=kind,
                    user=line.get("user", shown.get("user")),
                    title=line.get("title", shown.get("title")),
                    members=tuple(listed) if isinstance(listed, list) else None,
                )
            elif cmd == "edit":
                old = str(line.get("replaces"))
                # The edit takes the place of the message it replaced.
                pos = f.composed[old].position if old in f.composed else (position := position + 1)
                f.composed[cid] = _Composed(cid, peer, body, pos, index)
                f.given_up.setdefault(old, index)
                f.edited_away.add(old)
                if state_at_give_up.get(old) in (None, "failed"):
                    # Editing a failed message is retrying it (with new words).
                    f.ever_failed.add(cid)
            elif cmd == "give_up":
                f.given_up.setdefault(cid, index)
            elif cmd == "retry":
                f.retried.add(cid)
    return f


# ---------------------------------------------------------------- the check


def check(
    server_db: Path | str,
    clients: Sequence[ClientRecord],
    *,
    converged_in: float | None = 0.0,
    convergence_limit: float = 5.0,
    unique_bodies: bool = True,
    earlier_servers: Sequence[Path] = (),
) -> Report:
    """Judge one run; see the module docstring for the rules.

    ``server_db``: the server's SQLite file, or the postgresql:// URL of the nodes' store.

    ``earlier_servers``: the databases of earlier epochs (the server lost its history and
    started over with the same accounts). Their messages were stored, acked and maybe shown;
    the clients dropped them with their replicas. Each old database is judged on its own
    (duplicates, gaps, phantoms, altered copies); a message acked, shown sent or present in
    one of them counts as stored; only the last server must match the final stores.
    """
    return judge(
        read_server_any(server_db),
        # Keyed by device (the user's name, or ``device`` for a second one): one store each.
        {c.name: read_store(c.store_path) for c in clients},
        clients,
        converged_in=converged_in,
        convergence_limit=convergence_limit,
        unique_bodies=unique_bodies,
        earlier=[read_server(path) for path in earlier_servers],
    )


def judge(
    server: ServerView,
    stores: dict[str, StoreView],
    clients: Sequence[ClientRecord],
    *,
    converged_in: float | None = 0.0,
    convergence_limit: float = 5.0,
    unique_bodies: bool = True,
    earlier: Sequence[ServerView] = (),
) -> Report:
    """:func:`check` on views already read: the server's, and each device's store
    (keyed by :attr:`ClientRecord.name`). Tests build these by hand."""
    owner = {c.name: c.user for c in clients}
    facts = {c.name: _facts(c) for c in clients}

    def composer(sender: str, client_id: str) -> _ClientFacts | None:
        """The device of ``sender`` that composed ``client_id``, if any did."""
        for f in facts.values():
            if f.user == sender and client_id in f.composed:
                return f
        return None

    report = Report()
    bad = report.violations

    def add(kind: str, detail: str, key: Key | None = None) -> None:
        bad.append(Violation(kind, detail, key))

    # -- the server itself (rules 3 and 4), and each server of an earlier epoch
    def judge_server(
        view: ServerView, label: str
    ) -> tuple[dict[Key, list[Row]], dict[tuple[str, int], Row], dict[str, GroupStream]]:
        keyed: dict[Key, list[Row]] = defaultdict(list)
        seats: dict[tuple[str, int], Row] = {}
        by_conv: dict[str, list[int]] = defaultdict(list)
        for r in view.messages:
            keyed[r.key].append(r)
            seats[(r.conv, r.seq)] = r
            by_conv[r.conv].append(r.seq)
        for key, rows in keyed.items():
            if len(rows) > 1:
                add("duplicated", f"{label} stores {key} {len(rows)} times", key)
        if unique_bodies:
            # Texts only: a group command's event has an empty body.
            texts = [r for r in view.messages if r.kind == "text"]
            bodies = Counter((r.sender, r.body) for r in texts)
            for r in texts:
                if bodies[(r.sender, r.body)] > 1:
                    add("duplicated", f"{label} stores body {r.body!r} of {r.sender} twice", r.key)
        lasts = {conv: last for conv, (_a, _b, last) in view.conversations.items()}
        lasts.update(view.groups)
        for conv, last in lasts.items():
            seqs = sorted(by_conv.get(conv, []))
            if seqs != list(range(1, len(seqs) + 1)) or last != len(seqs):
                add("gap", f"{label} conversation {conv}: seqs {_ranges(seqs)}, last_seq {last}")
        for conv in by_conv.keys() - lasts.keys():
            add("gap", f"{label} messages in unknown conversation {conv}")
        # Groups: the server's own events must follow the group rules (rule 11).
        groups: dict[str, GroupStream] = {}
        for conv, last in view.groups.items():
            g = groups[conv] = GroupStream(conv, [r for r in view.messages if r.conv == conv], last)
            for problem in g.problems:
                add("membership", f"{label}: {problem}")
            if view.intervals is not None:
                # What the server's membership checks read must be what its events say.
                recorded = {u: list(runs) for u, runs in view.intervals.get(conv, {}).items()}
                users = {*recorded, *(u for s in range(1, last + 1) for u in g.members_at(s))}
                derived = {u: g.terms(u) for u in users if g.terms(u)}
                for u in sorted(recorded.keys() | derived.keys()):
                    if recorded.get(u, []) != derived.get(u, []):
                        add(
                            "membership",
                            f"{label}: group {conv} records {u}'s membership as "
                            f"{recorded.get(u, [])}; its events make it {derived.get(u, [])}",
                        )
        for r in view.messages:
            if r.conv not in view.groups and r.kind != "text":
                add("membership", f"{label}: a {r.kind!r} event in direct conversation {r.conv}")
        return keyed, seats, groups

    on_server, at_seq, groups = judge_server(server, "server")
    earlier_seats: list[dict[tuple[str, int], Row]] = []
    stored_earlier: set[Key] = set()
    # Every group any server had (group ids are not reused): to judge what logs showed.
    any_group: dict[str, GroupStream] = {}
    for n, old in enumerate(earlier, start=1):
        keyed, seats, old_groups = judge_server(old, f"server of epoch {n}")
        earlier_seats.append(seats)
        stored_earlier |= keyed.keys()
        any_group.update(old_groups)
    any_group.update(groups)
    every_server_row = [r for view in (*earlier, server) for r in view.messages]

    def members(r: Row) -> list[str]:
        """The devices whose stores must hold ``r``: every device of both members of a
        direct conversation; in a group, of every user whose visible seqs include it."""
        g = groups.get(r.conv)
        if g is not None:
            return [d for d, u in owner.items() if g.sees(u, r.seq)]
        return [d for d, u in owner.items() if u in (r.sender, r.recipient)]

    # -- rule 2: everything was composed by its sender
    def composed(sender: str, client_id: str) -> bool:
        # Senders without a record (none in the harness) cannot be judged.
        return sender not in owner.values() or composer(sender, client_id) is not None

    for r in every_server_row:
        if not composed(r.sender, r.client_id):
            add("phantom", f"server has {r.key} (body {r.body!r}) that nobody sent", r.key)

    def judge_group_store(device: str, st: StoreView, g: GroupStream, seqs: list[int]) -> None:
        """Rule 11 on one store: exactly the user's visible seqs up to its watermark."""
        user = owner[device]
        visible = g.visible(user)
        wm = st.watermarks.get(g.conv, 0)
        rows = {r.seq: r for r in st.messages if r.conv == g.conv}
        for seq in seqs:
            if seq not in visible:
                r = rows[seq]
                add(
                    "leaked",
                    f"{device}'s store holds {g.conv}/{seq} ({r.kind} by {r.sender}); {user} "
                    f"sees only {_ranges(sorted(visible))}",
                    r.key,
                )
        held = set(seqs)
        holes = sorted(s for s in visible if s <= wm and s not in held)
        above = sorted(s for s in held if s > wm)
        if holes or above or (wm and wm not in visible):
            add(
                "gap",
                f"{device}'s store, group {g.conv}: seqs {_ranges(seqs)}, watermark {wm}; "
                f"{user} sees {_ranges(sorted(visible))}",
            )
        listed = st.members.get(g.conv)
        if wm and listed is not None and set(listed) != g.members_at(wm):
            add(
                "members",
                f"{device}'s store lists members {sorted(listed)} of {g.conv} at seq {wm}; the "
                f"server's events make them {sorted(g.members_at(wm))}",
            )

    # -- the stores (rules 1, 2, 3, 4, 7, 11)
    store_keys: dict[str, dict[Key, Row]] = {}
    for user, st in stores.items():
        keys: dict[Key, Row] = {}
        per_conv: dict[str, list[int]] = defaultdict(list)
        for r in st.messages:
            per_conv[r.conv].append(r.seq)
            if r.key in keys:
                add("duplicated", f"{user}'s store holds {r.key} at two seqs", r.key)
            keys[r.key] = r
            srv = at_seq.get((r.conv, r.seq))
            if srv is None:
                add("disagree", f"{user}'s store has {r.conv}/{r.seq} that the server lacks", r.key)
            elif (srv.sender, srv.client_id, srv.body) != (r.sender, r.client_id, r.body):
                add(
                    "disagree",
                    f"{r.conv}/{r.seq}: server has {srv.key}, {user}'s store has {r.key}",
                    r.key,
                )
            if not composed(r.sender, r.client_id):
                add("phantom", f"{user}'s store has {r.key} that nobody sent", r.key)
        for conv, seqs in per_conv.items():
            seqs.sort()
            if conv in groups:
                judge_group_store(user, st, groups[conv], seqs)
                continue
            contiguous = 0
            while contiguous < len(seqs) and seqs[contiguous] == contiguous + 1:
                contiguous += 1
            if contiguous != len(seqs):
                add("gap", f"{user}'s store, conversation {conv}: seqs {_ranges(seqs)}")
            wm = st.watermarks.get(conv, 0)
            if wm != contiguous:
                add(
                    "gap",
                    f"{user}'s store, conversation {conv}: watermark {wm}, holds 1..{contiguous}",
                )
        store_keys[user] = keys
        for o in st.outbox:
            key = (owner[user], o.client_id)
            if not composed(owner[user], o.client_id):
                add("phantom", f"{user}'s outbox has {o.client_id} that nobody sent", key)
            if o.state in ("pending", "failed") and key in keys:
                add("duplicated", f"{user} shows {o.client_id} as stored and as {o.state}", key)
            srv_has = key in on_server
            if srv_has and o.state != "sent":
                add(
                    "wrong_state",
                    f"{user} ends with {o.client_id} {o.state}; the server has it",
                    key,
                )
            if not srv_has and key not in stored_earlier and o.state == "sent":
                add("wrong_state", f"{user} ends with {o.client_id} sent; the server lacks it", key)

    # rule 1, second half: every server message reached both members' stores
    for r in server.messages:
        for u in members(r):
            got = store_keys[u].get(r.key)
            if got is None:
                add("lost", f"{r.key} ({r.conv}/{r.seq}) is missing from {u}'s store", r.key)

    # -- the event logs (rules 1, 3, 4, 6, 7)
    final_states: dict[str, dict[Key, str]] = {
        device: {(owner[device], o.client_id): o.state for o in st.outbox}
        for device, st in stores.items()
    }

    def judge_group_events(rec: ClientRecord, n: int, lines: list[dict[str, Any]]) -> None:
        """Rule 11 on one incarnation's events: nothing outside the user's visible seqs,
        and every member list shown is one the server's events imply."""
        shown_seqs: dict[str, list[tuple[int, int]]] = defaultdict(list)  # conv -> (line, seq)
        for i, line in enumerate(lines):
            conv, seq = line.get("conv"), line.get("seq")
            if (
                line.get("event") in ("message", "state")
                and isinstance(seq, int)
                and conv in any_group
            ):
                shown_seqs[str(conv)].append((i, seq))
        for i, line in enumerate(lines):
            ev, conv, seq = line.get("event"), line.get("conv"), line.get("seq")
            if not isinstance(conv, str) or conv not in any_group:
                continue
            g = any_group[conv]
            if ev in ("message", "state") and isinstance(seq, int):
                key = (str(line.get("sender")), str(line.get("client_id")))
                if not g.sees(rec.user, seq):
                    add(
                        "leaked",
                        f"{rec.name} was shown {conv}/{seq} ({line.get('kind', 'text')} by "
                        f"{key[0]}, incarnation {n}); {rec.user} sees only "
                        f"{_ranges(sorted(g.visible(rec.user)))}",
                        key,
                    )
                listed = line.get("members")
                if isinstance(listed, list) and set(listed) != g.members_at(seq):
                    add(
                        "members",
                        f"{rec.name} was shown {conv}/{seq} with members {sorted(listed)}; the "
                        f"server's events make them {sorted(g.members_at(seq))}",
                        key,
                    )
            elif ev == "conversation" and isinstance(line.get("members"), list):
                # The summary follows the events stored so far; which seq it was derived
                # at is not in the line, so any seq between the messages shown before it
                # and the next one shown after it is accepted.
                seqs = shown_seqs.get(conv, [])
                before = {s for at, s in seqs if at < i}
                lo = max(before, default=1)
                # A gap still open (a seq stored above a hole, filled later): the list is
                # derived without the missing events, as of the seq below the first hole.
                holes = [s for s in g.visible(rec.user) if min(before, default=lo) < s < lo]
                holes = [s for s in holes if s not in before]
                if holes:
                    lo = max(1, holes[0] - 1)
                hi = min((s for at, s in seqs if at > i and s >= lo), default=g.last_seq)
                listed = set(line["members"])
                if not any(listed == g.members_at(s) for s in range(lo, max(lo, hi) + 1)):
                    add(
                        "members",
                        f"{rec.name} was shown members {sorted(listed)} of {conv} (incarnation "
                        f"{n}); the server's events never make them that between seqs {lo} "
                        f"and {hi}",
                    )

    acked_total = 0
    for rec in clients:
        f = facts[rec.name]
        final_state = final_states[rec.name]
        for n, inc in enumerate(rec.incarnations):
            last = n == len(rec.incarnations) - 1
            shown: set[Key] = set(inc.initial_view)
            states: dict[Key, str] = {}
            judge_group_events(rec, n, inc.lines)
            for line in inc.lines:
                ev = line.get("event")
                if ev == "epoch":
                    # The replica was dropped (new epoch, or a server behind our cursors) and
                    # the UI rebuilds its view from the store, which keeps only unsent rows.
                    shown = {
                        k
                        for k in shown | inc.initial_view
                        if k[0] == rec.user and states.get(k, "pending") in _OPEN_STATES
                    }
                    continue
                if ev not in ("message", "state"):
                    continue
                sender = str(line.get("sender"))
                key = (sender, str(line.get("client_id")))
                if ev == "message":
                    if key in shown:
                        add(
                            "duplicated", f"{rec.user} was shown {key} twice (incarnation {n})", key
                        )
                    shown.add(key)
                shown_state = line.get("state")
                if line.get("own") and isinstance(shown_state, str):
                    prev = states.get(key)
                    if prev is not None and not _forward(prev, shown_state):
                        add(
                            "wrong_state",
                            f"{rec.user}: {key[1]} went {prev} -> {shown_state} (incarnation {n})",
                            key,
                        )
                    states[key] = shown_state
                ev_seq, ev_conv = line.get("seq"), line.get("conv")
                acked = isinstance(ev_seq, int) and isinstance(ev_conv, str)
                if line.get("own") and shown_state != "sent":
                    acked = False
                if not acked:
                    continue
                assert isinstance(ev_seq, int) and isinstance(ev_conv, str)
                acked_total += 1
                srv = at_seq.get((ev_conv, ev_seq))
                if any(
                    (was := seats.get((ev_conv, ev_seq))) is not None and was.key == key
                    for seats in earlier_seats
                ):
                    continue  # acked by the server of an earlier epoch, which has it there
                if key not in on_server:
                    add(
                        "lost",
                        f"{rec.user} was shown {key} at {ev_conv}/{ev_seq}; not on server",
                        key,
                    )
                elif srv is None or srv.key != key:
                    add(
                        "disagree",
                        f"{rec.user} was shown {key} at {ev_conv}/{ev_seq}; the server has "
                        f"{None if srv is None else srv.key} there",
                        key,
                    )
                else:
                    for u in members(srv):
                        if key not in store_keys[u]:
                            add("lost", f"acked {key} is missing from {u}'s final store", key)
            if last:
                for key, state in states.items():
                    end = final_state.get(key)
                    if end is not None and end != state:
                        add(
                            "wrong_state",
                            f"{rec.user}'s screen last showed {key[1]} {state}; it ends {end}",
                            key,
                        )

    # -- rule 7, spurious failures: a fresh message to a real peer never fails
    users = {c.user for c in clients}
    for rec in clients:
        if not rec.always_fresh:
            continue
        for inc in rec.incarnations:
            for line in inc.lines:
                if (
                    line.get("event") in ("message", "state")
                    and line.get("own")
                    and line.get("state") == "failed"
                    and line.get("peer") in users
                ):
                    key = (rec.user, str(line.get("client_id")))
                    add(
                        "wrong_state",
                        f"{rec.user}: fresh {key[1]} to {line.get('peer')} shown failed "
                        f"({line.get('error')!r})",
                        key,
                    )

    # -- rule 6: given-up messages
    for f in facts.values():
        for cid, at in f.given_up.items():
            key = (f.user, cid)
            if not f.has_wire_log:
                continue
            wires = f.wire.get(cid, [])
            if any(i > at for i in wires):
                add("given_up", f"{f.user} sent {cid} after giving it up", key)
            if any(i < at for i in wires):
                continue
            where = []
            if key in on_server or key in stored_earlier:
                where.append("the server")
            where += [f"{u}'s store" for u, keys in store_keys.items() if key in keys]
            if where:
                add(
                    "given_up",
                    f"{f.user} gave up {cid} before it was ever sent, yet it is on "
                    + ", ".join(where),
                    key,
                )

    # -- rule 5: compose order per (sender, peer)
    reordered = 0
    # One stream per composing device and peer: two devices of a user are not ordered.
    streams: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in server.messages:
        by = composer(r.sender, r.client_id)
        if by is not None:
            streams[(by.name, "#" + r.conv if r.conv in groups else r.recipient)].append(r)
    for (sender, peer), rows in streams.items():
        f2 = facts[sender]
        rows.sort(key=lambda r: (r.conv, r.seq))
        best = 0
        best_cid = ""
        for r in rows:
            c = f2.composed.get(r.client_id)
            if c is None or r.client_id in f2.given_up:
                continue
            if f2.on_failure == "continue" and (
                r.client_id in f2.ever_failed or r.client_id in f2.retried
            ):
                continue
            if c.position < best:
                reordered += 1
                add(
                    "reordered",
                    f"{sender} -> {peer}: {r.client_id} (composed #{c.position}) is at seq "
                    f"{r.seq}, after {best_cid} (composed #{best})",
                    r.key,
                )
            else:
                best, best_cid = c.position, r.client_id

    # -- rule 9: every copy holds what was composed
    def compare(
        where: str, key: Key, recipient: str, body: str, event: Row | OutRow | None = None
    ) -> None:
        f = composer(*key)
        c = None if f is None else f.composed.get(key[1])
        if c is None:
            return
        pending_group = recipient.startswith("+")  # an outbox row of a create not yet acked
        if c.peer is not None and recipient != c.peer and not pending_group:
            add("altered", f"{where} has {key[1]} to {recipient!r}; it was sent to {c.peer!r}", key)
        if c.body is not None and body != c.body:
            add(
                "altered",
                f"{where} has {key[1]} with body {_short(body)}; it was composed as "
                f"{_short(c.body)}",
                key,
            )
        if event is None or event.kind is None:
            return
        # A group command must become the event it asked for, about whom it asked.
        # (A leave's user is its sender; its outbox row does not repeat it.)
        user = (event.user or key[0]) if c.kind == "left" else event.user
        if event.kind != c.kind:
            add("altered", f"{where} has {key[1]} as {event.kind!r}; it was a {c.kind!r}", key)
        elif c.user is not None and user != c.user:
            add("altered", f"{where} has {c.kind} {key[1]} of {user!r}, not {c.user!r}", key)
        elif c.title is not None and event.title != c.title:
            add(
                "altered",
                f"{where} has {c.kind} {key[1]} titled {event.title!r}, not {c.title!r}",
                key,
            )
        elif c.kind == "created" and c.members is not None and isinstance(event, Row):
            asked = {key[0], *c.members}
            if event.members is not None and set(event.members) != asked:
                add(
                    "altered",
                    f"{where} created {key[1]} with members {sorted(event.members)}; "
                    f"asked for {sorted(asked)}",
                    key,
                )

    def key_of(r: Row) -> str:
        """The conversation key a composed message names: its peer, or "#" + a group."""
        return "#" + r.conv if r.conv in any_group else r.recipient

    for r in every_server_row:
        compare("the server", r.key, key_of(r), r.body, r)
    for user, st in stores.items():
        for r in st.messages:
            compare(f"{user}'s store", r.key, key_of(r), r.body, r)
        for o in st.outbox:
            compare(f"{user}'s outbox", (owner[user], o.client_id), o.peer, o.body, o)

    # -- rule 10: every composed message ends sent, failed in the outbox, or given up on request
    for f in facts.values():
        sender_store = stores.get(f.name)
        outbox = {} if sender_store is None else {o.client_id: o for o in sender_store.outbox}
        for cid in f.composed:
            key = (f.user, cid)
            row = outbox.get(cid)
            if row is None and key not in on_server and key not in stored_earlier:
                add(
                    "dropped",
                    f"{f.user} composed {cid}; it is in no outbox and not on the server",
                    key,
                )
            elif (
                row is not None
                and row.state in ("pending", "cancelling")
                and key not in on_server
                and converged_in is not None
            ):
                add("wrong_state", f"{f.user}'s {cid} never ended: still {row.state}", key)
        ended_given_up = {o.client_id for o in outbox.values() if o.state == "given_up"}
        for cid in sorted((f.shown_given_up | ended_given_up) - f.given_up.keys()):
            add("given_up", f"{f.user}'s {cid} was given up; nobody asked to", (f.user, cid))

    # -- rule 8
    if converged_in is None or converged_in > convergence_limit:
        shown_time = "never" if converged_in is None else f"after {converged_in:.2f} s"
        add("not_converged", f"clients converged {shown_time} (limit {convergence_limit:g} s)")

    report.counts = {
        "composed": sum(len(f.composed) for f in facts.values()),
        "on_server": len(server.messages),
        "acked_events": acked_total,
        "given_up": sum(len(f.given_up) for f in facts.values()),
        "violations": len(bad),
        **{f"v_{k}": v for k, v in report.by_kind().items()},
    }
    return report


_ORDER: Final = {"pending": 0, "failed": 0, "cancelling": 1, "given_up": 1, "sent": 2}
_OPEN_STATES: Final = ("pending", "failed")


def _forward(prev: str, new: str) -> bool:
    """States move forward only; the ways back are the user's: retry (failed -> pending)
    and undoing a give-up the server was not told of yet (cancelling -> failed)."""
    if prev == new:
        return True
    if prev == "sent":
        return False
    if prev == "given_up":
        return new == "sent"
    if prev == "cancelling":
        return new in ("given_up", "sent", "failed")
    return new in _ORDER


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _ranges(seqs: list[int]) -> str:
    if not seqs:
        return "none"
    parts: list[str] = []
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s == prev + 1:
            prev = s
            continue
        parts.append(f"{start}..{prev}" if start != prev else str(start))
        start = prev = s
    parts.append(f"{start}..{prev}" if start != prev else str(start))
    return ",".join(parts)
