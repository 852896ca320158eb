//! The bureau's s_pappid: obtained once through seturl with the bureau's own account, stored,
//! and never asked of WeChat again. Once stored it never changes, so it is read from the
//! database once and then kept.

use std::sync::{Arc, OnceLock};

use fiscalbill_common::db::now_millis;
use wechat::Credentials;

use crate::domain::SpApp;
use crate::error::BureauError;
use crate::store::Store;

pub struct SpAppIds {
    store: Store,
    credentials: Arc<Credentials>,
    bureau_appid: String,
    /// One seturl at a time in this process.
    fetching: tokio::sync::Mutex<()>,
    /// The stored s_pappid, once read or stored.
    known: OnceLock<SpApp>,
}

impl SpAppIds {
    pub fn new(store: Store, credentials: Arc<Credentials>, bureau_appid: String) -> Self {
        Self { store, credentials, bureau_appid, fetching: tokio::sync::Mutex::new(()), known: OnceLock::new() }
    }

    /// The stored s_pappid, fetched through seturl the first time. seturl always answers the
    /// same value for an account, so two replicas racing here store the same thing.
    pub async fn get(&self) -> Result<SpApp, BureauError> {
        if let Some(sp) = self.known.get() {
            return Ok(sp.clone());
        }
        let sp = self.stored_or_fetched().await?;
        Ok(self.known.get_or_init(|| sp).clone())
    }

    async fn stored_or_fetched(&self) -> Result<SpApp, BureauError> {
        if let Some(sp) = self.store.sp_app(&self.bureau_appid).await? {
            return Ok(sp);
        }
        let _one = self.fetching.lock().await;
        if let Some(sp) = self.store.sp_app(&self.bureau_appid).await? {
            return Ok(sp);
        }
        let fetched = self.credentials.account(&self.bureau_appid).set_url().await?;
        let sp = SpApp {
            bureau_appid: self.bureau_appid.clone(),
            s_pappid: fetched.s_pappid,
            invoice_url: fetched.invoice_url,
        };
        tracing::info!(bureau_appid = %self.bureau_appid, "obtained the s_pappid through seturl");
        Ok(self.store.save_sp_app(&sp, now_millis()).await?)
    }
}
