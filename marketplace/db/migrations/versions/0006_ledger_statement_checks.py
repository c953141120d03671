"""ledger: the balance and closed-transaction checks once per statement; a leaner ledger_post_batch (PostgreSQL)

Revision ID: 0006_ledger_statement_checks
Revises: 0005_fraud
Create Date: 2026-11-26 03:00:00.000000

The ledger's rules stay what 0002 made them, enforced by the database whatever code writes: a transaction row
is accepted only if its postings (two or more) sum to zero per currency, and no posting may be added to a
transaction already written. 0002 checked them with row triggers, a PL/pgSQL call and a query for every posting
and for every transaction row; a batch of transfers (ledger_post_batch, one INSERT of all its postings and one
of all its transaction rows) paid that once per row. Here they are statement triggers over the statement's
transition table (REFERENCING NEW TABLE): one call per INSERT, one index probe per new transaction. They run
at the end of the same statement, so the INSERT fails as before, with the same SQLSTATE (check_violation).

ledger_post_batch keeps its signature, its outcomes and its order of work (see 0004) and does the same with
fewer statements: the batch's shape checked and its postings numbered in one query; keys already used, and the
first transfer of the batch with each key, read in one query; each locked account's place found once rather
than searched for per transfer; keys written earlier in the batch found by index rather than by a search.

SQLite keeps 0002's triggers (its writers post one transfer at a time).
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = '0006_ledger_statement_checks'
down_revision: str | None = '0005_fraud'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _0004() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_ledger_0004", Path(__file__).with_name("0004_ledger_function.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECKS = [
    "DROP TRIGGER IF EXISTS ledger_postings_closed ON ledger_postings",
    "DROP TRIGGER IF EXISTS ledger_transactions_balanced ON ledger_transactions",
    """CREATE FUNCTION ledger_postings_closed_check() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      v_id text;
    BEGIN
      SELECT n.transaction_id INTO v_id
        FROM (SELECT DISTINCT transaction_id FROM new_postings) AS n
       WHERE EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = n.transaction_id)
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % already written', v_id USING ERRCODE = 'check_violation';
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER ledger_postings_closed AFTER INSERT ON ledger_postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_closed_check()""",
    # One probe of the postings' transaction_id index per new transaction (a lateral join, so that the plan
    # cannot turn into a scan of all postings whatever the transition table's size).
    """CREATE FUNCTION ledger_transactions_balanced_check() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      v_id text;
    BEGIN
      SELECT n.id INTO v_id
        FROM new_transactions AS n
        LEFT JOIN LATERAL (
             SELECT sum(g.postings) AS postings, bool_or(g.total <> 0) AS unbalanced
               FROM (SELECT count(*) AS postings, sum(p.amount_minor) AS total
                       FROM ledger_postings p WHERE p.transaction_id = n.id
                      GROUP BY p.currency) AS g) AS s ON true
       WHERE coalesce(s.postings, 0) < 2 OR s.unbalanced
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'unbalanced ledger transaction %', v_id USING ERRCODE = 'check_violation';
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    REFERENCING NEW TABLE AS new_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_transactions_balanced_check()""",
]

CHECKS_DOWN = [
    "DROP TRIGGER IF EXISTS ledger_postings_closed ON ledger_postings",
    "DROP TRIGGER IF EXISTS ledger_transactions_balanced ON ledger_transactions",
    "DROP FUNCTION IF EXISTS ledger_postings_closed_check()",
    "DROP FUNCTION IF EXISTS ledger_transactions_balanced_check()",
    # 0002's row triggers; their functions were left in place.
    """CREATE TRIGGER ledger_transactions_balanced BEFORE INSERT ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balanced()""",
    """CREATE TRIGGER ledger_postings_closed BEFORE INSERT ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_closed()""",
]


# @ARGS@ and @CALL_EACH@ are 0004's argument list and its call of ledger_post_each (unchanged here).
LEDGER_POST_BATCH = """
CREATE OR REPLACE FUNCTION ledger_post_batch(@ARGS@)
RETURNS TABLE (out_ord integer, out_transaction_id text, out_replayed boolean, out_sqlstate text, out_message text,
                out_batched boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_n integer := coalesce(array_length(p_ids, 1), 0);
    v_np integer := coalesce(array_length(p_codes, 1), 0);
    v_tix integer[];                -- per posting: the index of its transfer
    v_ids integer[];                -- per posting: the account's id
    v_prev text[];                  -- per transfer: the transaction already written with its key, its fingerprint
    v_prev_fp text[];
    v_first integer[];              -- per transfer: the first transfer of the batch with the same key
    v_writer integer[];             -- per first transfer of a key: the transfer of the batch that wrote the key
    v_state text[];                 -- per transfer: 'write', 'replay', 'LDG01' or 'LDG02'
    v_txn text[];                   -- per transfer: the transaction id answered
    v_detail text[];                -- per transfer: the refused account
    d_t integer[];                  -- business balance changes: transfer, account, its place in a_id, delta,
    d_id integer[];                 -- code; ordered by transfer, then ascending account id
    d_k integer[];
    d_delta bigint[];
    d_code text[];
    v_len integer;
    a_id integer[];                 -- the batch's business accounts, ascending, and their balances
    a_balance bigint[];
    a_start bigint[];
    c_id integer[];                 -- the accounts whose balance changed, and the new balance
    c_balance bigint[];
    v_k integer;
    v_w integer;
    v_p integer := 1;
    v_start integer;
    v_ok boolean;
    v_rows integer;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    -- The arrays' shape; and per posting, the index of its transfer.
    SELECT array_agg(c.t ORDER BY c.t) INTO v_tix
      FROM unnest(p_counts) WITH ORDINALITY AS c(n, t), generate_series(1, c.n);
    IF coalesce(array_length(p_counts, 1), 0) <> v_n OR NOT coalesce(2 <= ALL(p_counts), false)
       OR coalesce(array_length(v_tix, 1), 0) <> v_np
       OR coalesce(array_length(p_keys, 1), 0) <> v_n OR coalesce(array_length(p_kinds, 1), 0) <> v_n
       OR coalesce(array_length(p_memos, 1), 0) <> v_n OR coalesce(array_length(p_fingerprints, 1), 0) <> v_n
       OR coalesce(array_length(p_business_ids, 1), 0) <> v_n OR coalesce(array_length(p_references, 1), 0) <> v_n
       OR coalesce(array_length(p_created_at, 1), 0) <> v_n
       OR coalesce(array_length(p_currencies, 1), 0) <> v_np OR coalesce(array_length(p_amounts, 1), 0) <> v_np THEN
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
        RETURN QUERY SELECT * FROM @CALL_EACH@;
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
        -- Each balance change's place among the locked accounts, found once.
        SELECT array_agg(array_position(a_id, x.id) ORDER BY x.o) INTO d_k
          FROM unnest(d_id) WITH ORDINALITY AS x(id, o);

        -- The keys already used, looked up once the accounts are locked: a concurrent writer of the same
        -- transfer held them, so it has committed by now and its transaction is seen here.
        SELECT array_agg(x.id ORDER BY x.ord), array_agg(x.fingerprint ORDER BY x.ord),
               array_agg(x.first ORDER BY x.ord)
          INTO v_prev, v_prev_fp, v_first
          FROM (SELECT k.ord, t.id, t.fingerprint, min(k.ord) OVER (PARTITION BY k.key) AS first
                  FROM unnest(p_keys) WITH ORDINALITY AS k(key, ord)
                  LEFT JOIN LATERAL (SELECT t.id, t.fingerprint FROM ledger_transactions t
                                      WHERE t.idempotency_key = k.key) AS t ON true) AS x;

        v_writer := array_fill(NULL::integer, ARRAY[v_n]);
        v_state := array_fill(NULL::text, ARRAY[v_n]);
        v_txn := array_fill(NULL::text, ARRAY[v_n]);
        v_detail := array_fill(NULL::text, ARRAY[v_n]);
        FOR i IN 1 .. v_n LOOP
            v_w := v_writer[v_first[i]];
            IF v_prev[i] IS NOT NULL THEN
                IF v_prev_fp[i] IS DISTINCT FROM p_fingerprints[i] THEN
                    v_state[i] := 'LDG02';
                ELSE
                    v_state[i] := 'replay';
                    v_txn[i] := v_prev[i];
                END IF;
            ELSIF v_w IS NOT NULL THEN
                -- Written earlier in this batch.
                IF p_fingerprints[v_w] IS DISTINCT FROM p_fingerprints[i] THEN
                    v_state[i] := 'LDG02';
                ELSE
                    v_state[i] := 'replay';
                    v_txn[i] := p_ids[v_w];
                END IF;
            ELSE
                -- The conditional updates of store.post(), in ascending id order, on the locked balances.
                v_start := v_p;
                v_ok := true;
                WHILE v_p <= v_len AND d_t[v_p] = i LOOP
                    v_k := d_k[v_p];
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
                    v_writer[v_first[i]] := i;
                ELSE
                    -- Refused: whatever this transfer had moved is taken back; nothing of it is written.
                    FOR j IN v_start .. v_p - 1 LOOP
                        v_k := d_k[j];
                        a_balance[v_k] := a_balance[v_k] - d_delta[j];
                    END LOOP;
                    v_state[i] := 'LDG01';
                END IF;
            END IF;
            WHILE v_p <= v_len AND d_t[v_p] <= i LOOP
                v_p := v_p + 1;
            END LOOP;
        END LOOP;

        SELECT array_agg(b.id), array_agg(b.balance) INTO c_id, c_balance
          FROM unnest(a_id, a_balance, a_start) AS b(id, balance, start)
         WHERE b.balance <> b.start;
        -- Worked out on locked rows; the condition is the database's own word on it all the same (should it ever
        -- refuse, the batch is undone and written one by one).
        UPDATE ledger_accounts a SET balance_minor = c_balance[array_position(c_id, a.id)]
         WHERE a.id = ANY(c_id) AND (c_balance[array_position(c_id, a.id)] >= 0 OR NOT a.non_negative);
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        IF v_rows <> coalesce(array_length(c_id, 1), 0) THEN
            RAISE EXCEPTION 'ledger_post_batch: a balance would fall below zero' USING ERRCODE = 'LDG01';
        END IF;

        INSERT INTO ledger_postings (transaction_id, account_id, amount_minor, currency)
        SELECT p_ids[u.t], u.id, u.amount, u.currency
          FROM unnest(v_tix, v_ids, p_amounts, p_currencies) WITH ORDINALITY AS u(t, id, amount, currency, ord)
         WHERE v_state[u.t] = 'write'
         ORDER BY u.ord;
        INSERT INTO ledger_transactions
               (id, idempotency_key, kind, memo, fingerprint, business_id, reference, created_at)
        SELECT p_ids[g.t], p_keys[g.t], p_kinds[g.t], p_memos[g.t], p_fingerprints[g.t], p_business_ids[g.t],
               p_references[g.t], p_created_at[g.t]
          FROM generate_series(1, v_n) AS g(t)
         WHERE v_state[g.t] = 'write'
         ORDER BY g.t;
    EXCEPTION WHEN OTHERS THEN
        -- A key written by a concurrent transaction since it was looked up (unique violation), a deadlock with
        -- a transaction outside this batch, a broken rule: all of the above is undone; one by one instead.
        RETURN QUERY SELECT * FROM @CALL_EACH@;
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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in CHECKS:
        op.execute(statement)
    base = _0004()
    op.execute(LEDGER_POST_BATCH.replace("@ARGS@", base.ARGS).replace("@CALL_EACH@", base.CALL_EACH))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in CHECKS_DOWN:
        op.execute(statement)
    base = _0004()
    op.execute(base.LEDGER_POST_BATCH.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
