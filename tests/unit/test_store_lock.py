"""One replica, one engine: a second client of the same account is refused, not racing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tui_chat.core.store import LocalStore, StoreError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX here")


def test_a_second_store_on_the_same_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alice@host.sqlite3"
    first = LocalStore(path, "alice")
    with pytest.raises(StoreError, match="in use by another tui-chat"):
        LocalStore(path, "alice")
    first.close()
    second = LocalStore(path, "alice")  # free again
    second.close()


def test_a_store_of_another_user_releases_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "alice@host.sqlite3"
    LocalStore(path, "alice").close()
    with pytest.raises(StoreError, match="belongs to user"):
        LocalStore(path, "bob")
    LocalStore(path, "alice").close()  # the failed open did not keep the lock
