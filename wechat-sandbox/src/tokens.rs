//! access_token (cgi-bin/token, cgi-bin/stable_token) and the wx_card ticket, with WeChat's
//! lifetimes, overlap rules, quotas and error codes.

use serde_json::json;
use wechat::rulebook;

use crate::world::{ALNUM, IssuedToken, Ticket, TokenKind, World, WxError, WxResult, json_object, random_string};

/// Real tokens are long opaque strings; ours are 136 characters so clients that truncate fail.
const TOKEN_LEN: usize = 136;
/// A replaced token stays valid this long (cgi-bin/token overlap; stable_token early renewal).
const OVERLAP_SECS: i64 = 300;
const FORCE_REFRESH_PER_DAY: usize = 20;
const FORCE_REFRESH_SPACING_SECS: i64 = 30;

impl World {
    /// Checks appid and secret of a token fetch.
    fn check_credentials(&self, appid: &str, secret: &str) -> Result<(), WxError> {
        let account = self.accounts.get(appid).ok_or_else(|| WxError::from(&rulebook::INVALID_APPID))?;
        if account.secret.expose() != secret {
            return Err(WxError::from(&rulebook::INVALID_APPSECRET));
        }
        Ok(())
    }

    /// Counts a call against the account's daily quota of `endpoint`: 45009 beyond it.
    pub fn take_quota(&mut self, appid: &str, endpoint: &'static str, now: i64) -> Result<(), WxError> {
        let Some(limit) = self.accounts.get(appid).and_then(|a| a.quota(endpoint)) else {
            return Ok(());
        };
        let used = self.daily_calls.entry((appid.to_owned(), endpoint, now.div_euclid(86_400))).or_default();
        if *used >= limit {
            return Err(WxError::from(&rulebook::DAILY_QUOTA));
        }
        *used += 1;
        Ok(())
    }

    fn mint_token(&mut self, appid: &str, kind: TokenKind, now: i64) -> (String, i64) {
        let lifetime = self.accounts[appid].token_lifetime_secs;
        let value = random_string(ALNUM, TOKEN_LEN);
        self.tokens.insert(
            value.clone(),
            IssuedToken { appid: appid.to_owned(), kind, expires_at: now + lifetime, replaced_until: None },
        );
        (value, lifetime)
    }

    /// `GET cgi-bin/token`: a new token each time; older ones of the account stay valid for
    /// 5 more minutes.
    pub fn token(&mut self, grant_type: &str, appid: &str, secret: &str, now: i64) -> WxResult {
        if grant_type != "client_credential" {
            return Err(WxError::from(&rulebook::INVALID_GRANT_TYPE));
        }
        self.check_credentials(appid, secret)?;
        self.take_quota(appid, "token", now)?;
        for token in self.tokens.values_mut().filter(|t| t.appid == appid && t.kind == TokenKind::Basic) {
            let until = token.replaced_until.unwrap_or(i64::MAX).min(now + OVERLAP_SECS);
            token.replaced_until = Some(until);
        }
        let (value, lifetime) = self.mint_token(appid, TokenKind::Basic, now);
        Ok(json_object(json!({"access_token": value, "expires_in": lifetime})))
    }

    /// `POST cgi-bin/stable_token`: the same token while more than 5 minutes remain; a new one
    /// within the last 5 minutes (the old one stays valid until it expires); force_refresh
    /// replaces it at once, at most 20 times a day and 30 s apart.
    pub fn stable_token(&mut self, grant_type: &str, appid: &str, secret: &str, force: bool, now: i64) -> WxResult {
        if grant_type != "client_credential" {
            return Err(WxError::from(&rulebook::INVALID_GRANT_TYPE));
        }
        self.check_credentials(appid, secret)?;
        self.take_quota(appid, "stable_token", now)?;
        let current = self.stable_tokens.get(appid).cloned().filter(|value| self.token_state(value, now).is_ok());
        if force {
            let log = self.forced_refreshes.entry(appid.to_owned()).or_default();
            log.retain(|at| now.div_euclid(86_400) == at.div_euclid(86_400));
            if log.len() >= FORCE_REFRESH_PER_DAY {
                return Err(WxError::from(&rulebook::DAILY_QUOTA));
            }
            if log.last().is_some_and(|last| now - last < FORCE_REFRESH_SPACING_SECS) {
                return Err(WxError::detailed(&rulebook::MINUTE_QUOTA, "force_refresh must be 30 seconds apart"));
            }
            log.push(now);
            if let Some(old) = &current {
                self.tokens.get_mut(old).expect("current token exists").replaced_until = Some(now);
            }
        } else if let Some(value) = &current {
            let remaining = self.tokens[value].expires_at - now;
            if remaining > OVERLAP_SECS {
                return Ok(json_object(json!({"access_token": value, "expires_in": remaining})));
            }
        }
        let (value, lifetime) = self.mint_token(appid, TokenKind::Stable, now);
        self.stable_tokens.insert(appid.to_owned(), value.clone());
        Ok(json_object(json!({"access_token": value, "expires_in": lifetime})))
    }

    /// The account an access token belongs to, whatever its state (for statistics).
    pub fn token_owner(&self, value: &str) -> Option<&str> {
        self.tokens.get(value).map(|t| t.appid.as_str())
    }

    /// Validates an access token: missing, malformed, unknown or replaced, expired (each its
    /// own errcode). Returns its account.
    pub fn token_state(&self, value: &str, now: i64) -> Result<String, WxError> {
        if value.is_empty() {
            return Err(WxError::from(&rulebook::ACCESS_TOKEN_MISSING));
        }
        let Some(token) = self.tokens.get(value) else {
            if value.len() != TOKEN_LEN || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(WxError::from(&rulebook::INVALID_ACCESS_TOKEN));
            }
            return Err(WxError::from(&rulebook::INVALID_CREDENTIAL));
        };
        if token.expires_at <= now {
            return Err(WxError::from(&rulebook::ACCESS_TOKEN_EXPIRED));
        }
        if token.replaced_until.is_some_and(|until| until <= now) {
            return Err(WxError::from(&rulebook::INVALID_CREDENTIAL));
        }
        Ok(token.appid.clone())
    }

    /// Invalidates every token of an account at once (control API), as when another party
    /// fetched a token with the same secret.
    pub fn invalidate_tokens(&mut self, appid: &str, now: i64) -> usize {
        let mut count = 0;
        for token in self.tokens.values_mut().filter(|t| t.appid == appid) {
            if token.replaced_until.is_none_or(|until| until > now) {
                token.replaced_until = Some(now);
                count += 1;
            }
        }
        count
    }

    /// `GET cgi-bin/ticket/getticket?type=wx_card`: the same ticket while valid.
    pub fn card_ticket(&mut self, appid: &str, ticket_type: &str, now: i64) -> WxResult {
        if ticket_type != "wx_card" {
            return Err(WxError::detailed(&rulebook::INVALID_ARGS, "type must be wx_card"));
        }
        self.take_quota(appid, "getticket", now)?;
        let lifetime = self.accounts[appid].token_lifetime_secs;
        let ticket = match self.tickets.get(appid).filter(|t| t.expires_at > now) {
            Some(ticket) => ticket.clone(),
            None => {
                let ticket = Ticket { value: random_string(ALNUM, 86), expires_at: now + lifetime };
                self.tickets.insert(appid.to_owned(), ticket.clone());
                ticket
            }
        };
        Ok(json_object(
            json!({"errcode": 0, "errmsg": "ok", "ticket": ticket.value, "expires_in": ticket.expires_at - now}),
        ))
    }

    /// The account's current wx_card ticket, if one is valid.
    pub fn current_ticket(&self, appid: &str, now: i64) -> Option<&str> {
        self.tickets.get(appid).filter(|t| t.expires_at > now).map(|t| t.value.as_str())
    }
}
