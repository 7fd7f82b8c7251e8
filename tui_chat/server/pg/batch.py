"""One round trip for a batch of direct sends: a PL/pgSQL function, called once per batch.

The common batch (sends to people, from sessions whose accounts the writer has checked at
the accounts version it passes) is stored by one statement; being a single statement on an
autocommit connection, it is its own transaction, and its result arrives only after the
commit (with ``synchronous_commit`` on: after the WAL is flushed), so an ack never goes out
for anything that is not durable. In that one transaction the function

1. takes the accounts version row ``FOR SHARE`` and gives up (``stale``, nothing written)
   if it is not the version the caller checked the accounts at: an admin change is either
   fully seen or waits for this batch, as with SQLite's write lock;
2. creates the conversations that do not exist yet, then locks every conversation of the
   batch in id order (two nodes' batches cannot deadlock on them);
3. decides the whole batch in one statement: a ``(sender, client_id)`` already in
   ``sends`` (committed by any node) is answered with the original seq (``duplicate``) or as
   a tombstone (``cancelled``) and stores nothing, as is a repeat later in the same batch
   (answered with the first one's seq); the others get ``last_seq + 1, + 2, …`` per
   conversation in batch order, their messages and registry rows are inserted, and each
   conversation's ``last_seq`` is bumped once.

These are the decisions of ``Writer._store_send`` in the same order (the Python pre-pass
settles closed sessions and unknown peers first, and sends any batch it cannot settle, or
anything that is not a direct send, through the general path, which runs the writer's own
code). Two nodes storing the same client_id at once: the later insert into ``sends`` waits
for the earlier transaction and then fails with a unique violation; the caller runs the
batch again, and this time the send is a duplicate.
"""

from __future__ import annotations

from typing import Final

NAME: Final = "tui_chat_direct_batch"

FUNCTION: Final = f"""
CREATE OR REPLACE FUNCTION {NAME}(
    p_version    text,
    p_sender_ids bigint[],
    p_client_ids text[],
    p_a_ids      bigint[],
    p_b_ids      bigint[],
    p_a_names    text[],
    p_b_names    text[],
    p_senders    text[],
    p_recipients text[],
    p_bodies     text[],
    p_ts         bigint
) RETURNS TABLE (o_state text, o_conv text, o_seq bigint, o_ts bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_version text;
BEGIN
    SELECT value INTO v_version FROM meta WHERE key = 'accounts_version' FOR SHARE;
    IF v_version IS DISTINCT FROM p_version THEN
        o_state := 'stale';
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO conversations (id, user_a, user_b, last_seq, a_id, b_id)
    SELECT DISTINCT ON (t.a, t.b)
           'c' || substr(md5(random()::text || clock_timestamp()::text || t.a || ':' || t.b),
                         1, 12),
           t.an, t.bn, 0, t.a, t.b
      FROM unnest(p_a_ids, p_b_ids, p_a_names, p_b_names) AS t(a, b, an, bn)
     WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.a_id = t.a AND c.b_id = t.b)
     ORDER BY t.a, t.b
    ON CONFLICT (a_id, b_id) DO NOTHING;
    PERFORM 1 FROM conversations c
     WHERE (c.a_id, c.b_id) IN (SELECT * FROM unnest(p_a_ids, p_b_ids))
     ORDER BY c.id
       FOR UPDATE;
    -- The conversations' last_seq as locked above (READ COMMITTED: a new snapshot per
    -- statement, and nobody else can move a locked row). One statement decides the rest.
    RETURN QUERY
    WITH inp AS (
        SELECT t.sid, t.cid, t.sn, t.rn, t.body, t.i, c.id AS conv, c.last_seq AS last
          FROM unnest(p_sender_ids, p_client_ids, p_a_ids, p_b_ids, p_senders, p_recipients,
                      p_bodies) WITH ORDINALITY AS t(sid, cid, a, b, sn, rn, body, i)
          JOIN conversations c ON c.a_id = t.a AND c.b_id = t.b
    ),
    firsts AS (
        -- A client_id twice in one batch: the first one counts, as in Writer's ``seen``.
        SELECT DISTINCT ON (inp.sid, inp.cid) inp.sid, inp.cid, inp.i
          FROM inp ORDER BY inp.sid, inp.cid, inp.i
    ),
    known AS (
        SELECT s.sender_id AS sid, s.client_id AS cid, s.conv, s.seq
          FROM sends s JOIN firsts f ON s.sender_id = f.sid AND s.client_id = f.cid
    ),
    fresh AS (
        SELECT inp.*, inp.last + row_number() OVER (PARTITION BY inp.conv ORDER BY inp.i)
               AS seq
          FROM inp JOIN firsts f ON f.i = inp.i
         WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.sid = inp.sid AND k.cid = inp.cid)
    ),
    ins_messages AS (
        INSERT INTO messages (conv, seq, sender, recipient, client_id, body, ts)
        SELECT fresh.conv, fresh.seq, fresh.sn, fresh.rn, fresh.cid, fresh.body, p_ts
          FROM fresh
    ),
    ins_sends AS (
        INSERT INTO sends (sender_id, client_id, conv, seq, ts)
        SELECT fresh.sid, fresh.cid, fresh.conv, fresh.seq, p_ts FROM fresh
    ),
    bumped AS (
        UPDATE conversations c SET last_seq = x.top
          FROM (SELECT fresh.conv, max(fresh.seq) AS top FROM fresh GROUP BY fresh.conv) x
         WHERE c.id = x.conv
        RETURNING c.id
    )
    SELECT CASE WHEN fr.i = inp.i THEN 'stored'
                WHEN fr.i IS NOT NULL THEN 'duplicate'
                WHEN k.conv IS NULL THEN 'cancelled'
                ELSE 'duplicate' END,
           coalesce(fr.conv, k.conv),
           coalesce(fr.seq, k.seq),
           CASE WHEN fr.i IS NOT NULL THEN p_ts
                WHEN k.conv IS NOT NULL THEN
                    (SELECT m.ts FROM messages m WHERE m.conv = k.conv AND m.seq = k.seq)
           END
      FROM inp
      LEFT JOIN fresh fr ON fr.sid = inp.sid AND fr.cid = inp.cid
      LEFT JOIN known k ON k.sid = inp.sid AND k.cid = inp.cid
     ORDER BY inp.i;
END
$fn$
"""

CALL: Final = (
    f"SELECT o_state, o_conv, o_seq, o_ts FROM {NAME}(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
