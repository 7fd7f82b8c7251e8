"""Matrix /sync and /messages JSON → protocol v1 frames: sans-I/O, like the sync core.

:class:`Translator` holds what the engine's frames need and Matrix does not give: a
contiguous local ``seq`` per room (the position in the server's timeline order as seen by
this device, counting only the events that become frames), the last event id stored per
room, the ``since`` token, and whether each room is a DM (``to`` = the peer) or a group
(``to == ""``). Its whole state is one msgspec Struct, :meth:`checkpoint` bytes that the
transport hands to the engine *after* the frames of a batch, so the store commits them in
one transaction (``FrameSink.on_checkpoint``).

The I/O layer (:mod:`tui_chat.matrix.transport`) pumps it: it fetches ``/sync``, asks
:meth:`Translator.backfill_needed` which rooms came back ``limited`` with a gap between
what we hold and the timeline, fetches ``/messages`` for those, and hands everything to
:meth:`Translator.apply_sync`, which returns the frames in order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from tui_chat import protocol as p
from tui_chat.matrix.wire import Event, SyncResponse

log = logging.getLogger(__name__)

_K = p.MessageKind

ENCRYPTED_BODY: Final = "encrypted: not supported yet"
RECENT_IDS: Final = 64  # event ids remembered per room, to store each event once
DIRECT: Final = "m.direct"
# In the m.room.create content of a room made by a group `create`: that row's client_id,
# so the room's first frame confirms it (also after a lost answer: no second room).
CREATE_KEY: Final = "org.tui_chat.client_id"
_MEMBER: Final = ("join", "invite")


class RoomState(msgspec.Struct, omit_defaults=True):
    seq: int = 0  # the local seq of the last frame of this room (0: view not begun)
    last_event: str = ""  # the event id of that frame's event (or of the last one skipped)
    peer: str = ""  # a DM's other member ("" for a group)
    name: str = ""
    creator: str = ""
    members: list[str] = []  # joined and invited members, in order
    create_id: str = ""  # the client_id of our group `create` that made this room
    encrypted: bool = False
    left: bool = False
    invited: bool = False  # shown from an invite; not joined yet
    recent: list[str] = []  # the last RECENT_IDS event ids seen, oldest first


class State(msgspec.Struct, omit_defaults=True):
    since: str | None = None
    rooms: dict[str, RoomState] = {}
    # m.direct of our account: user id -> room ids (the spec's shape)
    direct: dict[str, list[str]] = {}
    # rooms we were invited to as a DM (is_direct), before we joined: room -> inviter
    invited_direct: dict[str, str] = {}
    # sends whose echo has not come back yet: txnId -> room (for a give-up's lookup)
    pending: dict[str, str] = {}


_state_decoder: Final = msgspec.json.Decoder(State)
_encoder: Final = msgspec.json.Encoder()


def load_state(data: bytes | None) -> State:
    """A checkpoint back; a damaged one starts afresh (the store's history stays)."""
    if not data:
        return State()
    try:
        return _state_decoder.decode(data)
    except msgspec.DecodeError as exc:
        log.warning("matrix resume state unreadable (%s); starting a fresh sync", exc)
        return State()


Frame = p.Message | p.Ack


@dataclass(frozen=True, slots=True)
class Backfill:
    room_id: str
    prev_batch: str
    last_event: str  # stop when this event is met


def _str(content: dict[str, Any], key: str) -> str | None:
    value = content.get(key)
    return value if isinstance(value, str) else None


def _millis(ts: int) -> int:
    return min(max(ts, 0), p.MAX_SEQ)


class Translator:
    def __init__(self, user: str, state: State | None = None) -> None:
        self.user = user
        self.state = state or State()
        self._sent: dict[str, str] = {}  # event id -> txnId of our sends in this session

    # ------------------------------------------------------------ queries

    def checkpoint(self) -> bytes:
        return _encoder.encode(self.state)

    def cursors(self) -> dict[str, int]:
        return {rid: r.seq for rid, r in self.state.rooms.items() if r.seq > 0}

    def room(self, room_id: str) -> RoomState | None:
        return self.state.rooms.get(room_id)

    def dm_room(self, peer: str) -> str | None:
        """The room we hold as the DM with ``peer``, or a joined m.direct room for them."""
        for rid, r in self.state.rooms.items():
            if r.peer == peer and not r.left:
                return rid
        for rid in self.state.direct.get(peer, []):
            known = self.state.rooms.get(rid)
            if known is not None and not known.left and known.seq == 0:
                return rid
        return None

    # ------------------------------------------------------------ our sends

    def sending(self, txn_id: str, room_id: str) -> None:
        self.state.pending[txn_id] = room_id

    def sent(self, txn_id: str, event_id: str) -> None:
        """The homeserver stored our event: its echo carries this txnId even without
        ``unsigned.transaction_id``."""
        self._sent[event_id] = txn_id

    def direct_invite(self, peer: str) -> str | None:
        """A DM invite from ``peer`` we have not answered."""
        for rid, inviter in self.state.invited_direct.items():
            if inviter == peer and rid not in self.state.rooms:
                return rid
        return None

    def expect_dm(self, room_id: str, peer: str) -> None:
        """We created ``room_id`` as the DM with ``peer`` (before its events arrive)."""
        r = self.state.rooms.setdefault(room_id, RoomState())
        if r.seq == 0:
            r.peer = peer
        rooms = self.state.direct.setdefault(peer, [])
        if room_id not in rooms:
            rooms.append(room_id)

    # ------------------------------------------------------------ sync

    def backfill_needed(self, resp: SyncResponse) -> list[Backfill]:
        """Rooms we hold whose timeline came back ``limited`` without our last event."""
        needed = []
        for rid, joined in resp.rooms.join.items():
            r = self.state.rooms.get(rid)
            tl = joined.timeline
            if r is None or r.seq == 0 or not r.last_event or not tl.limited:
                continue
            if tl.prev_batch and all(e.event_id != r.last_event for e in tl.events):
                needed.append(Backfill(rid, tl.prev_batch, r.last_event))
        return needed

    def apply_sync(
        self, resp: SyncResponse, backfilled: dict[str, list[Event]] | None = None
    ) -> list[Frame]:
        """The frames of one /sync answer (``backfilled``: older events per room, oldest
        first, from /messages); advances ``since``."""
        backfilled = backfilled or {}
        st = self.state
        for ev in resp.account_data.events:
            if ev.type == DIRECT:
                st.direct = {
                    u: [r for r in rooms if isinstance(r, str)]
                    for u, rooms in ev.content.items()
                    if isinstance(rooms, list)
                }
        out: list[Frame] = []
        for rid, invited in resp.rooms.invite.items():
            out.extend(self._invite(rid, invited.invite_state.events))
        for rid, joined in resp.rooms.join.items():
            events = [*backfilled.get(rid, []), *joined.timeline.events]
            out.extend(self._room(rid, joined.state.events, events))
        for rid, left in resp.rooms.leave.items():
            if rid in st.rooms:
                out.extend(self._room(rid, left.state.events, left.timeline.events))
                st.rooms[rid].left = True
        st.since = resp.next_batch
        return out

    def _invite(self, rid: str, stripped: list[Event]) -> list[Frame]:
        """An invite. A DM invite is remembered (the peer's next `send {to}` from us joins
        it); a group invite shows at once as the group, its inviter and us among the
        members: writing into it joins it, leaving it declines."""
        mine = [e for e in stripped if e.type == "m.room.member" and e.state_key == self.user]
        if not mine or mine[-1].content.get("membership") != "invite":
            return []
        inviter = mine[-1].sender
        if mine[-1].content.get("is_direct") is True:
            self.state.invited_direct[rid] = inviter
            return []
        r = self.state.rooms.get(rid)
        if r is not None and r.seq > 0:
            return []  # already shown
        r = self.state.rooms[rid] = RoomState(invited=True)
        for ev in stripped:
            self._fold_state(r, ev)
        r.members = list(dict.fromkeys([inviter, *r.members, self.user]))
        r.seq = 1
        created = p.Message(
            conv=rid,
            seq=1,
            sender=inviter,
            client_id=f"{rid}/invite",
            body="",
            ts=0,
            kind=_K.CREATED,
            title=self._title(rid, r),
            members=list(r.members),
        )
        return [created]

    def _room(self, rid: str, state: list[Event], timeline: list[Event]) -> list[Frame]:
        r = self.state.rooms.get(rid)
        if r is None:
            r = self.state.rooms[rid] = RoomState()
        if r.seq == 0:
            return self._begin(rid, r, state, timeline)
        out: list[Frame] = []
        for ev in timeline:
            out.extend(self._event(rid, r, ev))
        return out

    def _begin(
        self, rid: str, r: RoomState, state: list[Event], timeline: list[Event]
    ) -> list[Frame]:
        """The first sight of a room: decide DM or group, and where our view begins."""
        for ev in state:
            self._fold_state(r, ev)
        for ev in timeline:
            if ev.type == "m.room.create":
                r.creator = _str(ev.content, "creator") or ev.sender
                if ev.sender == self.user:
                    r.create_id = _str(ev.content, CREATE_KEY) or ""
            elif ev.type == "m.room.name" and ev.state_key == "":
                # The name the room has by the end of this batch titles its `created`; a
                # rename to the same name is then not a change worth a line.
                r.name = _str(ev.content, "name") or ""
        # Encryption cannot be turned off: a room that turns it on is shown as encrypted
        # from its first line.
        r.encrypted = r.encrypted or any(e.type == "m.room.encryption" for e in timeline)
        if not r.peer:
            r.peer = self._dm_peer(rid, r, [*state, *timeline])
        out: list[Frame] = []
        if not r.peer and not r.create_id:
            # Someone else's room: what its state became within this first batch (who
            # joined, who was invited, its name) is where our view begins, said once by the
            # `created` below; its messages follow. Not for a room we created: our own
            # commands in it are confirmed by their events.
            for ev in timeline:
                if ev.state_key is not None:
                    self._fold_state(r, ev)  # remembered: _event skips it below
        if not r.peer:
            # A group: our view begins with a `created` that names us among the members.
            members = list(r.members)
            if self.user not in members:
                members.append(self.user)
            r.members = members
            first_ts = timeline[0].origin_server_ts if timeline else 0
            r.seq = 1
            out.append(
                p.Message(
                    conv=rid,
                    seq=1,
                    sender=self.user if r.create_id else (r.creator or self.user),
                    client_id=r.create_id or f"{rid}/view",
                    body="",
                    ts=_millis(first_ts),
                    kind=_K.CREATED,
                    title=self._title(rid, r),
                    members=members,
                )
            )
            if not timeline and r.recent:
                r.last_event = r.recent[-1]
        for ev in timeline:
            out.extend(self._event(rid, r, ev))
        if timeline and timeline[-1].event_id:
            # Where a back-fill of the next limited timeline must stop, in timeline order
            # (the folded state events above set nothing).
            r.last_event = timeline[-1].event_id
        return out

    def _dm_peer(self, rid: str, r: RoomState, events: Iterable[Event]) -> str:
        """A room is a DM if m.direct says so, or an is_direct invite between us and one
        peer made it; only while that peer has no other DM room with us."""
        peer = ""
        for user, rooms in self.state.direct.items():
            if rid in rooms:
                peer = user
        if not peer:
            peer = self.state.invited_direct.get(rid, "")
        if not peer:
            for ev in events:
                if ev.type != "m.room.member" or ev.content.get("is_direct") is not True:
                    continue
                if ev.sender == self.user and ev.state_key:
                    peer = ev.state_key
                elif ev.state_key == self.user:
                    peer = ev.sender
        if not peer or peer == self.user:
            return ""
        if any(x.peer == peer and x is not r and x.seq > 0 for x in self.state.rooms.values()):
            return ""  # a second DM room with the same peer shows as a group
        others = [m for m in r.members if m not in (self.user, peer)]
        return "" if others else peer

    def _fold_state(self, r: RoomState, ev: Event) -> None:
        """Room state without a frame (what was true before our view began)."""
        c = ev.content
        if ev.type == "m.room.create":
            r.creator = _str(c, "creator") or ev.sender
            if ev.sender == self.user:
                r.create_id = _str(c, CREATE_KEY) or ""
        elif ev.type == "m.room.name":
            r.name = _str(c, "name") or ""
        elif ev.type == "m.room.encryption":
            r.encrypted = True
        elif ev.type == "m.room.member" and ev.state_key:
            joined = c.get("membership") in _MEMBER
            if ev.state_key == self.user and c.get("membership") == "join":
                r.invited = False
            if joined and ev.state_key not in r.members:
                r.members = [*r.members, ev.state_key]
            elif not joined and ev.state_key in r.members:
                r.members = [m for m in r.members if m != ev.state_key]
        self._remember(r, ev.event_id)

    def _title(self, rid: str, r: RoomState) -> str:
        title = r.name or ", ".join(m for m in r.members if m != self.user) or rid
        return f"{title} ({ENCRYPTED_BODY})" if r.encrypted else title

    def _remember(self, r: RoomState, event_id: str) -> None:
        if event_id:
            r.recent = [*r.recent[-(RECENT_IDS - 1) :], event_id]

    def _event(self, rid: str, r: RoomState, ev: Event) -> list[Frame]:
        if not ev.event_id or ev.event_id in r.recent:
            return []  # already seen (a back-fill overlapping the timeline)
        msg = self._frame(rid, r, ev)
        self._remember(r, ev.event_id)
        r.last_event = ev.event_id
        if msg is None:
            return []
        r.seq += 1
        msg = msgspec.structs.replace(msg, seq=r.seq)
        if msg.sender == self.user and msg.client_id != ev.event_id:
            # Our own send (its txnId) came back: the ack settles its outbox row at once,
            # as tui-chat-server's ack does, so the next message to that room may go.
            return [msg, p.Ack(client_id=msg.client_id, conv=rid, seq=msg.seq, ts=msg.ts)]
        return [msg]

    def _frame(self, rid: str, r: RoomState, ev: Event) -> p.Message | None:
        """One event as a frame (seq filled in by the caller), or None: not shown."""
        c = ev.content
        state_event = ev.state_key is not None
        if state_event:
            before_members, before_name = list(r.members), r.name
            self._fold_state(r, ev)
        base = p.Message(
            conv=rid,
            seq=1,
            sender=ev.sender,
            client_id=self._client_id(rid, ev),
            body="",
            ts=_millis(ev.origin_server_ts),
        )
        if ev.type in ("m.room.message", "m.room.encrypted") and not state_event:
            body = self._body(ev)
            if body is None:
                return None
            if r.peer:
                if ev.sender == self.user:
                    return msgspec.structs.replace(base, body=body, to=r.peer)
                if ev.sender == r.peer:
                    return msgspec.structs.replace(base, body=body, to=self.user)
                return None  # a third party in a DM room: not part of this pair's history
            return msgspec.structs.replace(base, body=body)
        if r.peer or not state_event:
            return None
        if ev.type == "m.room.name":
            if r.name == before_name and base.client_id == ev.event_id:
                return None  # the name the view began with (not our own rename: it confirms)
            return msgspec.structs.replace(base, kind=_K.RENAMED, title=self._title(rid, r))
        if ev.type == "m.room.member" and ev.state_key:
            who = ev.state_key
            was_in = who in before_members
            membership = c.get("membership")
            if membership in _MEMBER and not was_in:
                return msgspec.structs.replace(base, kind=_K.ADDED, user=who)
            if membership in ("leave", "ban") and was_in:
                if who == ev.sender:
                    return msgspec.structs.replace(base, kind=_K.LEFT, user=who)
                return msgspec.structs.replace(base, kind=_K.REMOVED, user=who)
        return None

    def _client_id(self, rid: str, ev: Event) -> str:
        if ev.sender == self.user:
            txn = ev.unsigned.transaction_id if ev.unsigned is not None else None
            txn = self._sent.pop(ev.event_id, None) or txn
            if txn:
                self.state.pending.pop(txn, None)
                return txn
        return ev.event_id

    def _body(self, ev: Event) -> str | None:
        if ev.type == "m.room.encrypted":
            return ENCRYPTED_BODY
        c = ev.content
        body = _str(c, "body")
        if body is None:
            return None  # redacted, or not a message the spec describes
        msgtype = _str(c, "msgtype") or "m.text"
        if msgtype == "m.emote":
            return f"* {ev.sender} {body}"
        if msgtype not in ("m.text", "m.notice"):
            return f"[{msgtype.removeprefix('m.')}] {body}"
        return body


def backfill_page(events: list[Event], last_event: str) -> tuple[list[Event], bool]:
    """One /messages dir=b page (newest first): the events newer than ``last_event``,
    oldest first, and whether ``last_event`` was met."""
    newer: list[Event] = []
    for ev in events:
        if ev.event_id == last_event:
            return newer[::-1], True
        newer.append(ev)
    return newer[::-1], False
