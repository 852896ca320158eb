//! `collection-svc preflight`: checks a real configuration against WeChat and the bureau before
//! going live, without changes a user would regret (tokens and tickets come from the service's
//! database when it holds valid ones; the permission check asks getauthdata about an order that
//! does not exist).

use std::sync::Arc;
use std::time::Duration;

use fiscalbill_common::db::COMMON_MIGRATIONS;
use fiscalbill_common::preflight::{Checklist, check_database};
use fiscalbill_common::proto::bureau as bureau_pb;
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use tonic::Code;
use wechat::clock::SystemClock;
use wechat::types::OrderRef;
use wechat::{CallError, CredentialStore, Credentials, ErrorKind, MemoryCredentialStore, TokenMode, WechatClient};

use crate::config::CollectionConfig;
use crate::store::MIGRATIONS;
use crate::units::Units;
use crate::{SCHEMA, bureau};

const WAIT: Duration = Duration::from_secs(10);

pub async fn preflight(config: &CollectionConfig) -> Checklist {
    let mut list = Checklist::default();
    let accounts = match Units::from_config(&config.units) {
        Ok((_, accounts)) => {
            list.pass("units, secrets and callback keys", format!("{} unit(s) configured", config.units.len()));
            accounts
        }
        Err(error) => {
            list.fail(
                "units, secrets and callback keys",
                error.to_string(),
                "set each unit's secret, callback_token and encoding_aes_key (43 characters) as configured at WeChat",
            );
            return list;
        }
    };
    if config.token_mode != TokenMode::StableToken
        && let Some(unit) = config.units.iter().find(|unit| unit.forward_url.is_some())
    {
        list.fail(
            "token mode of a self-built platform",
            format!("{} forwards to the bureau and uses cgi-bin/token", unit.appid),
            "set token_mode = \"stable_token\" in both services",
        );
    }

    let db = check_database(&mut list, &config.database, SCHEMA, &[COMMON_MIGRATIONS, MIGRATIONS]).await;
    let s_pappid = check_bureau(config, &mut list).await;

    let client = match WechatClient::new(&config.wechat) {
        Ok(client) => client,
        Err(error) => {
            list.fail("WeChat client", error.to_string(), "fix [wechat] base_url or proxy");
            return list;
        }
    };
    // The service's own token store, so that a running service's tokens are used, not replaced.
    let store: Arc<dyn CredentialStore> = match &db {
        Some(db) => Arc::new(SqlCredentialStore::new(db.clone())),
        None => Arc::new(MemoryCredentialStore::default()),
    };
    let credentials = Credentials::new(client, accounts.clone(), config.token_mode, store, Arc::new(SystemClock));
    for (appid, _) in &accounts {
        check_account(&credentials, appid, s_pappid.as_deref(), &mut list).await;
    }
    if let Some(db) = db {
        db.close().await;
    }
    list
}

/// Token, wx_card ticket and invoice permission of one account (a unit or its App).
async fn check_account(credentials: &Credentials, appid: &str, s_pappid: Option<&str>, list: &mut Checklist) {
    let account = credentials.account(appid);
    match account.access_token().await {
        Ok(token) => list.pass(
            format!("access token of {appid}"),
            format!("valid for {} s more", token.expires_at - wechat::clock::unix_now()),
        ),
        Err(error) => return list.fail_call(format!("access token of {appid}"), appid, &error),
    }
    match account.card_ticket().await {
        Ok(_) => list.pass(format!("wx_card ticket of {appid}"), "fetched"),
        Err(error) => list.fail_call(format!("wx_card ticket of {appid}"), appid, &error),
    }
    let what = format!("invoice permission of {appid}");
    let Some(s_pappid) = s_pappid else {
        return list.fail(
            what,
            "cannot be checked without the bureau's s_pappid",
            "make the bureau reachable (see above)",
        );
    };
    // An order that does not exist: WeChat answers "never authorized" when the account may ask.
    let order = OrderRef {
        s_pappid: s_pappid.to_owned(),
        order_id: format!("preflight-{}", hex::encode(rand::random::<[u8; 8]>())),
    };
    match account.get_auth_data(&order).await {
        Ok(_) => list.pass(what, "getauthdata answered"),
        Err(CallError::Wechat(error)) if error.kind() == ErrorKind::NeverAuthorized => {
            list.pass(what, "getauthdata answered (the probe order is unknown, as expected)")
        }
        Err(error) => list.fail_call(what, appid, &error),
    }
}

/// The bureau over gRPC with this service's TLS and API key: its s_pappid.
async fn check_bureau(config: &CollectionConfig, list: &mut Checklist) -> Option<String> {
    let what = format!("bureau at {}", config.bureau.endpoint);
    let mut client = match bureau::client(&config.bureau, 4 * 1024 * 1024) {
        Ok(client) => client,
        Err(error) => {
            list.fail(what, error.to_string(), "fix [bureau] endpoint, tls and api_key");
            return config.bureau.s_pappid.clone();
        }
    };
    let mut request = tonic::Request::new(bureau_pb::GetSpAppIdRequest {});
    request.set_timeout(WAIT);
    match client.get_sp_app_id(request).await {
        Ok(answer) => {
            let s_pappid = answer.into_inner().s_pappid;
            match &config.bureau.s_pappid {
                Some(configured) if configured != &s_pappid => {
                    list.fail(
                        what,
                        "the bureau's s_pappid differs from [bureau] s_pappid",
                        "remove [bureau] s_pappid, or set it to the bureau's (GetSpAppId)",
                    );
                    Some(configured.clone())
                }
                _ => {
                    list.pass(what, format!("reachable; s_pappid {s_pappid}"));
                    Some(s_pappid)
                }
            }
        }
        Err(status) => {
            let fix = match status.code() {
                Code::Unauthenticated => {
                    "the bureau does not accept [bureau] api_key: add its SHA-256 to the bureau's [[auth.clients]]"
                }
                Code::PermissionDenied => {
                    "the bureau's [[auth.clients]] entry for this key must allow GetSpAppId and IssueBill"
                }
                _ => "check [bureau] endpoint, the network to the bureau and TLS (ca_file, client certificate)",
            };
            list.fail(what, format!("{:?}: {}", status.code(), status.message()), fix);
            config.bureau.s_pappid.clone()
        }
    }
}
