"""Fan-out between nodes: Redis pub/sub carries notifications, PostgreSQL the messages.

The bus protocol (one channel per service, ``tui-chat:<epoch>``; JSON objects):

* ``{"n": node, "c": conv, "s": seq, "a": [account ids]}``: ``conv`` has reached ``seq``
  (committed), and these accounts see its new events. Published once per conversation per
  batch, after the commit, by the node that stored it.
* ``{"n": node, "r": [conv, user, read_seq], "a": [account ids]}``: a read position moved.

Nothing on the bus is needed for correctness, only for promptness: a node that learns that
``conv`` reached ``seq`` reads what it has not forwarded yet from the store and forwards it
in seq order (:class:`Relay`), so a lost notification is healed by the next one, and by a
periodic check of ``last_seq`` for the conversations of the connected users. Redis keeps
nothing: it may restart at any time.

**Per conversation, one position.** ``Relay`` keeps, per conversation that a connected user
follows, ``known``: every seq up to it has been queued to every local session that may
see it, in order. A commit of this node's own writer with ``seq == known + 1`` is queued at
once (the writer's outcome has what fan-out needs); anything else (a seq from another node,
or one of ours after a gap) raises ``target``, and one task per conversation reads
``(known, target]`` from the store and queues it, page by page. Sessions register before
their replay snapshot is read, and drop what the replay already carried (``Session``), so
together each connection sees each seq once, with no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any, Final

import msgspec

from tui_chat.protocol import Message, Receipt, encode
from tui_chat.server import db, visibility
from tui_chat.server.pg.conn import PgConn
from tui_chat.server.pg.readers import PgReaders
from tui_chat.server.session import Session
from tui_chat.server.writer import ReadStored, Stored

log = logging.getLogger(__name__)

# How often the last_seq of every followed conversation is compared with what was forwarded.
CHECK_S: Final = 2.0
PAGE: Final = 500
CONNECT_TIMEOUT: Final = 5.0


class BusError(Exception):
    """The bus cannot be used (a wrong URL, or Redis unreachable at start)."""


class _Notice(msgspec.Struct, omit_defaults=True):
    n: str
    a: list[int]
    c: str = ""
    s: int = 0
    r: tuple[str, str, int] | None = None


_decode = msgspec.json.Decoder(_Notice).decode
_encode = msgspec.json.Encoder().encode


class _Track:
    __slots__ = ("accounts", "known", "target", "task")

    def __init__(self, known: int) -> None:
        self.known = known
        self.target = known
        self.task: asyncio.Task[None] | None = None
        # Local accounts that follow the conversation (pruned when none is connected).
        self.accounts: set[int] = set()


Pushes = list[tuple[int, bytes, int]]


def _read_range(
    conn: PgConn, conv: str, after: int, upto: int, local: frozenset[int]
) -> tuple[Pushes, int]:
    """(account, frame, seq) for the events after..upto that local accounts may see, and
    how far that read reached (``upto``, or less if the page filled)."""
    lite: Any = conn
    out: Pushes = []
    limit = min(PAGE, upto - after)
    conn.execute_pg("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        if visibility.is_group(lite, conv):
            rows = conn.execute_pg(
                "SELECT DISTINCT user_id FROM members WHERE conv=%s AND user_id = ANY(%s)",
                (conv, sorted(local)),
            ).fetchall()
            for (account,) in rows:
                for m in visibility.visible_after(lite, account, conv, after, limit):
                    if m.seq <= after + limit:
                        out.append((int(account), encode(m), m.seq))
        else:
            row = conn.execute_pg(
                "SELECT a_id, b_id FROM conversations WHERE id=%s", (conv,)
            ).fetchone()
            if row is not None:
                accounts = {int(row[0]), int(row[1])} & local
                for h in db.messages_after(lite, conv, after, limit):
                    data = encode(
                        Message(h.conv, h.seq, h.sender, h.client_id, h.body, h.ts, to=h.to)
                    )
                    out.extend((account, data, h.seq) for account in accounts)
    finally:
        conn.execute_pg("COMMIT")
    return out, after + limit


def _followed(conn: PgConn, accounts: list[int]) -> dict[str, tuple[int, set[int]]]:
    """conv -> (last_seq, which of ``accounts`` follow it) for every conversation and group
    of ``accounts`` (ever a member, for groups)."""
    out: dict[str, tuple[int, set[int]]] = {}
    mine = set(accounts)
    conn.execute_pg("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        for conv, last, a, b in conn.execute_pg(
            "SELECT id, last_seq, a_id, b_id FROM conversations"
            " WHERE a_id = ANY(%s) OR b_id = ANY(%s)",
            (accounts, accounts),
        ).fetchall():
            out[str(conv)] = (int(last), {int(a), int(b)} & mine)
        for conv, last, account in conn.execute_pg(
            "SELECT g.id, g.last_seq, m.user_id FROM groups g JOIN members m ON m.conv = g.id"
            " WHERE m.user_id = ANY(%s)",
            (accounts,),
        ).fetchall():
            out.setdefault(str(conv), (int(last), set()))[1].add(int(account))
    finally:
        conn.execute_pg("COMMIT")
    return out


class Relay:
    def __init__(
        self,
        url: str,
        epoch: str,
        readers: PgReaders,
        sessions: dict[int, set[Session]],
        fan_out_stored: Callable[[Stored], None],
        fan_out: Callable[[set[int], bytes, str | None, int], None],
        *,
        check_s: float = CHECK_S,
    ) -> None:
        self.url = url
        self.node = secrets.token_hex(4)
        self.channel = f"tui-chat:{epoch}"
        self._readers = readers
        self._sessions = sessions
        self._fan_out_stored = fan_out_stored
        self._fan_out = fan_out
        self._check_s = check_s
        self._tracks: dict[str, _Track] = {}
        # Seqs noticed for conversations no tracked session follows yet (a session in its
        # replay): its replay picks them up.
        self._hints: dict[str, int] = {}
        # Account id -> sessions whose replay has registered their conversations here.
        self._tracked: dict[int, int] = {}
        self._sessions_tracked: set[Session] = set()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        # This batch's notices, per conversation: (the highest seq, who sees the events).
        self._pending: dict[str, tuple[int, set[int]]] = {}
        self._flush_scheduled = False
        self._tasks: list[asyncio.Task[None]] = []
        self._client: Any = None
        self.notices = 0
        self.reads = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        try:
            import redis.asyncio as redis
        except ImportError as exc:
            raise BusError("--bus needs redis-py: pip install 'tui-chat[server-pg]'") from exc
        try:
            self._client = redis.Redis.from_url(
                self.url, socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=10
            )
        except ValueError as exc:
            raise BusError(f"--bus {self.url}: {exc}") from None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                await self._client.ping()
        except (OSError, TimeoutError, redis.RedisError) as exc:
            await self._client.aclose()
            raise BusError(f"--bus {self.url}: cannot reach Redis: {exc or 'timed out'}") from None
        subscribed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(subscribed)),
            loop.create_task(self._publish()),
            loop.create_task(self._check_loop()),
        ]
        # Subscribed before any session is accepted: before any replay is read.
        async with asyncio.timeout(CONNECT_TIMEOUT * 2):
            await subscribed.wait()

    async def stop(self) -> None:
        # The publisher ends at this mark, after what was queued before it is published.
        self._outbox.put_nowait(b"")
        tasks = self._tasks + [t.task for t in self._tracks.values() if t.task is not None]
        # redis-py may swallow a cancellation that lands inside one of its calls: cancel
        # again until every task is done (bounded).
        for _ in range(5):
            pending = [t for t in tasks if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    # ------------------------------------------------------------ sessions

    def replayed(self, session: Session, convs: dict[str, int]) -> None:
        """A session's replay snapshot: conv -> the last seq it will carry."""
        account = session.account.id
        if session not in self._sessions_tracked:
            self._sessions_tracked.add(session)
            self._tracked[account] = self._tracked.get(account, 0) + 1
        for conv, last in convs.items():
            track = self._tracks.get(conv)
            if track is None:
                track = self._tracks[conv] = _Track(last)
            track.accounts.add(account)
            hint = self._hints.pop(conv, 0)
            if max(hint, last) > track.known:
                self._want(conv, track, max(hint, last))

    def left(self, session: Session) -> None:
        if session not in self._sessions_tracked:
            return
        self._sessions_tracked.discard(session)
        account = session.account.id
        count = self._tracked.get(account, 0) - 1
        if count > 0:
            self._tracked[account] = count
        else:
            self._tracked.pop(account, None)

    # ------------------------------------------------------------ this node's commits

    def local(self, outcome: Stored) -> None:
        """A new event this node's writer committed: queue it in order, and tell the bus."""
        conv, seq = outcome.conv, outcome.seq
        accounts = set(outcome.members)
        if outcome.added_id:
            accounts.add(outcome.added_id)
        # One notice per conversation per batch: the batch's callback runs to its end
        # before the flush that call_soon schedules.
        pending = self._pending.get(conv)
        if pending is None:
            self._pending[conv] = (seq, accounts)
        else:
            self._pending[conv] = (max(seq, pending[0]), pending[1] | accounts)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        track = self._tracks.get(conv)
        if track is None:
            track = self._tracks[conv] = _Track(0)
        track.accounts.update(a for a in accounts if a in self._sessions)
        if track.task is None and seq == track.known + 1:
            track.known = track.target = seq
            self._fan_out_stored(outcome)
        elif seq > track.known:
            self._want(conv, track, seq)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for conv, (seq, accounts) in self._pending.items():
            self._outbox.put_nowait(_encode(_Notice(self.node, sorted(accounts), conv, seq)))
        self._pending.clear()

    def local_receipt(self, outcome: ReadStored) -> None:
        notice = _Notice(
            self.node, list(outcome.members), r=(outcome.conv, outcome.user, outcome.read_seq)
        )
        self._outbox.put_nowait(_encode(notice))

    # ------------------------------------------------------------ other nodes' commits

    def _on_notice(self, raw: bytes) -> None:
        try:
            notice = _decode(raw)
        except msgspec.ValidationError as exc:
            log.warning("ignoring a malformed bus notice: %s", exc)
            return
        if notice.n == self.node:
            return
        self.notices += 1
        local = [a for a in notice.a if a in self._sessions]
        if notice.r is not None:
            if local:
                conv, user, read_seq = notice.r
                self._fan_out(set(local), encode(Receipt(conv, user, read_seq)), None, 0)
            return
        self._note(notice.c, notice.s, local)

    def _note(self, conv: str, seq: int, local: list[int]) -> None:
        track = self._tracks.get(conv)
        if track is None:
            if not local:
                return
            if not any(a in self._tracked for a in local):
                # Followers still in their replay: the replay will pick this up.
                if len(self._hints) < 100_000:
                    self._hints[conv] = max(self._hints.get(conv, 0), seq)
                return
            # New since the followers' replays (a new conversation, or a group they were
            # added to): everything of it they may see is after their snapshots.
            track = self._tracks[conv] = _Track(0)
        track.accounts.update(local)
        if seq > track.known:
            self._want(conv, track, seq)

    def _want(self, conv: str, track: _Track, seq: int) -> None:
        track.target = max(track.target, seq)
        if track.task is None and track.target > track.known:
            track.task = asyncio.get_running_loop().create_task(self._catch_up(conv, track))

    async def _catch_up(self, conv: str, track: _Track) -> None:
        try:
            while track.known < track.target:
                after, upto = track.known, track.target
                local = frozenset(self._sessions)
                read = functools.partial(
                    _read_range, conv=conv, after=after, upto=upto, local=local
                )
                pushes, reached = await self._readers.run_pg(read)
                self.reads += 1
                for account, data, seq in pushes:
                    self._fan_out({account}, data, conv, seq)
                track.known = max(track.known, reached)
        except (sqlite3.Error, OSError) as exc:
            # The store is away: the periodic check starts this again.
            log.warning("cannot read %s from the store: %s", conv, exc)
        finally:
            track.task = None

    # ------------------------------------------------------------ tasks

    async def _listen(self, subscribed: asyncio.Event) -> None:
        import redis.asyncio as redis

        delay = 0.1
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                if subscribed.is_set():
                    log.info("bus: subscribed again; checking every followed conversation")
                    asyncio.get_running_loop().create_task(self._check())
                subscribed.set()
                delay = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._on_notice(message["data"])
            except (OSError, redis.RedisError) as exc:
                log.warning("bus: lost Redis (%s); subscribing again in %.1f s", exc, delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _publish(self) -> None:
        import redis.asyncio as redis

        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            stopping = b"" in batch
            batch = [data for data in batch if data]
            if batch:
                await self._send(redis, batch)
            if stopping:
                return

    async def _send(self, redis: Any, batch: list[bytes]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for data in batch:
                    pipe.publish(self.channel, data)
                await pipe.execute()
        except (OSError, redis.RedisError) as exc:
            # Other nodes heal from the store (their periodic check).
            log.warning("bus: %d notices not published: %s", len(batch), exc)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_s)
            await self._check()

    async def _check(self) -> None:
        """Compare last_seq of every followed conversation with what was forwarded."""
        for conv, track in list(self._tracks.items()):
            if track.task is None and not any(a in self._sessions for a in track.accounts):
                del self._tracks[conv]
        self._hints.clear()
        accounts = sorted(self._tracked)
        if not accounts:
            return
        try:
            lasts = await self._readers.run_pg(lambda c: _followed(c, accounts))
        except (sqlite3.Error, OSError) as exc:
            log.warning("cannot check conversations in the store: %s", exc)
            return
        for conv, (last, followers) in lasts.items():
            found = self._tracks.get(conv)
            # Not followed here yet: new since its followers' replays (a lost notice).
            track = found if found is not None else self._tracks.setdefault(conv, _Track(0))
            track.accounts.update(followers)
            if last > track.known or track.target > track.known:
                self._want(conv, track, last)
