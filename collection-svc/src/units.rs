//! The collection units this service serves: their callback keys, their App, and where pushes
//! they do not handle go.

use std::collections::HashMap;

use fiscalbill_common::bill::is_appid;
use fiscalbill_common::config::{ConfigError, SecretSetting};
use wechat::Secret;
use wechat::callback::CallbackKeys;

use crate::config::UnitConfig;

#[derive(Debug)]
pub struct Unit {
    pub appid: String,
    pub keys: CallbackKeys,
    pub app_appid: Option<String>,
    pub forward_url: Option<String>,
}

#[derive(Debug, Default)]
pub struct Units {
    by_appid: HashMap<String, Unit>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("unit {appid}: {message}")]
    Invalid { appid: String, message: String },
}

impl Units {
    /// The units, and the (appid, appsecret) of every account they use (Service Accounts and
    /// Apps), for the token cache.
    pub fn from_config(configs: &[UnitConfig]) -> Result<(Units, Vec<(String, Secret)>), UnitsError> {
        let mut units = Units::default();
        let mut accounts = Vec::new();
        for config in configs {
            let invalid =
                |message: &str| UnitsError::Invalid { appid: config.appid.clone(), message: message.to_owned() };
            if !is_appid(&config.appid) {
                return Err(invalid("appid must be wx followed by 16 lowercase hex digits"));
            }
            let resolve = |s: &Option<SecretSetting>| s.as_ref().map(SecretSetting::resolve).transpose();
            let keys = CallbackKeys::new(
                &config.appid,
                config.callback_token.resolve()?,
                resolve(&config.encoding_aes_key)?.as_ref(),
                resolve(&config.previous_encoding_aes_key)?.as_ref(),
                config.push_mode,
            )
            .map_err(|e| invalid(&e.to_string()))?;
            accounts.push((config.appid.clone(), config.secret.resolve()?));
            let app_appid = match &config.app {
                Some(app) if !is_appid(&app.appid) => return Err(invalid("app.appid must be a WeChat appid")),
                Some(app) => {
                    accounts.push((app.appid.clone(), app.secret.resolve()?));
                    Some(app.appid.clone())
                }
                None => None,
            };
            if units.by_appid.contains_key(&config.appid) {
                return Err(invalid("is configured twice"));
            }
            let unit = Unit { appid: config.appid.clone(), keys, app_appid, forward_url: config.forward_url.clone() };
            units.by_appid.insert(config.appid.clone(), unit);
        }
        Ok((units, accounts))
    }

    pub fn get(&self, appid: &str) -> Option<&Unit> {
        self.by_appid.get(appid)
    }

    /// Every account the units use: Service Accounts and Apps.
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        self.by_appid.values().flat_map(|u| std::iter::once(u.appid.as_str()).chain(u.app_appid.as_deref()))
    }

    /// Whether `appid` is a unit's Service Account or App served here.
    pub fn serves_account(&self, appid: &str) -> bool {
        self.by_appid.values().any(|u| u.appid == appid || u.app_appid.as_deref() == Some(appid))
    }
}
