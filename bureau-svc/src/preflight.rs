//! `bureau-svc preflight`: checks a real configuration against WeChat before going live, without
//! changes a user would regret (the token comes from the service's database when it holds a
//! valid one; seturl answers the same s_pappid every time).

use std::sync::Arc;

use fiscalbill_common::db::COMMON_MIGRATIONS;
use fiscalbill_common::preflight::{Checklist, check_database};
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use wechat::callback::CallbackKeys;
use wechat::clock::SystemClock;
use wechat::{CredentialStore, Credentials, MemoryCredentialStore, TokenMode, WechatClient};

use crate::config::BureauConfig;
use crate::store::{MIGRATIONS, Store};
use crate::{SCHEMA, image_host};

pub async fn preflight(config: &BureauConfig) -> Checklist {
    let mut list = Checklist::default();
    let appid = &config.account.appid;

    let secret = match config.account.secret.resolve() {
        Ok(secret) => {
            list.pass(format!("appsecret of {appid}"), "configured");
            Some(secret)
        }
        Err(error) => {
            list.fail(
                format!("appsecret of {appid}"),
                error.to_string(),
                "set [account] secret (an env variable or a file)",
            );
            None
        }
    };
    check_callback_keys(config, &mut list);
    match config.signing.as_ref().map(|signing| signing.signer()) {
        Some(Ok(signer)) => list.pass("bill signing", format!("certificate SHA-256 {}", signer.fingerprint())),
        Some(Err(error)) => list.fail(
            "bill signing",
            error,
            "give [signing] certificate (PEM) and key (its P-256 private key, PEM) as files or env variables",
        ),
        None => list.fail(
            "bill signing",
            "[signing] is not configured: rendered bills would carry no signature",
            "give [signing] certificate and key: the bureau's document-signing certificate and its P-256 key",
        ),
    }
    let image_host = image_host(&config.wechat.base_url);
    for unit in &config.units {
        match unit.resolve(image_host.as_deref()) {
            Ok(_) => {
                list.pass(format!("logo of unit {}", unit.appid), "a JPG/PNG file or a URL on WeChat's image host")
            }
            Err(error) => list.fail(
                format!("logo of unit {}", unit.appid),
                error.to_string(),
                "give logo_file (JPG or PNG, at most 1 MB) or the logo_url WeChat's image upload answered",
            ),
        }
    }
    if config.account.token_mode != TokenMode::StableToken && config.units.iter().any(|unit| &unit.appid == appid) {
        list.fail(
            "token mode of a self-built platform",
            format!("{appid} is also a unit here and uses cgi-bin/token"),
            "set token_mode = \"stable_token\" in both services",
        );
    }

    let db = check_database(&mut list, &config.database, SCHEMA, &[COMMON_MIGRATIONS, MIGRATIONS]).await;
    let Some(secret) = secret else { return list };
    let client = match WechatClient::new(&config.wechat) {
        Ok(client) => client,
        Err(error) => {
            list.fail("WeChat client", error.to_string(), "fix [wechat] base_url or proxy");
            return list;
        }
    };
    // The service's own token store, so that a running service's token is used, not replaced.
    let store: Arc<dyn CredentialStore> = match &db {
        Some(db) => Arc::new(SqlCredentialStore::new(db.clone())),
        None => Arc::new(MemoryCredentialStore::default()),
    };
    let credentials =
        Credentials::new(client, [(appid.clone(), secret)], config.account.token_mode, store, Arc::new(SystemClock));
    let account = credentials.account(appid);
    match account.access_token().await {
        Ok(token) => list.pass(
            format!("access token of {appid}"),
            format!("valid for {} s more", token.expires_at - wechat::clock::unix_now()),
        ),
        Err(error) => {
            list.fail_call(format!("access token of {appid}"), appid, &error);
            return list;
        }
    }

    let stored = match &db {
        Some(db) => Store::new(db.clone()).sp_app(appid).await.ok().flatten(),
        None => None,
    };
    match account.set_url().await {
        Ok(sp) if stored.as_ref().is_some_and(|stored| stored.s_pappid != sp.s_pappid) => list.fail(
            "invoice permission and s_pappid",
            "WeChat answers another s_pappid than the one this bureau stored",
            "the database belongs to another bureau account: check [account] appid and [database] url",
        ),
        Ok(sp) => list.pass("invoice permission and s_pappid", format!("s_pappid {}", sp.s_pappid)),
        Err(error) => list.fail_call("invoice permission and s_pappid", appid, &error),
    }

    if let Some(db) = &db {
        let store = Store::new(db.clone());
        for unit in &config.units {
            let what = format!("bill template of unit {}", unit.appid);
            match store.unit(&unit.appid).await {
                Ok(Some(stored)) if stored.card_id.is_some() => {
                    list.pass(what, format!("card_id {}", stored.card_id.unwrap_or_default()))
                }
                Ok(_) => list.fail(
                    what,
                    "not created yet",
                    format!("call CreateCardTemplate for {} (or let its first bill create it)", unit.appid),
                ),
                Err(error) => list.fail(what, error.to_string(), "check that the database answers"),
            }
        }
        db.close().await;
    }
    list
}

fn check_callback_keys(config: &BureauConfig, list: &mut Checklist) {
    let account = &config.account;
    let Some(token) = &account.callback_token else {
        list.fail(
            "callback keys",
            "no callback_token: update_invoice_status pushes cannot be verified",
            "set [account] callback_token (and encoding_aes_key for safe mode) to the values configured at WeChat",
        );
        return;
    };
    let resolve = |s: &Option<fiscalbill_common::config::SecretSetting>| s.as_ref().map(|s| s.resolve()).transpose();
    let keys = (|| {
        let aes = resolve(&account.encoding_aes_key).map_err(|e| e.to_string())?;
        let previous = resolve(&account.previous_encoding_aes_key).map_err(|e| e.to_string())?;
        let token = token.resolve().map_err(|e| e.to_string())?;
        CallbackKeys::new(&account.appid, token, aes.as_ref(), previous.as_ref(), account.push_mode)
            .map_err(|e| e.to_string())
    })();
    match keys {
        Ok(keys) => list.pass("callback keys", format!("well formed ({:?} mode)", keys.mode).to_lowercase()),
        Err(error) => list.fail(
            "callback keys",
            error,
            "copy the token and the 43-character EncodingAESKey from WeChat (设置与开发 → 基本配置 → 服务器配置)",
        ),
    }
}
