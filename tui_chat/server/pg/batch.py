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
3. per send, in order: a ``(sender, client_id)`` already in ``sends`` (committed by any
   node, or earlier in this batch) is answered with the original seq (``duplicate``) or as
   a tombstone (``cancelled``), and stores nothing; otherwise ``last_seq`` is bumped with
   ``UPDATE … RETURNING`` and the message and its registry row are inserted.

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
    v_conv    text;
    v_seq     bigint;
    v_ts      bigint;
    i         integer;
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
    FOR i IN 1 .. coalesce(array_length(p_sender_ids, 1), 0) LOOP
        SELECT s.conv, s.seq INTO v_conv, v_seq
          FROM sends s WHERE s.sender_id = p_sender_ids[i] AND s.client_id = p_client_ids[i];
        IF FOUND THEN
            IF v_conv IS NULL THEN
                o_state := 'cancelled';
                o_conv := NULL; o_seq := NULL; o_ts := NULL;
            ELSE
                SELECT m.ts INTO v_ts FROM messages m WHERE m.conv = v_conv AND m.seq = v_seq;
                o_state := 'duplicate';
                o_conv := v_conv; o_seq := v_seq; o_ts := v_ts;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE conversations SET last_seq = last_seq + 1
         WHERE a_id = p_a_ids[i] AND b_id = p_b_ids[i]
        RETURNING id, last_seq INTO v_conv, v_seq;
        INSERT INTO messages (conv, seq, sender, recipient, client_id, body, ts)
        VALUES (v_conv, v_seq, p_senders[i], p_recipients[i], p_client_ids[i], p_bodies[i], p_ts);
        INSERT INTO sends (sender_id, client_id, conv, seq, ts)
        VALUES (p_sender_ids[i], p_client_ids[i], v_conv, v_seq, p_ts);
        o_state := 'stored';
        o_conv := v_conv; o_seq := v_seq; o_ts := p_ts;
        RETURN NEXT;
    END LOOP;
END
$fn$
"""

CALL: Final = (
    f"SELECT o_state, o_conv, o_seq, o_ts FROM {NAME}(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
