-- Access tokens and wx_card tickets shared by the replicas of a service, with the claim that
-- lets one replica at a time refresh a credential. Times are Unix seconds.
CREATE TABLE wechat_credential (
    kind TEXT NOT NULL,
    appid TEXT NOT NULL,
    value TEXT,
    expires_at BIGINT NOT NULL DEFAULT 0,
    refresh_at BIGINT NOT NULL DEFAULT 0,
    claim_holder TEXT,
    claim_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, appid)
);
