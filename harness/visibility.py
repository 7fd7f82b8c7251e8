"""Who may see what in a group, derived from the server's own events.

A group's history is its seq stream: ``created`` (seq 1; its ``members`` are everyone,
the creator first), then texts and ``added`` / ``removed`` / ``left`` / ``renamed``
events. :class:`GroupStream` replays that stream once and answers the questions the
checker asks of it:

- the member list after each seq (what every client must derive at that seq);
- each user's visible seqs: from the event that made them a member (``created`` for the
  initial members, their own ``added``) up to and including the event that ended it
  (their ``removed`` or ``left``), once per interval if they were added again. That is
  ``seq`` visible to ``user`` iff ``user`` is a member just before or just after it;
- where the server broke the group rules itself (a text from a non-member, an ``added``
  by someone other than the creator, a second ``created`` …): :attr:`problems`.

It is fed rows shaped like the protocol's ``message`` frame (:class:`EventLike`), so the
checker can build it from the server's database and tests from hand-made histories.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol

__all__ = ["MEMBERSHIP_KINDS", "EventLike", "GroupStream", "intervals"]

CREATED: Final = "created"
ADDED: Final = "added"
REMOVED: Final = "removed"
LEFT: Final = "left"
RENAMED: Final = "renamed"
TEXT: Final = "text"
MEMBERSHIP_KINDS: Final = frozenset({CREATED, ADDED, REMOVED, LEFT})


class EventLike(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def title(self) -> str | None: ...
    @property
    def members(self) -> tuple[str, ...] | None: ...


class GroupStream:
    """One group's stream replayed: members after each seq, and the rule breaks in it."""

    def __init__(self, conv: str, events: Iterable[EventLike], last_seq: int | None = None) -> None:
        self.conv = conv
        ordered = sorted(events, key=lambda e: e.seq)
        self.last_seq = max([last_seq or 0, *(e.seq for e in ordered)])
        self.creator: str | None = None
        self.title: dict[int, str] = {}
        self.problems: list[str] = []
        # members just before and just after each seq (a missing seq, a gap the checker
        # reports elsewhere, changes nothing)
        self._before: dict[int, frozenset[str]] = {}
        self._after: dict[int, frozenset[str]] = {}
        members: frozenset[str] = frozenset()
        title = ""
        by_seq = {e.seq: e for e in ordered}
        # user -> [joined_seq, left_seq or None] per membership interval
        self._terms: dict[str, list[list[int | None]]] = {}
        for seq in range(1, self.last_seq + 1):
            self._before[seq] = members
            e = by_seq.get(seq)
            if e is not None:
                before = members
                members, title = self._apply(e, members, title)
                for u in members - before:
                    self._terms.setdefault(u, []).append([seq, None])
                for u in before - members:
                    self._terms[u][-1][1] = seq
            self._after[seq] = members
            self.title[seq] = title

    def _problem(self, e: EventLike, what: str) -> None:
        self.problems.append(f"group {self.conv} seq {e.seq} ({e.kind} by {e.sender}): {what}")

    def _apply(
        self, e: EventLike, members: frozenset[str], title: str
    ) -> tuple[frozenset[str], str]:
        if e.kind == CREATED:
            if e.seq != 1 or self.creator is not None:
                self._problem(e, "a group is created once, at seq 1")
                return members, title
            listed = tuple(e.members or ())
            if not listed or listed[0] != e.sender:
                self._problem(e, f"members {list(listed)} do not start with the creator")
            if len(set(listed)) != len(listed):
                self._problem(e, f"members {list(listed)} hold a name twice")
            self.creator = e.sender
            return frozenset(listed) | {e.sender}, e.title or ""
        if e.seq == 1:
            self._problem(e, "the first event of a group must be 'created'")
        if e.sender not in members:
            # Every command and text needs its sender to be a member at that seq: the
            # server accepted one from an outsider (or from someone already removed).
            self._problem(e, "the sender is not a member")
        if e.kind == ADDED:
            if e.sender != self.creator:
                self._problem(e, "only the creator may add")
            if e.user is None or e.user in members:
                self._problem(e, f"{e.user} is already a member")
            return members | {e.user or ""}, title
        if e.kind == REMOVED:
            if e.sender != self.creator:
                self._problem(e, "only the creator may remove")
            if e.user == e.sender:
                self._problem(e, "removing oneself is 'leave'")
            if e.user not in members:
                self._problem(e, f"{e.user} is not a member")
            return members - {e.user or ""}, title
        if e.kind == LEFT:
            if e.user not in (None, e.sender):
                self._problem(e, f"'left' names {e.user}, not its sender")
            return members - {e.sender}, title
        if e.kind == RENAMED:
            if not (e.title or "").strip():
                self._problem(e, "renamed to a blank title")
            return members, e.title or ""
        if e.kind != TEXT:
            self._problem(e, "unknown kind")
        return members, title

    def members_at(self, seq: int) -> frozenset[str]:
        """The member list after the event at ``seq`` (empty before seq 1)."""
        if seq <= 0:
            return frozenset()
        return self._after.get(min(seq, self.last_seq), frozenset())

    def sees(self, user: str, seq: int) -> bool:
        return user in self._before.get(seq, frozenset()) or user in self._after.get(
            seq, frozenset()
        )

    def visible(self, user: str) -> set[int]:
        return {s for s in range(1, self.last_seq + 1) if self.sees(user, s)}

    def terms(self, user: str) -> list[tuple[int, int | None]]:
        """Each membership interval: (the seq that made ``user`` a member, the seq that
        ended it, or None while it lasts). Two intervals may touch (removed, re-added)."""
        return [(int(a or 0), b) for a, b in self._terms.get(user, [])]

    def ever_member(self, user: str) -> bool:
        return any(user in m for m in self._after.values())


def intervals(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as closed runs: {1,2,3,7,8} -> [(1, 3), (7, 8)]."""
    runs: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs
