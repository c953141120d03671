"""ledger: ledger_post(), ledger_post_each(), ledger_post_batch(): a transfer in one round trip (PostgreSQL only)

Revision ID: 0004_ledger_function
Revises: 0003_ranking
Create Date: 2026-11-26 23:00:00.000000

The same steps as marketplace/wallet/store.py's post(), inside the database: idempotency check, accounts
created when missing, conditional updates of the business balances in ascending account id order, the
postings, then the transaction row (which the 0002 triggers accept only if the postings balance).

ledger_post(...) writes one transfer and raises on refusal:
    LDG01  insufficient funds: a business balance would fall below zero (nothing is written)
    LDG02  idempotency conflict: the key already moved different money
and returns (transaction id, replayed = true) for a retry of a transfer already written.

ledger_post_batch(...) writes several transfers (parallel arrays; postings flattened, p_counts per transfer)
in the caller's transaction, in order, with the outcome of each as a row instead of an exception:
(ord, transaction_id, replayed, sqlstate, message, batched). What one transfer sees is what the ones before it in the
batch left, exactly as if they had been posted one after another. It is set-based: the accounts, the keys
already used and the balance changes are read with one statement each for the whole batch; every business
account of the batch is locked (in ascending id order) and read at once; each transfer's conditional
updates are then worked out in turn on those locked balances (a refused transfer takes back its own
changes); and one statement each updates the changed balances, inserts all postings and all transaction
rows. Should any account be missing, or anything fail (a key committed
meanwhile by another transaction: unique violation; a deadlock), the batch is undone and handed to
ledger_post_each(...), which runs ledger_post() for each transfer in a subtransaction of its own and turns
a unique violation on the key into a replay or a conflict, as store.post() does (batched is false then).

SQLite has none of them; there the service uses store.post().
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0004_ledger_function'
down_revision: str | None = '0003_ranking'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Debit-normal kinds, as in marketplace/wallet/ledger.py (_DEBIT_NORMAL): their balance is +postings, the
# others' is -postings. Business accounts (owner 'business') are the ones whose balance is kept and bounded.
LEDGER_POST = """
CREATE FUNCTION ledger_post(
    p_id text, p_key text, p_kind text, p_memo text, p_fingerprint text,
    p_business_id text, p_reference text, p_created_at timestamptz,
    p_codes text[], p_currencies text[], p_amounts bigint[]
) RETURNS TABLE (out_transaction_id text, out_replayed boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_prev_id text;
    v_prev_fingerprint text;
    v_ids integer[];
    v_account record;
    v_count integer := coalesce(array_length(p_codes, 1), 0);
    v_done_ids integer[] := '{}';
    v_done_deltas bigint[] := '{}';
BEGIN
    IF v_count < 2 OR coalesce(array_length(p_currencies, 1), 0) <> v_count
       OR coalesce(array_length(p_amounts, 1), 0) <> v_count THEN
        RAISE EXCEPTION 'ledger_post needs two or more postings, each with a code, a currency and an amount'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT t.id, t.fingerprint INTO v_prev_id, v_prev_fingerprint
      FROM ledger_transactions t WHERE t.idempotency_key = p_key;
    IF FOUND THEN
        IF v_prev_fingerprint IS DISTINCT FROM p_fingerprint THEN
            RAISE EXCEPTION 'idempotency key % already moved different money', p_key USING ERRCODE = 'LDG02';
        END IF;
        RETURN QUERY SELECT v_prev_id, true;
        RETURN;
    END IF;

    -- Account ids in posting order; accounts that do not exist yet are created (code is owner:owner_id:kind).
    -- A correlated subquery per posting, so that the cached generic plan is an index lookup each, never a
    -- scan of all accounts.
    SELECT array_agg((SELECT a.id FROM ledger_accounts a WHERE a.code = u.code AND a.currency = u.currency)
                     ORDER BY u.ord) INTO v_ids
      FROM unnest(p_codes, p_currencies) WITH ORDINALITY AS u(code, currency, ord);
    IF array_position(v_ids, NULL) IS NOT NULL THEN
        INSERT INTO ledger_accounts (code, owner, owner_id, kind, currency, balance_minor, non_negative, created_at)
        SELECT DISTINCT u.code, split_part(u.code, ':', 1), nullif(split_part(u.code, ':', 2), ''),
               split_part(u.code, ':', 3), u.currency, 0, split_part(u.code, ':', 1) = 'business', p_created_at
          FROM unnest(p_codes, p_currencies, v_ids) AS u(code, currency, id)
         WHERE u.id IS NULL
         ORDER BY 1, 5  -- code, currency: writers that create the same accounts do it in one order
        ON CONFLICT (code, currency) DO NOTHING;
        SELECT array_agg((SELECT a.id FROM ledger_accounts a WHERE a.code = u.code AND a.currency = u.currency)
                         ORDER BY u.ord) INTO v_ids
          FROM unnest(p_codes, p_currencies) WITH ORDINALITY AS u(code, currency, ord);
    END IF;

    -- Business balances, in ascending id order (concurrent transfers lock shared rows in one order); one
    -- that would fall below zero refuses the whole transfer.
    FOR v_account IN
        SELECT u.id, min(u.code) AS code,
               sum(u.amount * CASE WHEN split_part(u.code, ':', 3)
                   IN ('receivable', 'acquisition_costs', 'provider_clearing', 'bank') THEN 1 ELSE -1 END)::bigint
                   AS delta
          FROM unnest(v_ids, p_codes, p_amounts) AS u(id, code, amount)
         WHERE split_part(u.code, ':', 1) = 'business'
         GROUP BY u.id
         ORDER BY u.id
    LOOP
        CONTINUE WHEN v_account.delta = 0;
        UPDATE ledger_accounts SET balance_minor = balance_minor + v_account.delta
         WHERE id = v_account.id AND balance_minor + v_account.delta >= 0;
        IF NOT FOUND THEN
            -- A concurrent writer of this same key may have committed while this waited for the row, taking the
            -- money: then the transfer is written already, and this is a retry of it (as store.post answers).
            SELECT t.id, t.fingerprint INTO v_prev_id, v_prev_fingerprint
              FROM ledger_transactions t WHERE t.idempotency_key = p_key;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'the wallet does not hold enough for this'
                    USING ERRCODE = 'LDG01', DETAIL = v_account.code;
            ELSIF v_prev_fingerprint IS DISTINCT FROM p_fingerprint THEN
                RAISE EXCEPTION 'idempotency key % already moved different money', p_key USING ERRCODE = 'LDG02';
            END IF;
            FOR k IN 1 .. coalesce(array_length(v_done_ids, 1), 0) LOOP
                UPDATE ledger_accounts SET balance_minor = balance_minor - v_done_deltas[k] WHERE id = v_done_ids[k];
            END LOOP;
            RETURN QUERY SELECT v_prev_id, true;
            RETURN;
        END IF;
        v_done_ids := v_done_ids || v_account.id;
        v_done_deltas := v_done_deltas || v_account.delta;
    END LOOP;

    INSERT INTO ledger_postings (transaction_id, account_id, amount_minor, currency)
    SELECT p_id, u.id, u.amount, u.currency
      FROM unnest(v_ids, p_amounts, p_currencies) WITH ORDINALITY AS u(id, amount, currency, ord)
     ORDER BY u.ord;
    INSERT INTO ledger_transactions (id, idempotency_key, kind, memo, fingerprint, business_id, reference, created_at)
    VALUES (p_id, p_key, p_kind, p_memo, p_fingerprint, p_business_id, p_reference, p_created_at);
    RETURN QUERY SELECT p_id, false;
END
$fn$
"""

LEDGER_POST_EACH = """
CREATE FUNCTION ledger_post_each(
    p_ids text[], p_keys text[], p_kinds text[], p_memos text[], p_fingerprints text[],
    p_business_ids text[], p_references text[], p_created_at timestamptz[],
    p_counts integer[], p_codes text[], p_currencies text[], p_amounts bigint[]
) RETURNS TABLE (out_ord integer, out_transaction_id text, out_replayed boolean, out_sqlstate text, out_message text,
                out_batched boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_offset integer := 0;
    v_count integer;
    v_prev_id text;
    v_prev_fingerprint text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        v_count := p_counts[i];
        out_ord := i;
        out_transaction_id := NULL;
        out_replayed := NULL;
        out_sqlstate := NULL;
        out_message := NULL;
        out_batched := false;
        BEGIN
            SELECT r.out_transaction_id, r.out_replayed INTO out_transaction_id, out_replayed
              FROM ledger_post(
                  p_ids[i], p_keys[i], p_kinds[i], p_memos[i], p_fingerprints[i], p_business_ids[i],
                  p_references[i], p_created_at[i], p_codes[v_offset + 1 : v_offset + v_count],
                  p_currencies[v_offset + 1 : v_offset + v_count], p_amounts[v_offset + 1 : v_offset + v_count]
              ) AS r;
        EXCEPTION
            WHEN unique_violation THEN
                -- The unique check waited for the other writer of this key, which has committed: a new
                -- statement sees its row.
                SELECT t.id, t.fingerprint INTO v_prev_id, v_prev_fingerprint
                  FROM ledger_transactions t WHERE t.idempotency_key = p_keys[i];
                IF NOT FOUND THEN
                    GET STACKED DIAGNOSTICS out_sqlstate = RETURNED_SQLSTATE, out_message = MESSAGE_TEXT;
                ELSIF v_prev_fingerprint IS DISTINCT FROM p_fingerprints[i] THEN
                    out_sqlstate := 'LDG02';
                    out_message := format('idempotency key %s already moved different money', p_keys[i]);
                ELSE
                    out_transaction_id := v_prev_id;
                    out_replayed := true;
                END IF;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS out_sqlstate = RETURNED_SQLSTATE, out_message = MESSAGE_TEXT;
        END;
        RETURN NEXT;
        v_offset := v_offset + v_count;
    END LOOP;
END
$fn$
"""

ARGS = (
    "p_ids text[], p_keys text[], p_kinds text[], p_memos text[], p_fingerprints text[], p_business_ids text[], "
    "p_references text[], p_created_at timestamptz[], p_counts integer[], p_codes text[], p_currencies text[], "
    "p_amounts bigint[]"
)
CALL_EACH = (
    "ledger_post_each(p_ids, p_keys, p_kinds, p_memos, p_fingerprints, p_business_ids, p_references, p_created_at, "
    "p_counts, p_codes, p_currencies, p_amounts)"
)

LEDGER_POST_BATCH = """
CREATE FUNCTION ledger_post_batch(""" + ARGS + """)
RETURNS TABLE (out_ord integer, out_transaction_id text, out_replayed boolean, out_sqlstate text, out_message text,
                out_batched boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_n integer := coalesce(array_length(p_ids, 1), 0);
    v_tix integer[];                -- per posting: the index of its transfer
    v_ids integer[];                -- per posting: the account's id
    v_prev text[];                  -- per transfer: the transaction already written with its key
    v_state text[];                 -- per transfer: 'write', 'replay', 'LDG01' or 'LDG02'
    v_txn text[];                   -- per transfer: the transaction id answered
    v_detail text[];                -- per transfer: the refused account
    v_keys text[] := '{}';          -- keys, fingerprints and ids written so far in this batch
    v_fps text[] := '{}';
    v_written text[] := '{}';
    d_t integer[];                  -- business balance changes: transfer, account, delta, code,
    d_id integer[];                 -- ordered by transfer, then ascending account id
    d_delta bigint[];
    d_code text[];
    v_len integer;
    a_id integer[];                 -- the batch's business accounts, ascending, and their balances
    a_balance bigint[];
    a_start bigint[];
    c_id integer[] := '{}';         -- the accounts whose balance changed, and the new balance
    c_balance bigint[] := '{}';
    v_k integer;
    v_p integer := 1;
    v_start integer;
    v_ok boolean;
    v_pos integer;
    v_fp text;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    -- The arrays' shape; and per posting, the index of its transfer.
    v_tix := '{}';
    FOR i IN 1 .. v_n LOOP
        EXIT WHEN p_counts[i] IS NULL OR p_counts[i] < 2;
        v_tix := v_tix || array_fill(i, ARRAY[p_counts[i]]);
    END LOOP;
    IF coalesce(array_length(p_counts, 1), 0) <> v_n OR coalesce(array_length(p_keys, 1), 0) <> v_n
       OR coalesce(array_length(p_kinds, 1), 0) <> v_n OR coalesce(array_length(p_memos, 1), 0) <> v_n
       OR coalesce(array_length(p_fingerprints, 1), 0) <> v_n OR coalesce(array_length(p_business_ids, 1), 0) <> v_n
       OR coalesce(array_length(p_references, 1), 0) <> v_n OR coalesce(array_length(p_created_at, 1), 0) <> v_n
       OR coalesce(array_length(v_tix, 1), 0) <> coalesce(array_length(p_codes, 1), 0)
       OR coalesce(array_length(p_currencies, 1), 0) <> coalesce(array_length(p_codes, 1), 0)
       OR coalesce(array_length(p_amounts, 1), 0) <> coalesce(array_length(p_codes, 1), 0)
       OR v_tix[array_length(v_tix, 1)] <> v_n THEN
        RAISE EXCEPTION 'ledger_post_batch: one value per transfer, and two or more postings per transfer, each with '
                        'a code, a currency and an amount'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT array_agg((SELECT a.id FROM ledger_accounts a WHERE a.code = u.code AND a.currency = u.currency)
                     ORDER BY u.ord) INTO v_ids
      FROM unnest(p_codes, p_currencies) WITH ORDINALITY AS u(code, currency, ord);
    IF array_position(v_ids, NULL) IS NOT NULL THEN
        -- An account to create first: one subtransaction per transfer, so that a refused transfer leaves no
        -- account behind either.
        RETURN QUERY SELECT * FROM """ + CALL_EACH + """;
        RETURN;
    END IF;

    BEGIN
        SELECT array_agg(d.t ORDER BY d.t, d.id), array_agg(d.id ORDER BY d.t, d.id),
               array_agg(d.delta ORDER BY d.t, d.id), array_agg(d.code ORDER BY d.t, d.id)
          INTO d_t, d_id, d_delta, d_code
          FROM (SELECT u.t, u.id, min(u.code) AS code,
                       sum(u.amount * CASE WHEN split_part(u.code, ':', 3)
                           IN ('receivable', 'acquisition_costs', 'provider_clearing', 'bank') THEN 1 ELSE -1 END
                       )::bigint AS delta
                  FROM unnest(v_tix, v_ids, p_codes, p_amounts) AS u(t, id, code, amount)
                 WHERE split_part(u.code, ':', 1) = 'business'
                 GROUP BY u.t, u.id) AS d
         WHERE d.delta <> 0;
        v_len := coalesce(array_length(d_t, 1), 0);

        -- Every business account of the batch locked at once, in ascending id order (writers that lock this way
        -- cannot deadlock with one another), and its balance read: nobody else can change it before this
        -- transaction ends, so the batch is worked out on these numbers and each account updated once after.
        SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}'), coalesce(array_agg(l.balance_minor ORDER BY l.id), '{}')
          INTO a_id, a_balance
          FROM (SELECT a.id, a.balance_minor FROM ledger_accounts a WHERE a.id = ANY(d_id)
                 ORDER BY a.id FOR NO KEY UPDATE) AS l;
        a_start := a_balance;

        -- The keys already used, looked up once the accounts are locked: a concurrent writer of the same
        -- transfer held them, so it has committed by now and its transaction is seen here.
        SELECT array_agg((SELECT t.id FROM ledger_transactions t WHERE t.idempotency_key = k.key) ORDER BY k.ord)
          INTO v_prev
          FROM unnest(p_keys) WITH ORDINALITY AS k(key, ord);

        FOR i IN 1 .. v_n LOOP
            v_state[i] := NULL;
            v_txn[i] := NULL;
            v_detail[i] := NULL;
            IF v_prev[i] IS NOT NULL THEN
                SELECT t.fingerprint INTO v_fp FROM ledger_transactions t WHERE t.id = v_prev[i];
                IF v_fp IS DISTINCT FROM p_fingerprints[i] THEN
                    v_state[i] := 'LDG02';
                ELSE
                    v_state[i] := 'replay';
                    v_txn[i] := v_prev[i];
                END IF;
            ELSE
                v_pos := array_position(v_keys, p_keys[i]);
                IF v_pos IS NOT NULL THEN
                    IF v_fps[v_pos] IS DISTINCT FROM p_fingerprints[i] THEN
                        v_state[i] := 'LDG02';
                    ELSE
                        v_state[i] := 'replay';
                        v_txn[i] := v_written[v_pos];
                    END IF;
                ELSE
                    -- The conditional updates of store.post(), in ascending id order, on the locked balances.
                    v_start := v_p;
                    v_ok := true;
                    WHILE v_p <= v_len AND d_t[v_p] = i LOOP
                        v_k := array_position(a_id, d_id[v_p]);
                        IF a_balance[v_k] + d_delta[v_p] < 0 THEN
                            v_ok := false;
                            v_detail[i] := d_code[v_p];
                            EXIT;
                        END IF;
                        a_balance[v_k] := a_balance[v_k] + d_delta[v_p];
                        v_p := v_p + 1;
                    END LOOP;
                    IF v_ok THEN
                        v_state[i] := 'write';
                        v_txn[i] := p_ids[i];
                        v_keys := v_keys || p_keys[i];
                        v_fps := v_fps || p_fingerprints[i];
                        v_written := v_written || p_ids[i];
                    ELSE
                        -- Refused: whatever this transfer had moved is taken back; nothing of it is written.
                        FOR j IN v_start .. v_p - 1 LOOP
                            v_k := array_position(a_id, d_id[j]);
                            a_balance[v_k] := a_balance[v_k] - d_delta[j];
                        END LOOP;
                        v_state[i] := 'LDG01';
                    END IF;
                END IF;
            END IF;
            WHILE v_p <= v_len AND d_t[v_p] <= i LOOP
                v_p := v_p + 1;
            END LOOP;
        END LOOP;

        FOR k IN 1 .. coalesce(array_length(a_id, 1), 0) LOOP
            IF a_balance[k] <> a_start[k] THEN
                c_id := c_id || a_id[k];
                c_balance := c_balance || a_balance[k];
            END IF;
        END LOOP;
        UPDATE ledger_accounts a SET balance_minor = c_balance[array_position(c_id, a.id)] WHERE a.id = ANY(c_id);

        INSERT INTO ledger_postings (transaction_id, account_id, amount_minor, currency)
        SELECT p_ids[u.t], u.id, u.amount, u.currency
          FROM unnest(v_tix, v_ids, p_amounts, p_currencies) WITH ORDINALITY AS u(t, id, amount, currency, ord)
         WHERE v_state[u.t] = 'write'
         ORDER BY u.ord;
        INSERT INTO ledger_transactions (id, idempotency_key, kind, memo, fingerprint, business_id, reference, created_at)
        SELECT p_ids[g.t], p_keys[g.t], p_kinds[g.t], p_memos[g.t], p_fingerprints[g.t], p_business_ids[g.t],
               p_references[g.t], p_created_at[g.t]
          FROM generate_series(1, v_n) AS g(t)
         WHERE v_state[g.t] = 'write'
         ORDER BY g.t;
    EXCEPTION WHEN OTHERS THEN
        -- A key written by a concurrent transaction since it was looked up (unique violation), a deadlock with
        -- a transaction outside this batch, a broken rule: all of the above is undone; one by one instead.
        RETURN QUERY SELECT * FROM """ + CALL_EACH + """;
        RETURN;
    END;

    RETURN QUERY
    SELECT g.t, v_txn[g.t], CASE WHEN v_state[g.t] IN ('write', 'replay') THEN v_state[g.t] = 'replay' END,
           CASE WHEN v_state[g.t] IN ('LDG01', 'LDG02') THEN v_state[g.t] END,
           CASE v_state[g.t]
               WHEN 'LDG01' THEN 'the wallet does not hold enough for this (' || v_detail[g.t] || ')'
               WHEN 'LDG02' THEN format('idempotency key %s already moved different money', p_keys[g.t])
           END,
           true
      FROM generate_series(1, v_n) AS g(t)
     ORDER BY g.t;
END
$fn$
"""

DROP = [
    "DROP FUNCTION IF EXISTS ledger_post_batch(" + ARGS + ")",
    "DROP FUNCTION IF EXISTS ledger_post_each(" + ARGS + ")",
    "DROP FUNCTION IF EXISTS ledger_post(text, text, text, text, text, text, text, timestamptz, text[], text[], "
    "bigint[])",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(LEDGER_POST)
    op.execute(LEDGER_POST_EACH)
    op.execute(LEDGER_POST_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in DROP:
        op.execute(statement)
