-- bureau-svc schema (SQLite and PostgreSQL: BLOB becomes BYTEA). Times are Unix milliseconds unless named *_secs.

-- The bureau's s_pappid, obtained once through seturl.
CREATE TABLE sp_app (
    bureau_appid TEXT PRIMARY KEY,
    s_pappid TEXT NOT NULL,
    invoice_url TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Collection units the bureau issues for, with their bill template (card_id) once created.
-- The claim lets one replica at a time create the template.
CREATE TABLE unit (
    appid TEXT PRIMARY KEY,
    payee TEXT NOT NULL,
    logo_url TEXT NOT NULL,
    card_id TEXT,
    template_created_at BIGINT NOT NULL DEFAULT 0,
    claim_holder TEXT,
    claim_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One bill per (unit, order), advancing accepted -> pdf_uploaded -> pdf_checked -> inserted | failed.
CREATE TABLE bill (
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
        authorized_appid TEXT NOT NULL,
    request_id TEXT,
    -- The W3C trace of the order, from collection-svc's traceparent (logged with every step).
    trace_id TEXT NOT NULL,
    state TEXT NOT NULL,
    fee BIGINT NOT NULL,
    payer_title TEXT NOT NULL,
    billing_no TEXT NOT NULL,
    billing_code TEXT NOT NULL,
    billing_time BIGINT NOT NULL,
    items TEXT NOT NULL,
    remarks TEXT NOT NULL,
    pdf_sha256 TEXT NOT NULL,
    pdf_size BIGINT NOT NULL,
    pdf_origin TEXT NOT NULL,
    card_id TEXT,
    s_media_id TEXT,
    media_expires_at BIGINT NOT NULL DEFAULT 0,
    -- 1 from just before an insertbill is sent until its answer is known.
    insert_pending BIGINT NOT NULL DEFAULT 0,
    card_code TEXT,
    openid TEXT,
    reimburse_status TEXT,
    reimburse_updated_secs BIGINT NOT NULL DEFAULT 0,
    failure_reason TEXT,
    failure_message TEXT,
    failure_errcode BIGINT NOT NULL DEFAULT 0,
    failure_errmsg TEXT,
    failure_rid TEXT,
    failed_at BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    never_authorized_since BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_holder TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    inserted_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_appid, order_id)
);
CREATE UNIQUE INDEX bill_request_id ON bill (request_id) WHERE request_id IS NOT NULL;
CREATE UNIQUE INDEX bill_billing_number ON bill (billing_no, billing_code);
CREATE UNIQUE INDEX bill_card ON bill (card_id, card_code) WHERE card_code IS NOT NULL;
CREATE INDEX bill_due ON bill (next_attempt_at) WHERE state IN ('accepted', 'pdf_uploaded', 'pdf_checked');
CREATE INDEX bill_newest ON bill (created_at DESC, unit_appid, order_id);

-- The bill PDFs, apart so that listing bills never reads them.
CREATE TABLE bill_pdf (
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
    pdf BLOB NOT NULL,
    PRIMARY KEY (unit_appid, order_id)
);

-- Every verified push, once (the key deduplicates WeChat's retries and replays).
CREATE TABLE callback_event (
    dedupe_key TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    card_id TEXT,
    code TEXT,
    status TEXT,
    openid TEXT,
    create_time BIGINT NOT NULL,
    matched BIGINT NOT NULL,
    body TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
