"""Group conversations: the writer's view of them and the membership rules.

Only the writer thread changes groups, and it decides every rule here inside the
transaction that stores the event. So its state is the committed state plus the events of
the batch being committed; after a rollback the writer reloads it from the database
(:func:`load`), as it does conversations. No other part of the server decides membership
from memory: readers answer from the ``members`` table in the same statement as the read.

Who may do what (documented in docs/protocol.md, "Groups"):

* any member may send, rename and leave;
* only the creator may add and remove; members may not add. A creator who left is no
  longer a member, so nobody can add or remove any more (the group stays usable);
* a member may not remove themself: that is ``leave``.
"""

from __future__ import annotations

import sqlite3
from typing import Final, NamedTuple

from tui_chat.protocol import ErrorCode


class GroupLimits(NamedTuple):
    max_members: int = 1000  # the creator included
    max_title: int = 100  # characters
    max_groups_per_user: int = 500  # groups one is currently a member of


class Refusal(NamedTuple):
    """A rule that says no: a reject code and a reason for people (never retryable)."""

    code: str
    reason: str


NOT_MEMBER: Final = Refusal(ErrorCode.NOT_MEMBER, "you are not a member of this group")
NOT_ALLOWED: Final = Refusal(
    ErrorCode.NOT_ALLOWED, "only the group's creator may add or remove members"
)
REMOVE_SELF: Final = Refusal(ErrorCode.BAD_FRAME, "you cannot remove yourself: use leave")


class Group:
    """One group as the writer knows it: title, creator, last seq and current members."""

    __slots__ = ("creator", "id", "last", "members", "title")

    def __init__(self, conv_id: str, title: str, creator: int, last: int) -> None:
        self.id = conv_id
        self.title = title
        self.creator = creator
        self.last = last
        # Current members, account id -> name, in join order (dicts keep insertion order).
        self.members: dict[int, str] = {}


class Groups:
    """Every group, and how many groups each account is currently a member of."""

    def __init__(self) -> None:
        self.by_id: dict[str, Group] = {}
        self.counts: dict[int, int] = {}

    def get(self, conv: str) -> Group | None:
        return self.by_id.get(conv)

    def join(self, group: Group, account: int, name: str) -> None:
        group.members[account] = name
        self.counts[account] = self.counts.get(account, 0) + 1

    def part(self, group: Group, account: int) -> None:
        del group.members[account]
        self.counts[account] -= 1

    def clear(self) -> None:
        self.by_id.clear()
        self.counts.clear()


def load(conn: sqlite3.Connection, groups: Groups) -> None:
    """Fill ``groups`` from the committed database."""
    groups.clear()
    for conv, title, creator, last in conn.execute(
        "SELECT id, title, creator_id, last_seq FROM groups"
    ):
        groups.by_id[conv] = Group(conv, title, creator, last)
    for conv, account, name in conn.execute(
        "SELECT conv, user_id, user FROM members WHERE left_seq IS NULL ORDER BY ord"
    ):
        groups.join(groups.by_id[conv], account, name)


# ---------------------------------------------------------------- rules


def check_title(title: str, limits: GroupLimits) -> Refusal | None:
    if not title.strip():
        return Refusal(ErrorCode.BAD_TITLE, "the title is empty")
    if len(title) > limits.max_title:
        return Refusal(
            ErrorCode.BAD_TITLE,
            f"the title is {len(title)} characters; the limit is {limits.max_title}",
        )
    return None


def initial_members(creator: str, members: list[str]) -> list[str]:
    """The creator first, then ``members`` in the order given, without repeats."""
    out = [creator]
    seen = {creator}
    for name in members:
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def check_size(count: int, limits: GroupLimits) -> Refusal | None:
    """``count`` members (after the change) against the limit."""
    if count > limits.max_members:
        return Refusal(
            ErrorCode.TOO_MANY_MEMBERS,
            f"a group has at most {limits.max_members} members",
        )
    return None


def check_joining(groups: Groups, account: int, name: str, limits: GroupLimits) -> Refusal | None:
    """May ``account`` become a member of one more group?"""
    if groups.counts.get(account, 0) >= limits.max_groups_per_user:
        return Refusal(
            ErrorCode.TOO_MANY_GROUPS,
            f"{name} is already in {limits.max_groups_per_user} groups, the limit",
        )
    return None


def check_member(group: Group | None, sender: int) -> Refusal | None:
    """Sending, renaming, leaving, and everything else, need current membership.

    A group that does not exist gets the same answer as one the sender is not in: a
    non-member learns nothing about a group.
    """
    if group is None or sender not in group.members:
        return NOT_MEMBER
    return None


def check_manage(group: Group | None, sender: int) -> Refusal | None:
    """Adding and removing: a member, and the creator."""
    refusal = check_member(group, sender)
    if refusal is None and group is not None and group.creator != sender:
        return NOT_ALLOWED
    return refusal


def member_named(group: Group, name: str, active: int | None) -> int | None:
    """The current member called ``name``: the active account of that name if it is one,
    else a member whose (since removed) account had that name."""
    if active is not None and active in group.members:
        return active
    for account, member in group.members.items():
        if member == name:
            return account
    return None
