-- PostgreSQL's form of 0005_authorization_changes.sql. Transactions overlap here, so a row's
-- `seq` does not say when it became visible; `txid` (the writing transaction's id) does: a
-- reader takes only rows of transactions older than every transaction still running
-- (pg_snapshot_xmin), in (txid, seq) order, so a later commit never lands behind a position
-- already read.
CREATE TABLE authorization_change (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
    state TEXT NOT NULL,
    card_id TEXT,
    card_code TEXT,
    failure_reason TEXT,
    failure_message TEXT,
    failure_errcode BIGINT NOT NULL DEFAULT 0,
    failure_errmsg TEXT,
    failure_rid TEXT,
    failed_at BIGINT NOT NULL DEFAULT 0,
    changed_at BIGINT NOT NULL
);
CREATE INDEX authorization_change_position ON authorization_change (unit_appid, txid, seq);

-- Changes older than `[authorization] watch_retention_hours` are deleted; this row says where
-- the deleted part ends, so that a resume token from before it is refused instead of silently
-- skipping what was deleted.
CREATE INDEX authorization_change_time ON authorization_change (changed_at);
CREATE TABLE authorization_change_pruned (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    txid BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
INSERT INTO authorization_change_pruned (id, txid, seq) VALUES (1, 0, 0);

CREATE FUNCTION record_authorization_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO authorization_change (unit_appid, order_id, state, card_id, card_code, failure_reason, failure_message,
        failure_errcode, failure_errmsg, failure_rid, failed_at, changed_at)
    VALUES (NEW.unit_appid, NEW.order_id, NEW.state, NEW.card_id, NEW.card_code, NEW.failure_reason,
        NEW.failure_message, NEW.failure_errcode, NEW.failure_errmsg, NEW.failure_rid, NEW.failed_at, NEW.updated_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER authorization_created AFTER INSERT ON payer_authorization
    FOR EACH ROW EXECUTE FUNCTION record_authorization_change();
CREATE TRIGGER authorization_state_changed AFTER UPDATE OF state ON payer_authorization
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state) EXECUTE FUNCTION record_authorization_change();
