//! The preflight checklist both services print (`bureau-svc preflight`, `collection-svc
//! preflight`): each check of a real configuration against WeChat, passed (✓) or failed (✗)
//! with what to do about it. Checks make no change a user would regret: tokens come from the
//! shared store when the service has one, and only idempotent or read-only WeChat calls are made.

use std::fmt::Write as _;
use std::time::Duration;

use wechat::{CallError, ErrorKind, WechatError};

use crate::db::{DatabaseConfig, Db, Migration};

/// One line of the checklist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub passed: bool,
    /// What was checked, e.g. `access token of wxb0000000000000b1`.
    pub what: String,
    /// What was found.
    pub detail: String,
    /// What to do, for a failed check.
    pub fix: Option<String>,
}

/// The checks of one run, in order.
#[derive(Clone, Debug, Default)]
pub struct Checklist {
    pub checks: Vec<Check>,
}

impl Checklist {
    pub fn pass(&mut self, what: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { passed: true, what: what.into(), detail: detail.into(), fix: None });
    }

    pub fn fail(&mut self, what: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check { passed: false, what: what.into(), detail: detail.into(), fix: Some(fix.into()) });
    }

    /// A failed WeChat call: its error, and the fix its kind calls for.
    pub fn fail_call(&mut self, what: impl Into<String>, appid: &str, error: &CallError) {
        self.fail(what, error.to_string(), fix_for(appid, error));
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.passed)
    }

    /// The check named `what`, for tests.
    pub fn find(&self, what: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.what == what)
    }

    /// The checklist as printed: `✓ what: detail`, `✗ what: detail` and an indented fix.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for check in &self.checks {
            let mark = if check.passed { '✓' } else { '✗' };
            let _ = writeln!(text, "{mark} {}: {}", check.what, check.detail);
            if let Some(fix) = &check.fix {
                let _ = writeln!(text, "    fix: {fix}");
            }
        }
        let failed = self.checks.iter().filter(|check| !check.passed).count();
        let _ = match failed {
            0 => writeln!(text, "all {} checks passed", self.checks.len()),
            n => writeln!(text, "{n} of {} checks failed", self.checks.len()),
        };
        text
    }
}

/// The service's database: connected and migrated within 10 s (check `database`).
pub async fn check_database(
    list: &mut Checklist,
    config: &DatabaseConfig,
    schema: &str,
    migrations: &[&[Migration]],
) -> Option<Db> {
    let connect = async {
        let db = Db::connect(config, schema).await.map_err(|e| e.to_string())?;
        let schema = config.schema.clone().unwrap_or_else(|| schema.to_owned());
        db.migrate(migrations, &schema).await.map_err(|e| e.to_string())?;
        Ok::<Db, String>(db)
    };
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(db)) => {
            list.pass("database", "answers and is migrated");
            Some(db)
        }
        Ok(Err(error)) => {
            list.fail("database", error, "check [database] url, and that the database runs and accepts this user");
            None
        }
        Err(_) => {
            list.fail("database", "no answer within 10 s", "check [database] url and the network to the database");
            None
        }
    }
}

/// What to do about a WeChat call that failed, by the kind of its error.
pub fn fix_for(appid: &str, error: &CallError) -> String {
    let wechat = match error {
        CallError::Wechat(wechat) => wechat,
        CallError::UnknownAccount(appid) => return format!("configure the appsecret of {appid}"),
        CallError::Store(_) => return "check that the service's database answers".to_owned(),
    };
    match wechat.kind() {
        ErrorKind::IpNotWhitelisted => format!(
            "add {} to the IP whitelist of account {appid} at WeChat (mp.weixin.qq.com: 设置与开发 → 基本配置 → IP白名单)",
            egress_ip(wechat).map_or_else(|| "this machine's egress IP".to_owned(), |ip| format!("egress IP {ip}"))
        ),
        ErrorKind::CredentialsRejected | ErrorKind::TokenRejected => format!(
            "check the appid {appid} and its appsecret (mp.weixin.qq.com: 设置与开发 → 基本配置; a reset secret must be \
             configured again)"
        ),
        ErrorKind::PermissionMissing => format!(
            "account {appid} lacks the invoice permission: apply for it as docs/onboarding.md describes"
        ),
        ErrorKind::DailyQuota | ErrorKind::MinuteQuota | ErrorKind::Busy => {
            "WeChat refused for now (busy or quota): run the preflight again later".to_owned()
        }
        ErrorKind::Unreachable | ErrorKind::MalformedResponse => {
            "check outbound HTTPS to the WeChat API ([wechat] base_url) and the [wechat] proxy, if the network needs one"
                .to_owned()
        }
        _ => "see WeChat's errcode and errmsg above, and docs/onboarding.md".to_owned(),
    }
}

/// The caller's IP WeChat names in a whitelist refusal (`invalid ip 1.2.3.4 ipv6 ...`).
fn egress_ip(error: &WechatError) -> Option<&str> {
    let WechatError::Api { errmsg, .. } = error else { return None };
    let rest = errmsg.split_once("invalid ip ")?.1;
    let ip = rest.split(|c: char| c.is_whitespace() || c == ',').next()?;
    (!ip.is_empty() && ip.parse::<std::net::IpAddr>().is_ok()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use wechat::{Endpoint, rulebook};

    use super::*;

    fn api(rule: &rulebook::Rule, errmsg: &str) -> CallError {
        CallError::Wechat(WechatError::Api {
            endpoint: Endpoint::StableToken,
            errcode: rule.errcode,
            errmsg: errmsg.to_owned(),
            rid: None,
            hint: None,
        })
    }

    #[test]
    fn fixes_follow_the_kind_of_error() {
        let whitelist =
            api(&rulebook::IP_NOT_WHITELISTED, "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist");
        assert!(fix_for("wxa", &whitelist).contains("egress IP 203.0.113.7"));
        let whitelist = api(&rulebook::IP_NOT_WHITELISTED, "invalid ip, not in whitelist");
        assert!(fix_for("wxa", &whitelist).contains("this machine's egress IP"));
        assert!(fix_for("wxa", &api(&rulebook::INVALID_APPSECRET, "invalid appsecret")).contains("appsecret"));
        assert!(fix_for("wxa", &api(&rulebook::API_UNAUTHORIZED, "api unauthorized")).contains("docs/onboarding.md"));
    }

    #[test]
    fn the_checklist_renders_marks_and_fixes() {
        let mut list = Checklist::default();
        list.pass("configuration", "loaded");
        list.fail("access token of wxa", "refused", "do this");
        assert!(!list.passed());
        assert_eq!(
            list.render(),
            "✓ configuration: loaded\n✗ access token of wxa: refused\n    fix: do this\n1 of 2 checks failed\n"
        );
    }
}
