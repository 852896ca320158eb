-- Every change of an authorization's state, for WatchAuthorizations: written by triggers in
-- the transaction that makes the change, so that no code path can forget one. A stream reads
-- the rows after its position. On SQLite write transactions never overlap, so `seq` grows in
-- commit order and `txid` stays 0; PostgreSQL has its own form of this migration.
CREATE TABLE authorization_change (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txid BIGINT NOT NULL DEFAULT 0,
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

CREATE TRIGGER authorization_created AFTER INSERT ON payer_authorization
BEGIN
    INSERT INTO authorization_change (unit_appid, order_id, state, card_id, card_code, failure_reason, failure_message,
        failure_errcode, failure_errmsg, failure_rid, failed_at, changed_at)
    VALUES (NEW.unit_appid, NEW.order_id, NEW.state, NEW.card_id, NEW.card_code, NEW.failure_reason,
        NEW.failure_message, NEW.failure_errcode, NEW.failure_errmsg, NEW.failure_rid, NEW.failed_at, NEW.updated_at);
END;

CREATE TRIGGER authorization_state_changed AFTER UPDATE OF state ON payer_authorization
WHEN NEW.state <> OLD.state
BEGIN
    INSERT INTO authorization_change (unit_appid, order_id, state, card_id, card_code, failure_reason, failure_message,
        failure_errcode, failure_errmsg, failure_rid, failed_at, changed_at)
    VALUES (NEW.unit_appid, NEW.order_id, NEW.state, NEW.card_id, NEW.card_code, NEW.failure_reason,
        NEW.failure_message, NEW.failure_errcode, NEW.failure_errmsg, NEW.failure_rid, NEW.failed_at, NEW.updated_at);
END;
