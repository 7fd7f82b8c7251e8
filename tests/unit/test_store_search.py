"""The store's full-text index: kept in step with inserts, built for a store that predates
it, emptied with the history at an epoch reset, and never fed FTS5 syntax."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tui_chat.core.store import LocalStore, search_query


def fill(store: LocalStore) -> None:
    store.ensure_conversation("bob", "c1")
    for seq, body in enumerate(["see you at lunch", "Café crème?", "nothing here"], 1):
        store.insert_message("c1", seq, "bob", "alice", f"b{seq}", body, seq * 1000)
    store.advance_watermark("c1")
    store.commit()


def test_words_are_quoted_prefixes_so_nothing_typed_is_syntax() -> None:
    assert search_query("  lunch  fri ") == '"lunch"* "fri"*'
    assert search_query('say "NEAR(') == '"say"* """NEAR("*'
    assert search_query("   ") is None


def test_search_finds_every_word_newest_first_accents_folded(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s.db", "alice")
    fill(store)
    assert [m.seq for m in store.search("cafe")] == [2]
    assert [m.seq for m in store.search("lun")] == [1]
    assert store.search("lunch cafe") == []  # every word must be in one message
    store.ensure_conversation("carol", "c2")
    store.insert_message("c2", 1, "carol", "alice", "c-1", "lunch again", 9000)
    store.advance_watermark("c2")
    assert [(m.peer, m.seq) for m in store.search("lunch")] == [("carol", 1), ("bob", 1)]
    for hostile in ['"', "*", "NEAR(a b)", "AND OR NOT", "body:x", "^"]:
        assert store.search(hostile) == []  # no error, nothing matches
    store.close()


def test_a_store_from_before_the_index_gets_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = LocalStore(path, "alice")
    fill(store)
    store.close()
    # As a store written before search existed: no index rows, no marker.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM messages_fts")
        db.execute("DELETE FROM search_pending")
        db.execute("DELETE FROM meta WHERE key='search_index'")
    store = LocalStore(path, "alice")
    assert [m.seq for m in store.search("crème")] == [2]
    store.reset_for_epoch("new")
    assert store.search("crème") == []
    store.close()


def test_inserts_are_queued_and_indexed_in_steps(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s.db", "alice")
    store.ensure_conversation("bob", "c1")
    for seq in range(1, 451):
        store.insert_message("c1", seq, "bob", "alice", f"b{seq}", f"word{seq} common", seq)
    store.advance_watermark("c1")
    store.commit()
    assert store.index_pending(200) == 200
    assert store.index_pending(200) == 200
    # A search indexes what is still queued first: all 450 are found.
    assert len(store.search("common", limit=1000)) == 450
    assert store.index_pending(200) == 0
    store.close()
