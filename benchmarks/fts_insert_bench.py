"""What indexing a message for search costs at insert: no trigger, a queueing trigger, FTS5.

    .venv/bin/python benchmarks/fts_insert_bench.py [--rows 50000]

In-memory SQLite, the store's message shape (WITHOUT ROWID, (conv, seq) key), rows of 15
random words inserted in one transaction in batches of 1,000; CPU µs per row, the load
printed beside. Why the store queues (conv, seq) in a trigger and indexes later
(docs/benchmarks.md, "Catch-up with the search index").
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import string
import time

MODES = {
    "no trigger": [],
    "queue (conv, seq)": [
        "CREATE TABLE q(conv TEXT, seq INT, PRIMARY KEY(conv, seq)) WITHOUT ROWID",
        "CREATE TRIGGER t AFTER INSERT ON messages WHEN new.kind='text'"
        " BEGIN INSERT INTO q VALUES(new.conv, new.seq); END",
    ],
    "FTS5 in the trigger": [
        "CREATE VIRTUAL TABLE f USING fts5(body, conv UNINDEXED, seq UNINDEXED,"
        " tokenize='unicode61 remove_diacritics 2')",
        "CREATE TRIGGER t AFTER INSERT ON messages WHEN new.kind='text'"
        " BEGIN INSERT INTO f(body, conv, seq) VALUES(new.body, new.conv, new.seq); END",
    ],
}


def run(statements: list[str], rows: list[tuple[str, int, str]]) -> float:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute(
        "CREATE TABLE messages(conv TEXT, seq INT, body TEXT, kind TEXT DEFAULT 'text',"
        " PRIMARY KEY(conv, seq)) WITHOUT ROWID"
    )
    for sql in statements:
        db.execute(sql)
    t0 = time.process_time()
    db.execute("BEGIN")
    for i in range(0, len(rows), 1000):
        db.executemany("INSERT INTO messages(conv, seq, body) VALUES(?, ?, ?)", rows[i : i + 1000])
    db.execute("COMMIT")
    return (time.process_time() - t0) / len(rows) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()
    rng = random.Random(1)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(5000)]
    rows = [("c1", i, " ".join(rng.choices(words, k=15))) for i in range(1, args.rows + 1)]
    print(f"sqlite {sqlite3.sqlite_version}, {args.rows} rows, load {os.getloadavg()[0]:.2f}")
    base = run(MODES["no trigger"], rows)
    for name, statements in MODES.items():
        cost = base if name == "no trigger" else run(statements, rows)
        print(f"  {name:22} {cost:6.1f} µs CPU per row ({cost / base:.1f}x the plain insert)")


if __name__ == "__main__":
    main()
