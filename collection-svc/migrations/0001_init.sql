-- collection-svc schema (SQLite and PostgreSQL: BLOB becomes BYTEA). Times are Unix milliseconds.

-- Values learnt once: the bureau's s_pappid.
CREATE TABLE setting (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One authorization per (unit, order): the link, the payer's answer and the bill's progress.
CREATE TABLE payer_authorization (
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
    authorized_appid TEXT NOT NULL,
    source TEXT NOT NULL,
    money BIGINT NOT NULL,
    bill TEXT NOT NULL,
    pdf_sha256 TEXT,
    redirect_url TEXT,
        request_id TEXT,
    -- The W3C trace this order belongs to (collection-svc and bureau-svc log it).
    trace_id TEXT NOT NULL,
    s_pappid TEXT NOT NULL,
    auth_url TEXT NOT NULL,
    auth_url_expires_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    openid TEXT,
    authorize_time BIGINT NOT NULL DEFAULT 0,
    card_id TEXT,
    card_code TEXT,
    failure_reason TEXT,
    failure_message TEXT,
    failure_errcode BIGINT NOT NULL DEFAULT 0,
    failure_errmsg TEXT,
    failure_rid TEXT,
    failed_at BIGINT NOT NULL DEFAULT 0,
    issue_attempts BIGINT NOT NULL DEFAULT 0,
    reject_reason TEXT,
    wechat_invoice_status TEXT,
    last_sync_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (unit_appid, order_id)
);
CREATE UNIQUE INDEX payer_authorization_request_id ON payer_authorization (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX payer_authorization_newest ON payer_authorization (created_at DESC, unit_appid, order_id);
CREATE INDEX payer_authorization_pending ON payer_authorization (last_sync_at) WHERE state = 'pending';

CREATE TABLE payer_authorization_pdf (
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
    pdf BLOB NOT NULL,
    PRIMARY KEY (unit_appid, order_id)
);

-- The transactional outbox: an IssueBill (or a progress poll) still to deliver to the bureau.
CREATE TABLE outbox (
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at BIGINT NOT NULL,
    lease_holder TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (unit_appid, order_id)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

-- Every verified push, once: the key deduplicates WeChat's retries and later replays. Pushes
-- for unknown orders are kept here for inspection.
CREATE TABLE push_event (
    dedupe_key TEXT PRIMARY KEY,
    unit_appid TEXT NOT NULL,
    event TEXT NOT NULL,
    order_id TEXT,
    openid TEXT,
    authorize_appid TEXT,
    create_time BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
