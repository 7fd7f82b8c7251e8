"""Seeded chaos runs: real processes, injected faults, and a checker that reads every view.

``python -m harness.chaos --seed S --schedules K`` runs K *schedules*. Each one
starts a real ``tui-chat-server serve`` process and ``--clients`` (at least 3) headless
client processes (:mod:`harness.chaos_client`: ``tui-chat headless`` plus a wire
log), each behind its own :class:`~harness.faultproxy.FaultProxy`, then plays a
timeline of actions drawn from ``random.Random(f"tui-chat-chaos:{S}:{index}")``: sends from
each client to random peers, faults, and users retrying, editing and giving up. Then the
faults stop, the users settle every failed message (retry or give up), the clients must
converge, every client quits, and :func:`harness.checker.check` judges the server
database, every store and every event log.

The action list of a schedule is fully reproducible from its seed and index
(``--print-schedule`` shows it); what the processes do in between is real concurrency, so a
rerun explores the same schedule, not the same interleaving.

How each fault is injected
--------------------------
``delay``           proxy delays both, up or down by 20-400 ms ± jitter, for 0.3-2 s
``blackhole``       proxy discards both directions (bytes, FIN, RST) for 0.3-2 s
``blackhole_down``  proxy discards only server → client: the server stores, acks are lost
``blackhole_up``    proxy discards only client → server: frames never arrive
``reset``           proxy RSTs current connections and new ones for 0.1-0.8 s
``close``           proxy closes current connections cleanly (FIN)
``close_after``     proxy closes every connection after 40-3000 more bytes, for 0.3-2 s
``slice``           proxy forwards 1-64 bytes at a time (0-5 ms apart) for 0.3-2 s
``refuse``          proxy closes new connections at once for 0.2-1 s
``server_kill``     SIGKILL the server, restart it on the same port 0.1-1 s later
``server_term``     SIGTERM (clean shutdown, close 1012), restart 0.1-1 s later
``client_kill``     SIGKILL a client at a random moment, restart it 0.05-0.8 s later
``client_kill_after_send``  send, and SIGKILL the client right after its ``ok`` line (the
                    message is in the outbox, maybe not yet on the wire)
``client_kill_in_flight``   blackhole the client's downlink, send, wait until its ``wire``
                    line is out and the proxy's ``bytes_up`` grew by the frame, SIGKILL it
                    (frame delivered, ack lost), restore the link, restart the client
``client_kill_after_ack``   send, SIGKILL the client as soon as it shows the message sent
                    (the ack's store write may not be committed yet)
``server_stop``     group schedules only: SIGSTOP the server for 0.3-1.5 s, then SIGCONT
User actions: ``retry`` a failed message, ``give_up_failed``, ``give_up_pending`` (maybe in
flight), ``edit`` a failed or pending message; after the faults, every failed message is
retried or given up. Each client draws ``on_failure`` (hold/continue) and a freshness window
(60 s, or 0.6-2 s so that messages fail during outages).

Group schedules (``--groups``, :func:`make_group_schedule`): 3 to 5 users, one or two
groups of 3 to 5 members created through headless ``create``, texts to them (``send
{conv}``) and membership changes (``add``, ``remove``, ``leave``, ``rename``) at random
times among the same faults plus ``server_stop``; the checker then applies the group
visibility rule (:mod:`harness.visibility`) on top of every other rule.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from harness.checker import (
    KINDS,
    ClientRecord,
    Incarnation,
    Key,
    Report,
    ServerView,
    StoreView,
    check,
    read_server,
    read_server_any,
    read_store,
)
from harness.clientconf import client_config, write_client_toml
from harness.env import subprocess_env
from harness.faultproxy import FaultProxy
from harness.serverproc import ServerProcess, clone_users
from harness.visibility import GroupStream
from tui_chat.server import db

__all__ = [
    "FAULT_KINDS",
    "Action",
    "RunSummary",
    "Schedule",
    "ScheduleResult",
    "main",
    "make_group_schedule",
    "make_schedule",
    "run_schedule",
    "run_schedules",
]

PROXY_FAULTS: Final = (
    "delay",
    "blackhole",
    "blackhole_down",
    "blackhole_up",
    "reset",
    "close",
    "close_after",
    "slice",
    "refuse",
)
SERVER_FAULTS: Final = ("server_kill", "server_term", "epoch_change", "server_stop")
CLIENT_FAULTS: Final = (
    "client_kill",
    "client_kill_after_send",
    "client_kill_in_flight",
    "client_kill_after_ack",
)
FAULT_KINDS: Final = PROXY_FAULTS + SERVER_FAULTS + CLIENT_FAULTS
USER_ACTIONS: Final = ("retry", "give_up_failed", "give_up_pending", "edit")
GROUP_ACTIONS: Final = ("create", "gsend", "add", "remove", "leave", "rename")
_FAULT_WEIGHTS: Final = {
    "delay": 3,
    "blackhole": 2,
    "blackhole_down": 3,
    "blackhole_up": 1,
    "reset": 2,
    "close": 2,
    "close_after": 1,
    "slice": 1,
    "refuse": 1,
    "server_kill": 2,
    "server_term": 2,
    "client_kill": 2,
    "client_kill_after_send": 2,
    "client_kill_in_flight": 2,
    "client_kill_after_ack": 1,
}
# Group schedules: the same faults, and the server frozen (SIGSTOP) now and then. They have
# no epoch change: a new database has no groups, so every later group action would only be
# refused (the direct schedules cover epochs).
_GROUP_FAULT_WEIGHTS: Final = {**_FAULT_WEIGHTS, "server_stop": 2}
GROUP_FAULT_KINDS: Final = tuple(_GROUP_FAULT_WEIGHTS)
GHOST: Final = -1  # peer index of a user with no account: the server rejects, not retryable
GHOST_NAME: Final = "ghost"
CONVERGENCE_LIMIT: Final = 5.0
# How long the harness keeps waiting after the limit, to tell "slow" from "never".
CONVERGENCE_GRACE: Final = 5.0
COMMAND_TIMEOUT: Final = 5.0
SYNC: Final[dict[str, Any]] = {
    "ping_interval": 0.3,
    "ping_timeout": 0.3,
    "connect_timeout": 1.0,
    "ack_timeout": 1.0,
    "backoff_initial": 0.05,
    "backoff_cap": 0.5,
}
SERVER_TOML: Final = """\
[limits]
hello_timeout = 3.0
[keepalive]
ping_interval = 1.0
ping_timeout = 1.0
"""


# ---------------------------------------------------------------- schedules


@dataclass(frozen=True)
class Action:
    at: float  # seconds after the schedule started
    kind: str
    client: int = -1
    peer: int = -1
    duration: float = 0.0
    direction: str = "both"
    delay: float = 0.0
    jitter: float = 0.0
    chunk: int = 0
    nbytes: int = 0
    pick: float = 0.0  # a uniform draw for choices made at run time (which message)
    group: int = -1  # group actions: which group of the schedule (0 or 1)
    members: tuple[int, ...] = ()  # create: the users asked for besides the creator

    def describe(self) -> str:
        fields = [f"{self.at:6.3f}s", self.kind]
        if self.client >= 0:
            fields.append(f"client={self.client}")
        if self.group >= 0:
            fields.append(f"group={self.group}")
        if self.kind == "create":
            fields.append(f"members={list(self.members)}")
        if self.kind in ("add", "remove"):
            fields.append(f"user={self.peer}")
        if self.kind == "send" or self.kind.startswith("client_kill_"):
            fields.append(f"peer={GHOST_NAME if self.peer == GHOST else self.peer}")
        if self.duration:
            fields.append(f"for={self.duration:.3f}s")
        if self.kind in ("delay", "slice", "blackhole", "close_after"):
            fields.append(f"dir={self.direction}")
        if self.kind == "delay":
            fields.append(f"delay={self.delay:.3f}±{self.jitter:.3f}")
        if self.kind == "slice":
            fields.append(f"chunk={self.chunk} every={self.delay:.4f}")
        if self.kind == "close_after":
            fields.append(f"bytes={self.nbytes}")
        if self.kind == "send" and self.nbytes:
            fields.append(f"long={self.nbytes}")
        return " ".join(fields)


@dataclass(frozen=True)
class Schedule:
    seed: int
    index: int
    clients: int  # users, one device each: client i is user i
    freshness: tuple[float, ...]  # per device (client index)
    on_failure: tuple[str, ...]  # per device
    actions: tuple[Action, ...]
    duration: float
    # A user with a second device: client index ``clients`` is that user's other store.
    second_device: int | None = None
    groups: int = 0  # group schedules: how many groups it creates

    @property
    def devices(self) -> int:
        return self.clients + (self.second_device is not None)

    def user_of(self, client: int) -> int:
        return client if client < self.clients else int(self.second_device or 0)

    def describe(self) -> str:
        kind = f" groups={self.groups}" if self.groups else ""
        head = [f"schedule seed={self.seed} index={self.index}{kind} duration={self.duration:.2f}s"]
        for i in range(self.devices):
            device = "" if i < self.clients else f" (second device of user {self.user_of(i)})"
            head.append(
                f"  client {i}{device}: freshness_window={self.freshness[i]:.2f}s "
                f"on_failure={self.on_failure[i]}"
            )
        return "\n".join(head + ["  " + a.describe() for a in self.actions])


class _Draw:
    """The random part of a schedule: sends, faults and user actions, drawn in one order.

    Shared by the direct-message schedules and the group ones (:func:`make_group_schedule`),
    so that both inject the same faults the same way.
    """

    def __init__(self, rng: random.Random, clients: int, duration: float) -> None:
        self.rng = rng
        self.clients = clients
        self.duration = duration
        self.actions: list[Action] = []
        # Busy intervals: one proxy fault per proxy, one kill per client, one server fault
        # at a time, so that a restore never cancels another fault half-way.
        self.proxy_busy: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
        self.client_busy: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
        self.server_busy: list[tuple[float, float]] = []

    def peer_of(self, c: int) -> int:
        r = self.rng.random()
        if r < 0.02:
            return GHOST  # rejected as unknown_peer: failed, not retryable
        if r < 0.05:
            return c  # a conversation with oneself
        return self.rng.choice([p for p in range(self.clients) if p != c])

    def user_action(self, at: float, c: int, during: bool) -> None:
        # During an outage users give up or edit what is stuck; after it, retry what failed.
        kinds = ("give_up_pending", "edit", "give_up_failed") if during else USER_ACTIONS
        self.actions.append(Action(round(at, 3), self.rng.choice(kinds), c, pick=self.rng.random()))

    def sends(self, messages: int) -> None:
        rng, left = self.rng, messages
        while left > 0:
            c = rng.randrange(self.clients)
            at = round(rng.uniform(0, self.duration), 3)
            # Some sends come in bursts (several pending per peer, several per commit).
            n = min(left, rng.randint(3, 6)) if rng.random() < 0.1 else 1
            for _ in range(n):
                # One in ten is long (multi-byte text up to the 4,000-character limit), so
                # that frames span TCP segments, slices and byte budgets.
                extra = rng.randint(200, 3900) if rng.random() < 0.1 else 0
                self.actions.append(Action(at, "send", c, self.peer_of(c), nbytes=extra))
            left -= n

    @staticmethod
    def free(busy: list[tuple[float, float]], start: float, end: float) -> bool:
        return all(end + 0.05 < s or start > e + 0.05 for s, e in busy)

    def faults(self, weights: dict[str, int], count: tuple[int, int] = (4, 9)) -> None:
        rng, free, duration, actions = self.rng, self.free, self.duration, self.actions
        kinds = list(weights)
        weight_list = [weights[k] for k in kinds]
        for _ in range(rng.randint(*count)):
            kind = rng.choices(kinds, weight_list)[0]
            at = round(rng.uniform(0.05, duration * 0.85), 3)
            c = rng.randrange(self.clients)
            d = round(rng.uniform(0.3, 2.0), 3)
            if kind in ("delay", "slice", "blackhole", "close_after"):
                direction = rng.choice(("both", "both", "up", "down"))
                if kind == "blackhole":
                    direction = "both"
                if not free(self.proxy_busy[c], at, at + d):
                    continue
                self.proxy_busy[c].append((at, at + d))
                actions.append(
                    Action(
                        at,
                        kind,
                        c,
                        duration=d,
                        direction=direction,
                        delay=round(rng.uniform(0.02, 0.4), 3)
                        if kind == "delay"
                        else round(rng.uniform(0, 0.005), 4),
                        jitter=round(rng.uniform(0, 0.2), 3),
                        chunk=rng.randint(1, 64),
                        nbytes=rng.randint(40, 3000),
                    )
                )
                if rng.random() < 0.6:
                    self.user_action(at + rng.uniform(0.1, d + 0.8), c, rng.random() < 0.5)
            elif kind in ("blackhole_down", "blackhole_up", "reset", "refuse", "close"):
                if kind == "reset":
                    d = round(rng.uniform(0.1, 0.8), 3)
                elif kind == "refuse":
                    d = round(rng.uniform(0.2, 1.0), 3)
                elif kind == "close":
                    d = 0.0
                if not free(self.proxy_busy[c], at, at + d):
                    continue
                self.proxy_busy[c].append((at, at + d))
                actions.append(Action(at, kind, c, duration=d))
                if rng.random() < 0.6:
                    self.user_action(at + rng.uniform(0.1, d + 0.8), c, rng.random() < 0.5)
            elif kind in SERVER_FAULTS:
                d = round(rng.uniform(0.1, 1.0), 3)
                if kind == "server_stop":
                    # Frozen, not gone: the sockets stay open and silent (keepalive notices).
                    d = round(rng.uniform(0.3, 1.5), 3)
                # A stop and a start take about half a second on top of the downtime.
                if not free(self.server_busy, at, at + d + 1.0):
                    continue
                self.server_busy.append((at, at + d + 1.0))
                actions.append(Action(at, kind, duration=d))
                if rng.random() < 0.6:
                    self.user_action(
                        at + rng.uniform(0.1, d + 0.5), rng.randrange(self.clients), True
                    )
            else:
                d = round(rng.uniform(0.05, 0.8), 3)
                if not free(self.client_busy[c], at, at + d + 0.6):
                    continue
                if kind == "client_kill_in_flight":
                    if not free(self.proxy_busy[c], at, at + 1.2):
                        continue
                    self.proxy_busy[c].append((at, at + 1.2))
                self.client_busy[c].append((at, at + d + 0.6))
                actions.append(Action(at, kind, c, self.peer_of(c), duration=d, pick=rng.random()))
                if rng.random() < 0.5:
                    # Right after the restart: the outbox was reloaded, maybe expired to failed.
                    self.user_action(at + d + rng.uniform(0.3, 0.8), c, False)
        for _ in range(rng.randint(0, 3)):
            self.user_action(rng.uniform(0.2, duration), rng.randrange(self.clients), False)

    def finish(self) -> tuple[Action, ...]:
        # User actions may land after the last fault, but not after the schedule ends.
        actions = [a for a in self.actions if a.at <= self.duration]
        actions.sort(key=lambda a: a.at)
        return tuple(actions)


def make_schedule(
    seed: int,
    index: int,
    *,
    clients: int = 3,
    messages: int = 45,
    duration: float = 3.0,
    second_device: bool | None = None,
    epoch_change: bool | None = None,
) -> Schedule:
    """The schedule ``index`` of ``seed``: the same arguments always give the same actions.

    ``second_device``: give one user a second device (True), never (False), or in about
    half the schedules (None). ``epoch_change``: likewise, a new server database once (in
    about a third).
    """
    if clients < 2:
        raise ValueError("a chaos schedule needs at least 2 clients")
    rng = random.Random(f"tui-chat-chaos:{seed}:{index}")
    # A short window makes messages fail during an outage, so users get to retry, edit and
    # give up; a long one keeps them pending until the link is back.
    freshness = tuple(
        60.0 if rng.random() < 0.5 else round(rng.uniform(0.6, 2.0), 3) for _ in range(clients)
    )
    on_failure = tuple(rng.choice(("hold", "continue")) for _ in range(clients))
    draw = _Draw(rng, clients, duration)
    draw.sends(messages)
    draw.faults(_FAULT_WEIGHTS)
    actions = draw.actions
    # Half the schedules give one user a second device. Its own random source, so that the
    # rest of a schedule is the same with or without it.
    dev = random.Random(f"tui-chat-chaos-device:{seed}:{index}")
    second: int | None = None
    if second_device if second_device is not None else dev.random() < 0.5:
        second = dev.randrange(clients)
        d_index = clients
        freshness += (60.0 if dev.random() < 0.5 else round(dev.uniform(0.6, 2.0), 3),)
        on_failure += (dev.choice(("hold", "continue")),)
        for _ in range(dev.randint(3, 8)):
            peer = dev.choice([p for p in range(clients) if p != second])
            actions.append(Action(round(dev.uniform(0, duration), 3), "send", d_index, peer))
        if dev.random() < 0.7:
            at, d = round(dev.uniform(0.05, duration * 0.7), 3), round(dev.uniform(0.3, 1.5), 3)
            kind = dev.choice(("blackhole", "reset", "refuse", "blackhole_down"))
            actions.append(Action(at, kind, d_index, duration=d, direction="both"))
            kinds_ = ("give_up_pending", "edit", "give_up_failed")
            actions.append(
                Action(round(at + dev.uniform(0.1, d + 0.5), 3), dev.choice(kinds_), d_index,
                       pick=dev.random())
            )  # fmt: skip
    # A third of the schedules replace the server's database once (same accounts, a new
    # epoch: every history is gone). Its own random source, like the second device's.
    ep = random.Random(f"tui-chat-chaos-epoch:{seed}:{index}")
    if epoch_change if epoch_change is not None else ep.random() < 0.3:
        for _ in range(20):
            at, d = round(ep.uniform(0.3, duration * 0.7), 3), round(ep.uniform(0.1, 0.5), 3)
            if draw.free(draw.server_busy, at, at + d + 1.0):
                draw.server_busy.append((at, at + d + 1.0))
                actions.append(Action(at, "epoch_change", duration=d))
                break
    return Schedule(seed, index, clients, freshness, on_failure, draw.finish(), duration, second)


def make_group_schedule(
    seed: int,
    index: int,
    *,
    users: int | None = None,
    messages: int = 36,
    duration: float = 3.0,
    groups: int | None = None,
) -> Schedule:
    """A group schedule: 3 to 5 users, one or two groups of 3 to 5 members, and membership
    changes (add, remove, leave, rename) at random times among the same faults as
    :func:`make_schedule` plus ``server_stop``. Reproducible from ``seed`` and ``index``.

    The plan of who is a member is the generator's intent; what the server makes of it
    (a command queued offline may land after a later one, a removed member's send is
    refused) is what the run checks.
    """
    rng = random.Random(f"tui-chat-chaos-group:{seed}:{index}")
    n = users if users is not None else rng.choice((3, 4, 4, 5, 5))
    if n < 3:
        raise ValueError("a group schedule needs at least 3 users")
    freshness = tuple(
        60.0 if rng.random() < 0.5 else round(rng.uniform(0.6, 2.0), 3) for _ in range(n)
    )
    on_failure = tuple(rng.choice(("hold", "continue")) for _ in range(n))
    draw = _Draw(rng, n, duration)
    count = groups if groups is not None else (1 if rng.random() < 0.6 else 2)
    texts = messages - messages // 5
    for g in range(count):
        creator = rng.randrange(n)
        others = rng.sample([u for u in range(n) if u != creator], rng.randint(2, n - 1))
        t0 = 0.0 if g == 0 else round(rng.uniform(0.1, duration * 0.3), 3)
        draw.actions.append(Action(t0, "create", creator, group=g, members=tuple(others)))
        # The intended membership over time: (from, members) steps.
        members = {creator, *others}
        creator_in = True
        plan: list[tuple[float, frozenset[int]]] = [(t0, frozenset(members))]
        times = sorted(
            round(rng.uniform(t0 + 0.3, duration * 0.9), 3) for _ in range(rng.randint(3, 6))
        )
        for at in times:
            options: list[tuple[str, int, int]] = []  # (kind, actor, user)
            outside = [u for u in range(n) if u not in members]
            if creator_in and outside and len(members) < 5:
                options += [("add", creator, rng.choice(outside))] * 3
            removable = sorted(members - {creator})
            if creator_in and len(removable) >= 2:
                options += [("remove", creator, rng.choice(removable))] * 3
            if len(removable) >= 2:
                leaver = rng.choice(removable)
                options += [("leave", leaver, leaver)] * 2
            if members:
                actor = rng.choice(sorted(members))
                options += [("rename", actor, actor)] * 2
            if creator_in and at > duration * 0.75 and rng.random() < 0.1:
                options = [("leave", creator, creator)]  # rarely: nobody can add any more
            if not options:
                continue
            kind, actor, user = rng.choice(options)
            draw.actions.append(Action(at, kind, actor, user, group=g))
            if kind == "add":
                members.add(user)
            elif kind in ("remove", "leave"):
                members.discard(user)
                creator_in = creator_in and user != creator
            plan.append((at, frozenset(members)))
        # Texts to the group, mostly from who the plan says is a member then; now and then
        # from someone who is not (a send the server or the engine must refuse).
        share = texts // count if g else texts - texts // count * (count - 1)
        left = share
        while left > 0:
            at = round(rng.uniform(t0 + 0.2, duration), 3)
            now = next(m for t, m in reversed(plan) if t <= at)
            burst = min(left, rng.randint(2, 4)) if rng.random() < 0.1 else 1
            sender = rng.choice(sorted(now)) if now and rng.random() < 0.9 else rng.randrange(n)
            for _ in range(burst):
                extra = rng.randint(200, 3900) if rng.random() < 0.05 else 0
                draw.actions.append(Action(at, "gsend", sender, group=g, nbytes=extra))
            left -= burst
    draw.sends(messages // 5)  # some direct messages beside the groups
    draw.faults(_GROUP_FAULT_WEIGHTS)
    return Schedule(
        seed, index, n, freshness, on_failure, draw.finish(), duration, None, groups=count
    )


# ---------------------------------------------------------------- processes


class ChaosServer(ServerProcess):
    """``tui-chat-server serve``, or a broken variant of it from :mod:`.broken`."""

    def __init__(self, db_path: Path, *, variant: str | None = None, **kwargs: Any) -> None:
        super().__init__(db_path, **kwargs)
        self.variant = variant

    def command(self) -> list[str]:
        cmd = super().command()
        if self.variant is None:
            return cmd
        # [python, -m, tui_chat.server.cli, serve, ...] -> the broken entry point.
        return [
            sys.executable,
            "-m",
            "harness.broken",
            "server",
            self.variant,
            "--",
            *cmd[3:],
        ]


class ClientProc:
    """One client (a user with a store) and its successive headless processes."""

    def __init__(
        self,
        index: int,
        user: str,
        config: Path,
        store: Path,
        proxy: FaultProxy,
        *,
        variant: str | None = None,
        device: str = "",
    ) -> None:
        self.index = index
        self.user = user
        self.device = device  # set for a user's second device
        self.name = device or user
        self.config = config
        self.store = store
        self.proxy = proxy
        self.variant = variant
        self.incarnations: list[Incarnation] = []
        self.stderr: list[str] = []
        self.wired: set[str] = set()
        self.acked: set[str] = set()
        # Own commands the server confirmed: client_id -> conv (a create names its group).
        self.confirmed: dict[str, str] = {}
        # Groups this device's view has shown (only those can be written to).
        self.known_groups: set[str] = set()
        self.online = False
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._new_line = asyncio.Event()
        self.restart_task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        view = read_store(self.store) if self.store.exists() else StoreView([], [], {})
        initial: set[Key] = {m.key for m in view.messages}
        initial |= {(self.user, o.client_id) for o in view.outbox if o.state in _OPEN}
        lines: list[dict[str, Any]] = []
        self.incarnations.append(Incarnation(lines, frozenset(initial)))
        cmd = [sys.executable, "-m", "harness.chaos_client", "--config", str(self.config)]
        if self.variant:
            cmd += ["--broken", self.variant]
        self.online = False
        self._proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=subprocess_env(PYTHONUNBUFFERED="1"),
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_stdout(self._proc.stdout, lines)),
            asyncio.create_task(self._read_stderr(self._proc.stderr)),
        ]

    async def _read_stdout(self, stream: asyncio.StreamReader, lines: list[dict[str, Any]]) -> None:
        while raw := await stream.readline():
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "<not json>", "text": raw.decode("utf-8", "replace")}
            if not isinstance(line, dict):
                line = {"event": "<not json>", "text": repr(line)}
            lines.append(line)
            ev = line.get("event")
            conv = line.get("conv")
            if isinstance(conv, str) and str(line.get("peer", "")).startswith("#"):
                self.known_groups.add(conv)
            if ev in ("message", "state") and line.get("own") and isinstance(conv, str):
                self.confirmed[str(line.get("client_id"))] = conv
            elif ev == "conversation_replaced" and isinstance(line.get("new"), str):
                old, new = str(line.get("old")), str(line["new"])
                self.confirmed[old[1:]] = new[1:]
                self.known_groups.add(new[1:])
            if ev == "wire":
                self.wired.add(str(line.get("client_id")))
            elif ev == "state" and line.get("state") == "sent":
                self.acked.add(str(line.get("client_id")))
            elif ev == "connection":
                self.online = line.get("state") == "online"
            elif ev in ("ok", "error") and line.get("id") is not None:
                fut = self._waiters.pop(str(line["id"]), None)
                if fut is not None and not fut.done():
                    fut.set_result(line)
            self._new_line.set()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_result({"event": "error", "code": "exited"})
        self._waiters.clear()
        self._new_line.set()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            self.stderr.append(raw.decode("utf-8", "replace").rstrip())
            if len(self.stderr) > 400:
                # Bounded: the first lines (startup) and the latest ones (the failure).
                del self.stderr[100:200]

    async def command(self, cmd: dict[str, Any], within: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send one command and return its ``ok`` or ``error`` reply (an error if it died)."""
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return {"event": "error", "code": "down"}
        self._next_id += 1
        cid = f"h{self._next_id}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[cid] = fut
        try:
            proc.stdin.write(json.dumps({**cmd, "id": cid}).encode() + b"\n")
            await proc.stdin.drain()
            async with asyncio.timeout(within):
                return await fut
        except (ConnectionError, TimeoutError) as exc:
            self._waiters.pop(cid, None)
            return {"event": "error", "code": type(exc).__name__}

    async def wait_for(self, pred: Any, within: float) -> bool:
        """Wait (bounded) until ``pred()``; checked at each output line and every 50 ms."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not pred():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._new_line.wait()
        return True

    async def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await asyncio.wait(self._readers, timeout=5)
        self._proc = None
        self.online = False

    async def quit(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            await self.command({"cmd": "quit"}, within=3)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await proc.wait()
        await self.kill()


# Rows still under way: a cancelling one waits for the server's answer to its cancel.
_OPEN: Final = ("pending", "failed", "cancelling")
_FILLER: Final = "long message, ünïcödé, 長いメッセージ, emoji 📨; "


# ---------------------------------------------------------------- one schedule


@dataclass(frozen=True)
class Nodes:
    """Play schedules against ``count`` nodes on one PostgreSQL store and one Redis bus
    (each schedule gets a new database from ``new_store``); client i talks to node
    i % count through its own proxy, and server faults hit the nodes in turn."""

    new_store: Any  # Callable[[], str]: the URL of a new, empty database
    bus: str
    count: int = 2


@dataclass
class ScheduleResult:
    seed: int
    index: int
    messages: int
    faults: Counter[str]
    user_actions: Counter[str]
    converged_in: float | None
    report: Report
    elapsed: float
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok


class _Run:
    """The state of one schedule while it plays."""

    def __init__(
        self,
        schedule: Schedule,
        workdir: Path,
        server_variant: str | None,
        client_variant: str | None,
        nodes: Nodes | None = None,
    ) -> None:
        self.s = schedule
        self.dir = workdir
        self.nodes = nodes
        # With nodes: the store's URL, every node (``server`` is the first), and which node
        # the next server fault hits.
        self.store: str | None = None
        self.servers: list[ChaosServer] = []
        self._next_node = 0
        self.server_variant = server_variant
        self.client_variant = client_variant
        self.users = [f"u{i}" for i in range(schedule.clients)]
        self.db_path = workdir / "server.db"
        self.server: ChaosServer | None = None
        self.clients: list[ClientProc] = []
        self.proxies: list[FaultProxy] = []
        self.faults: Counter[str] = Counter()
        self.user_actions: Counter[str] = Counter()
        self.messages = 0
        self.sent_n = 0
        self.notes: list[str] = []
        self._restore: dict[int, asyncio.Task[None]] = {}
        self._server_task: asyncio.Task[None] | None = None
        self._settled: Counter[str] = Counter()
        self._choice: dict[str, bool] = {}  # the user's first answer: retry (True) or give up
        self._rng = random.Random(f"tui-chat-chaos-settle:{schedule.seed}:{schedule.index}")
        # stdout and stderr of every server run (ServerProcess keeps only the current run's).
        self.server_log: list[str] = []
        # The databases of earlier epochs, oldest first (see ``epoch_change``).
        self.previous_dbs: list[Path] = []
        # Group index -> (the creating client, its create's client_id), and -> conv id.
        self._creates: dict[int, tuple[ClientProc, str]] = {}
        self._group_conv: dict[int, str] = {}

    # -- setup and teardown

    async def setup(self) -> None:
        config = self.dir / "server.toml"
        config.write_text(SERVER_TOML, encoding="utf-8")
        if self.nodes is not None:
            from typing import cast

            from tui_chat.server.nodes import open_store_conn

            self.store = str(self.nodes.new_store())
            conn = cast(sqlite3.Connection, open_store_conn(self.store))
        else:
            conn, _ = db.open_db(self.db_path)
        try:
            tokens = {u: db.add_user(conn, u) for u in self.users}
        finally:
            conn.close()
        count = 1 if self.nodes is None else self.nodes.count
        for _ in range(count):
            self.servers.append(
                ChaosServer(
                    self.db_path,
                    config=config,
                    variant=self.server_variant,
                    store=self.store,
                    bus=None if self.nodes is None else self.nodes.bus,
                )
            )
        await asyncio.gather(*(server.astart() for server in self.servers))
        self.server = self.servers[0]
        for i in range(self.s.devices):
            user = self.users[self.s.user_of(i)]
            device = "" if i < self.s.clients else f"{user}-2"
            node = self.servers[i % len(self.servers)]
            proxy = FaultProxy(
                "127.0.0.1", node.port, seed=self.s.seed * 1000 + self.s.index * 10 + i
            )
            await proxy.start()
            self.proxies.append(proxy)
            store_dir = self.dir / (device or user)
            toml = self.dir / f"{device or user}.toml"
            cfg = client_config(
                store_dir,
                user,
                tokens[user],
                proxy.url,
                **SYNC,
                freshness_window=self.s.freshness[i],
                on_failure=self.s.on_failure[i],
            )
            write_client_toml(toml, cfg)
            store = store_dir / f"{user}@127.0.0.1_{proxy.port}.sqlite3"
            self.clients.append(
                ClientProc(i, user, toml, store, proxy, variant=self.client_variant, device=device)
            )
        await asyncio.gather(*(c.start() for c in self.clients))
        for c in self.clients:
            if not await c.wait_for(lambda c=c: c.online, 10.0):
                self.notes.append(f"{c.name} was not online 10 s after start")

    async def teardown(self) -> None:
        for task in [*self._restore.values(), self._server_task]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for c in self.clients:
            if c.restart_task is not None and not c.restart_task.done():
                c.restart_task.cancel()
                with contextlib.suppress(BaseException):
                    await c.restart_task
        await asyncio.gather(*(c.quit() for c in self.clients), return_exceptions=True)
        for server in self.servers:
            if server.running:
                try:
                    await server.aterminate(grace=10)
                except TimeoutError as exc:
                    self.notes.append(f"server shutdown: {exc}")
            await self._server_down(server)
        for proxy in self.proxies:
            await proxy.stop()

    # -- actions

    async def play(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for action in self.s.actions:
            wait = t0 + action.at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._do(action)
        rest = t0 + self.s.duration - loop.time()
        if rest > 0:
            await asyncio.sleep(rest)

    async def _do(self, a: Action) -> None:
        if a.kind == "send":
            await self._send(a.client, a.peer, a.nbytes)
        elif a.kind in PROXY_FAULTS:
            self._proxy_fault(a)
        elif a.kind in SERVER_FAULTS:
            if self._server_task is None or self._server_task.done():
                self.faults[a.kind] += 1
                self._server_task = asyncio.create_task(self._server_fault(a))
        elif a.kind in CLIENT_FAULTS:
            await self._client_fault(a)
        elif a.kind in GROUP_ACTIONS:
            await self._group_action(a)
        else:
            await self._user_action(a)

    def group_conv(self, group: int) -> str | None:
        """The conv id of a schedule's group, once the server confirmed its create."""
        if group not in self._group_conv and group in self._creates:
            c, cid = self._creates[group]
            if cid in c.confirmed:
                self._group_conv[group] = c.confirmed[cid]
        return self._group_conv.get(group)

    async def _group_action(self, a: Action) -> None:
        c = self.clients[a.client]
        if not c.up:
            self.user_actions[f"{a.kind}:client_down"] += 1
            return
        cmd: dict[str, Any]
        if a.kind == "create":
            cmd = {
                "cmd": "create",
                "title": f"group {a.group} of {c.name}",
                "members": [self.users[m] for m in a.members],
            }
        else:
            conv = self.group_conv(a.group)
            if conv is None:
                self.user_actions[f"{a.kind}:not_created_yet"] += 1
                return
            if conv not in c.known_groups:
                # Nobody writes to a group their screen has never shown.
                self.user_actions[f"{a.kind}:unknown_to_client"] += 1
                return
            if a.kind == "gsend":
                self.sent_n += 1
                body = f"m{self.s.seed}.{self.s.index}.{c.name}.g{a.group}.{self.sent_n}"
                if a.nbytes:
                    body = (body + " " + _FILLER * (a.nbytes // len(_FILLER) + 1))[
                        : len(body) + a.nbytes
                    ]
                cmd = {"cmd": "send", "conv": conv, "body": body}
            elif a.kind in ("add", "remove"):
                cmd = {"cmd": a.kind, "conv": conv, "user": self.users[a.peer]}
            elif a.kind == "leave":
                cmd = {"cmd": "leave", "conv": conv}
            else:
                self.sent_n += 1
                cmd = {"cmd": "rename", "conv": conv, "title": f"title {self.sent_n}"}
        reply = await c.command(cmd)
        ok = reply.get("event") == "ok"
        self.user_actions[f"{a.kind}:" + ("ok" if ok else "refused")] += 1
        if not ok:
            return
        self.messages += 1
        if a.kind == "create":
            self._creates[a.group] = (c, str(reply["client_id"]))

    async def _send(self, client: int, peer: int, extra: int = 0) -> str | None:
        c = self.clients[client]
        if not c.up:
            return None
        self.sent_n += 1
        to = GHOST_NAME if peer == GHOST else self.users[peer]
        # Unique per composed message: the checker counts a body stored twice as a duplicate.
        body = f"m{self.s.seed}.{self.s.index}.{c.name}.{self.sent_n}"
        if extra:
            body = (body + " " + _FILLER * (extra // len(_FILLER) + 1))[: len(body) + extra]
        reply = await c.command({"cmd": "send", "to": to, "body": body})
        if reply.get("event") != "ok":
            return None
        self.messages += 1
        return str(reply["client_id"])

    def _proxy_fault(self, a: Action) -> None:
        proxy = self.proxies[a.client]
        old = self._restore.pop(a.client, None)
        if old is not None:
            old.cancel()
        self.faults[a.kind] += 1
        direction: Any = a.direction
        if a.kind == "delay":
            proxy.delay(a.delay, a.jitter, direction=direction)
        elif a.kind == "blackhole":
            proxy.blackhole(direction="both")
        elif a.kind == "blackhole_down":
            proxy.blackhole(direction="down")
        elif a.kind == "blackhole_up":
            proxy.blackhole(direction="up")
        elif a.kind == "reset":
            proxy.reset()
        elif a.kind == "close":
            proxy.close_all()
            return
        elif a.kind == "close_after":
            proxy.close_after(a.nbytes, direction)
        elif a.kind == "slice":
            proxy.slice(a.chunk, a.delay, direction=direction)
        elif a.kind == "refuse":
            proxy.refuse()
        self._restore[a.client] = asyncio.create_task(self._pass_later(proxy, a.duration))

    @staticmethod
    async def _pass_later(proxy: FaultProxy, after: float) -> None:
        await asyncio.sleep(after)
        proxy.pass_through()

    async def _server_down(self, server: ChaosServer | None = None) -> None:
        """Reap a server that stopped (or crashed) and keep its output."""
        server = server or self.server
        assert server is not None
        if server.pid is not None:
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(server.close)
        if server.returncode not in (None, 0, -signal.SIGKILL):
            self.notes.append(f"server exited with status {server.returncode}")
        self.server_log += server.stdout_lines + server.stderr_lines

    async def _server_fault(self, a: Action) -> None:
        # With nodes, each server fault hits the next node in turn; a new epoch is not a
        # node's to make (the store is shared), so it is a node kill there.
        server = self.servers[self._next_node % len(self.servers)]
        self._next_node += 1
        kind = "server_kill" if a.kind == "epoch_change" and self.nodes is not None else a.kind
        a = Action(a.at, kind, a.client, a.peer, a.duration)
        if a.kind == "server_stop":
            # Frozen: connections stay open and silent, nothing is stored or acked.
            pid = server.pid
            if not server.running or pid is None:
                return
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(a.duration)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            return
        if server.running:
            if a.kind in ("server_kill", "epoch_change"):
                await server.akill()
            else:
                try:
                    code = await server.aterminate(grace=10)
                except TimeoutError as exc:
                    self.notes.append(f"server did not stop on SIGTERM: {exc}")
                else:
                    if code != 0:
                        self.notes.append(f"server exited {code} on SIGTERM")
        await self._server_down(server)
        if a.kind == "epoch_change":
            self._new_epoch()
        await asyncio.sleep(a.duration)
        await server.astart()

    def _new_epoch(self) -> None:
        """Keep the stopped server's database aside; start over with the same accounts."""
        kept = self.dir / f"server-epoch{len(self.previous_dbs) + 1}.db"
        with (
            contextlib.closing(sqlite3.connect(self.db_path)) as old,
            contextlib.closing(sqlite3.connect(kept)) as copy,
        ):
            old.backup(copy)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
        clone_users(kept, self.db_path)
        self.previous_dbs.append(kept)

    async def _client_fault(self, a: Action) -> None:
        c = self.clients[a.client]
        if not c.up:
            return
        if a.kind in ("client_kill_after_send", "client_kill_after_ack"):
            cid = await self._send(a.client, a.peer)
            if cid is None:
                return
            if a.kind == "client_kill_after_ack":
                # The screen shows it sent; the store may not have committed that yet.
                await c.wait_for(lambda: cid in c.acked, 1.0)
        elif a.kind == "client_kill_in_flight":
            proxy = c.proxy
            old = self._restore.pop(a.client, None)
            if old is not None:
                old.cancel()
            proxy.blackhole(direction="down")
            before = proxy.bytes_up
            cid = await self._send(a.client, a.peer)
            if cid is None:
                proxy.pass_through()
                return
            await c.wait_for(lambda: cid in c.wired, 1.0)
            # The send frame is longer than its body: wait until the proxy passed it on.
            await c.wait_for(lambda: proxy.bytes_up >= before + 40, 1.0)
        self.faults[a.kind] += 1
        await c.kill()
        if a.kind == "client_kill_in_flight":
            c.proxy.pass_through()
        c.restart_task = asyncio.create_task(self._restart_client(c, a.duration))

    @staticmethod
    async def _restart_client(c: ClientProc, after: float) -> None:
        await asyncio.sleep(after)
        await c.start()

    def _open_rows(
        self, c: ClientProc, states: tuple[str, ...], *, text_only: bool = False
    ) -> list[str]:
        try:
            view = read_store(c.store)
        except sqlite3.Error:
            return []
        # Only a text can be edited (a group command is retried or given up).
        return [
            o.client_id
            for o in view.outbox
            if o.state in states and not (text_only and o.kind not in (None, "text"))
        ]

    async def _user_action(self, a: Action) -> None:
        c = self.clients[a.client]
        if not c.up:
            self.user_actions[a.kind + ":client_down"] += 1
            return
        states = {
            "retry": ("failed",),
            "give_up_failed": ("failed",),
            "give_up_pending": ("pending",),
            "edit": ("failed", "pending"),
        }[a.kind]
        rows = self._open_rows(c, states, text_only=a.kind == "edit")
        if not rows:
            self.user_actions[a.kind + ":nothing_to_do"] += 1
            return
        cid = rows[min(len(rows) - 1, int(a.pick * len(rows)))]
        if a.kind == "retry":
            cmd: dict[str, Any] = {"cmd": "retry", "client_id": cid}
        elif a.kind == "edit":
            self.sent_n += 1
            body = f"m{self.s.seed}.{self.s.index}.{c.name}.{self.sent_n}.edit"
            cmd = {"cmd": "edit", "client_id": cid, "body": body}
        else:
            cmd = {"cmd": "give_up", "client_id": cid}
        reply = await c.command(cmd)
        ok = reply.get("event") == "ok"
        self.user_actions[a.kind + (":ok" if ok else ":refused")] += 1
        if ok and a.kind == "edit":
            self.messages += 1

    # -- the end

    async def stop_faults(self) -> None:
        for task in self._restore.values():
            task.cancel()
        self._restore.clear()
        for proxy in self.proxies:
            proxy.pass_through()
        if self._server_task is not None:
            try:
                async with asyncio.timeout(20):
                    await self._server_task
            except Exception as exc:
                self.notes.append(f"server fault task: {exc!r}")
        for server in self.servers:
            if not server.running:
                await self._server_down(server)
                await server.astart()
        for c in self.clients:
            if c.restart_task is not None:
                with contextlib.suppress(Exception):
                    await c.restart_task
            if not c.up:
                await c.start()

    async def settle(self) -> None:
        """Users answer every failed message: retry it, or give it up."""
        for c in self.clients:
            if not c.up:
                continue
            try:
                view = read_store(c.store)
            except sqlite3.Error:
                continue
            for o in view.outbox:
                if o.state != "failed":
                    continue
                # A user retries only when the status line says online, and gives up on a
                # message that failed again after a retry (a tiny freshness window).
                tries = self._settled[o.client_id]
                if o.client_id not in self._choice:
                    self._choice[o.client_id] = self._rng.random() < 0.6
                retry = o.retryable and tries < 3 and (tries > 0 or self._choice[o.client_id])
                if retry and not c.online:
                    continue
                self._settled[o.client_id] += 1
                kind = "retry" if retry else "give_up"
                reply = await c.command({"cmd": kind, "client_id": o.client_id})
                self.user_actions[
                    f"settle_{kind}:" + ("ok" if reply.get("event") == "ok" else "refused")
                ] += 1

    def converged(self) -> bool:
        try:
            server = read_server_any(self.store or self.db_path)
            stores = {c.name: (c.user, read_store(c.store)) for c in self.clients}
            earlier = {m.key for p in self.previous_dbs for m in read_server(p).messages}
        except sqlite3.Error:
            return False
        return all(c.up for c in self.clients) and _converged(server, stores, earlier)


def _converged(
    server: ServerView,
    stores: dict[str, tuple[str, StoreView]],
    earlier: AbstractSet[Key] = frozenset(),
) -> bool:
    """Every store holds exactly the server's messages of its conversations; no open rows.

    ``stores``: device name -> (its user, its store). ``earlier``: messages stored by the
    server of an earlier epoch (their senders rightly show them sent).
    """
    keys = {m.key for m in server.messages}
    groups = [
        GroupStream(conv, [m for m in server.messages if m.conv == conv], last)
        for conv, last in server.groups.items()
    ]
    for user, st in stores.values():
        mine = {conv: last for conv, (a, b, last) in server.conversations.items() if user in (a, b)}
        # In a group: the user's visible seqs (up to the last one) and nothing else.
        expected = dict(mine)
        for g in groups:
            if visible := g.visible(user):
                mine[g.conv] = max(visible)
                expected[g.conv] = len(visible)
        if any(st.watermarks.get(conv, 0) != last for conv, last in mine.items()):
            return False
        if any(w and conv not in mine for conv, w in st.watermarks.items()):
            return False
        if sum(1 for m in st.messages if m.conv in mine) != sum(expected.values()):
            return False
        for o in st.outbox:
            key = (user, o.client_id)
            if o.state in _OPEN:
                return False
            if key in earlier and key not in keys:
                # Stored before the history was lost: shown sent, or given up since (the
                # new server then confirms the give-up; it cannot know the old history).
                continue
            if (o.state == "sent") != (key in keys):
                return False
    return True


async def run_schedule(
    schedule: Schedule,
    *,
    root: Path | None = None,
    keep: str = "failed",
    server_variant: str | None = None,
    client_variant: str | None = None,
    convergence_limit: float = CONVERGENCE_LIMIT,
    convergence_grace: float = CONVERGENCE_GRACE,
    nodes: Nodes | None = None,
) -> ScheduleResult:
    """Play one schedule against real processes and check it.

    ``keep``: "always", "failed" or "never": whether the work directory (databases, stores,
    logs in ``logs.json``) stays on disk.
    """
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{schedule.seed}-{schedule.index}-", dir=root))
    run = _Run(schedule, workdir, server_variant, client_variant, nodes)
    converged_in: float | None = None
    try:
        await run.setup()
        await run.play()
        await run.stop_faults()
        loop = asyncio.get_running_loop()
        t_stop = loop.time()
        while loop.time() - t_stop < convergence_limit + convergence_grace:
            await run.settle()
            if run.converged():
                converged_in = loop.time() - t_stop
                break
            await asyncio.sleep(0.05)
    finally:
        await run.teardown()
    # A window longer than the run plus its settling: a failure can only be a bug (or a
    # final reject, which the checker allows for peers without an account).
    longest = schedule.duration + 30.0
    records = [
        ClientRecord(
            c.user,
            c.store,
            c.incarnations,
            schedule.on_failure[c.index],
            always_fresh=schedule.freshness[c.index] > longest,
            device=c.device,
        )
        for c in run.clients
    ]
    report = check(
        run.store or run.db_path,
        records,
        converged_in=converged_in,
        convergence_limit=convergence_limit,
        earlier_servers=run.previous_dbs,
    )
    result = ScheduleResult(
        schedule.seed,
        schedule.index,
        run.messages,
        run.faults,
        run.user_actions,
        converged_in,
        report,
        time.monotonic() - started,
        notes=run.notes,
        server_log=run.server_log,
    )
    if keep == "always" or (keep == "failed" and not report.ok):
        _save_logs(workdir, schedule, run, result)
        result.workdir = workdir
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _save_logs(workdir: Path, schedule: Schedule, run: _Run, result: ScheduleResult) -> None:
    (workdir / "schedule.txt").write_text(schedule.describe() + "\n", encoding="utf-8")
    data = {
        "violations": [str(v) for v in result.report.violations],
        "notes": result.notes,
        "clients": {
            c.name: {
                "store": str(c.store),
                "stderr": c.stderr,
                "incarnations": [
                    {"initial_view": sorted(map(list, inc.initial_view)), "lines": inc.lines}
                    for inc in c.incarnations
                ],
            }
            for c in run.clients
        },
        "server_stdout": run.server.stdout_lines if run.server else [],
        "server_stderr": run.server.stderr_lines if run.server else [],
    }
    (workdir / "logs.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


def failure_digest(result: ScheduleResult, lines: int = 40) -> str:
    """What a failed schedule's devices logged, for a CI log that outlives its temp dir.

    The tail of each device's stderr and of its event lines, and the server's stderr.
    """
    if result.workdir is None or not (result.workdir / "logs.json").exists():
        return f"seed {result.seed} #{result.index}: no logs kept"
    data = json.loads((result.workdir / "logs.json").read_text(encoding="utf-8"))
    out = [f"--- seed {result.seed} #{result.index}: notes {data['notes']}"]
    for name, client in data["clients"].items():
        events = [line for inc in client["incarnations"] for line in inc["lines"]]
        out.append(f"--- {name}: {len(client['incarnations'])} runs; stderr tail:")
        out += [f"  {x}" for x in client["stderr"][-lines:]]
        out.append(f"--- {name}: event tail:")
        out += [f"  {str(x)[:300]}" for x in events[-lines:]]
    out.append("--- server stderr tail:")
    out += [f"  {x}" for x in data["server_stderr"][-lines:]]
    return "\n".join(out)


# ---------------------------------------------------------------- many schedules


@dataclass
class RunSummary:
    seed: int
    first: int
    schedules: int = 0
    messages: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    user_actions: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    checked: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    converge_max: float = 0.0
    converge_total: float = 0.0
    elapsed: float = 0.0

    def add(self, r: ScheduleResult) -> None:
        self.schedules += 1
        self.messages += r.messages
        self.checked.update(
            {k: r.report.counts.get(k, 0) for k in ("on_server", "acked_events", "given_up")}
        )
        self.faults.update(r.faults)
        self.user_actions.update(r.user_actions)
        self.violations.update({k: v for k, v in r.report.by_kind().items() if v})
        if r.converged_in is not None:
            self.converge_max = max(self.converge_max, r.converged_in)
            self.converge_total += r.converged_in
        if not r.ok:
            where = f" (kept in {r.workdir})" if r.workdir else ""
            first = r.report.violations[0]
            self.failed.append(f"seed {r.seed} schedule {r.index}: {first}{where}")

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "first": self.first,
            "schedules": self.schedules,
            "messages": self.messages,
            "stored_on_server": self.checked["on_server"],
            "acked_events_checked": self.checked["acked_events"],
            "given_up": self.checked["given_up"],
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "user_actions": dict(sorted(self.user_actions.items())),
            "lost": self.violations["lost"],
            "duplicated": self.violations["duplicated"],
            "reordered": self.violations["reordered"],
            "wrong_state": self.violations["wrong_state"],
            "violations": {k: self.violations[k] for k in KINDS},
            "failed_schedules": self.failed,
            "convergence_max_s": round(self.converge_max, 3),
            "convergence_mean_s": round(self.converge_total / max(1, self.schedules), 3),
            "elapsed_s": round(self.elapsed, 1),
        }

    def text(self) -> str:
        d = self.as_dict()
        lines = [
            f"chaos seed {self.seed}, schedules {self.first}..{self.first + self.schedules - 1}",
            f"schedules: {self.schedules}   messages: {self.messages} "
            f"({d['stored_on_server']} stored, {d['given_up']} given up)   "
            f"faults: {d['faults_total']}   elapsed: {d['elapsed_s']} s",
            "faults: " + ", ".join(f"{k} {v}" for k, v in d["faults"].items()),
            "user actions: " + ", ".join(f"{k} {v}" for k, v in d["user_actions"].items()),
            f"lost: {d['lost']}   duplicated: {d['duplicated']}   reordered: {d['reordered']}"
            f"   wrong-state: {d['wrong_state']}",
            "all violations: " + ", ".join(f"{k} {v}" for k, v in d["violations"].items()),
            f"convergence after faults stopped: mean {d['convergence_mean_s']} s, "
            f"max {d['convergence_max_s']} s",
        ]
        lines += [f"FAILED {f}" for f in self.failed]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


async def run_schedules(
    seed: int,
    count: int,
    *,
    first: int = 0,
    clients: int = 3,
    messages: int = 45,
    duration: float = 3.0,
    jobs: int = 1,
    root: Path | None = None,
    keep: str = "failed",
    server_variant: str | None = None,
    client_variant: str | None = None,
    progress: Any = None,
    groups: bool = False,
    convergence_limit: float = CONVERGENCE_LIMIT,
    nodes: Nodes | None = None,
) -> tuple[RunSummary, list[ScheduleResult]]:
    """Play ``count`` schedules of ``seed`` from index ``first``, ``jobs`` at a time.

    ``groups``: the group schedules (:func:`make_group_schedule`; ``clients`` is then
    ignored, each schedule draws 3 to 5 users) instead of the direct ones."""
    summary = RunSummary(seed, first)
    results: list[ScheduleResult] = []
    started = time.monotonic()
    indexes = iter(range(first, first + count))

    async def worker() -> None:
        for index in indexes:
            schedule = (
                make_group_schedule(seed, index, messages=messages, duration=duration)
                if groups
                else make_schedule(
                    seed, index, clients=clients, messages=messages, duration=duration
                )
            )
            r = await run_schedule(
                schedule,
                root=root,
                keep=keep,
                server_variant=server_variant,
                client_variant=client_variant,
                convergence_limit=convergence_limit,
                nodes=nodes,
            )
            results.append(r)
            summary.add(r)
            if progress is not None:
                status = "ok" if r.ok else f"FAIL {r.report.by_kind()}"
                conv = "never" if r.converged_in is None else f"{r.converged_in:.2f}s"
                print(
                    f"seed {seed} schedule {index}: {r.messages} messages, "
                    f"{sum(r.faults.values())} faults, converged {conv}, "
                    f"{r.elapsed:.1f}s: {status}",
                    file=progress,
                    flush=True,
                )

    await asyncio.gather(*(worker() for _ in range(max(1, jobs))))
    summary.elapsed = time.monotonic() - started
    results.sort(key=lambda r: r.index)
    return summary, results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.chaos",
        description="Seeded chaos runs against real server and client processes.",
    )
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--schedules", type=int, default=10)
    parser.add_argument("--first", type=int, default=0, help="index of the first schedule")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--messages-per-schedule", type=int, default=45)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of faults")
    parser.add_argument("--jobs", type=int, default=1, help="schedules run at the same time")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", choices=("always", "failed", "never"), default="failed")
    parser.add_argument("--print-schedule", action="store_true", help="print, do not run")
    parser.add_argument("--server-variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--client-variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-schedule lines")
    parser.add_argument(
        "--groups",
        action="store_true",
        help="group schedules: 3-5 users, groups of 3-5 members, membership changes",
    )
    args = parser.parse_args(argv)
    if args.clients < 3:
        parser.error("--clients must be at least 3")
    if args.print_schedule:
        for index in range(args.first, args.first + args.schedules):
            if args.groups:
                schedule = make_group_schedule(
                    args.seed, index, messages=args.messages_per_schedule, duration=args.duration
                )
            else:
                schedule = make_schedule(
                    args.seed,
                    index,
                    clients=args.clients,
                    messages=args.messages_per_schedule,
                    duration=args.duration,
                )
            print(schedule.describe())
        return 0
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    summary, _ = asyncio.run(
        run_schedules(
            args.seed,
            args.schedules,
            first=args.first,
            clients=args.clients,
            messages=args.messages_per_schedule,
            duration=args.duration,
            jobs=args.jobs,
            root=args.workdir,
            keep=args.keep,
            server_variant=args.server_variant,
            client_variant=args.client_variant,
            progress=None if args.quiet else sys.stderr,
            groups=args.groups,
        )
    )
    if args.json:
        print(json.dumps(summary.as_dict(), indent=1))
    else:
        print(summary.text())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
