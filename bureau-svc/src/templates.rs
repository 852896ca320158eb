//! Collection units and their bill templates: one template (card_id) per unit, created through
//! createbillcard on first need, stored and reused. One replica at a time creates a unit's
//! template (a claim on its row); one task at a time in this process. A unit with a template
//! never changes (WeChat templates cannot, and the store refuses a new payee or logo once the
//! card_id is set), so it is read from the database once and then kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fiscalbill_common::db::now_millis;
use fiscalbill_common::paging::{Page, fetch_page};
use wechat::image::LogoImage;
use wechat::types::BillCardInfo;
use wechat::{Credentials, TokenMode};

use crate::domain::{Logo, Unit};
use crate::error::BureauError;
use crate::store::Store;

/// A unit of the configuration, its logo read and checked.
pub struct ConfiguredUnit {
    pub appid: String,
    pub payee: String,
    pub logo: Logo,
}

/// How long a replica may take to create a template before another may try.
const CLAIM_MS: i64 = 30_000;

pub struct Templates {
    store: Store,
    credentials: Arc<Credentials>,
    bureau_appid: String,
    token_mode: TokenMode,
    holder: String,
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Units whose template exists, by appid: as stored, for good.
    with_template: Mutex<HashMap<String, Unit>>,
}

impl Templates {
    pub fn new(
        store: Store,
        credentials: Arc<Credentials>,
        bureau_appid: String,
        token_mode: TokenMode,
        holder: String,
    ) -> Self {
        Self {
            store,
            credentials,
            bureau_appid,
            token_mode,
            holder,
            creating: Mutex::default(),
            with_template: Mutex::default(),
        }
    }

    /// The unit as stored (None: not onboarded). Read from the database until its template
    /// exists, from memory after.
    pub async fn unit(&self, appid: &str) -> Result<Option<Unit>, BureauError> {
        if let Some(unit) = self.with_template.lock().unwrap().get(appid) {
            return Ok(Some(unit.clone()));
        }
        let unit = self.store.unit(appid).await?;
        if let Some(unit) = unit.as_ref().filter(|unit| unit.card_id.is_some()) {
            self.with_template.lock().unwrap().insert(appid.to_owned(), unit.clone());
        }
        Ok(unit)
    }

    /// Records the units of the configuration. A unit whose template exists keeps the payee
    /// and logo it was created with (WeChat templates cannot change); a difference is logged.
    pub async fn onboard(&self, units: &[ConfiguredUnit]) -> Result<(), BureauError> {
        for unit in units {
            let now = now_millis();
            if self.store.insert_unit(&unit.appid, &unit.payee, &unit.logo, now).await? {
                tracing::info!(unit_appid = %unit.appid, "onboarded collection unit from configuration");
                continue;
            }
            let stored = self.store.unit(&unit.appid).await?.expect("the unit exists");
            if stored.payee == unit.payee && unit.logo.is_that_of(&stored) {
                continue;
            }
            if self.store.update_unit_before_template(&unit.appid, &unit.payee, &unit.logo, now).await? {
                tracing::info!(unit_appid = %unit.appid, "updated payee and logo of a unit without template");
            } else {
                tracing::warn!(
                    unit_appid = %unit.appid, stored_payee = %stored.payee, configured_payee = %unit.payee,
                    "the unit's template exists with other payee or logo; keeping the template"
                );
            }
        }
        Ok(())
    }

    /// CreateCardTemplate: the unit's template, created now if needed. Returns whether this
    /// call created it.
    pub async fn create(&self, appid: &str, payee: &str, logo: &Logo) -> Result<(Unit, bool), BureauError> {
        let inserted = self.store.insert_unit(appid, payee, logo, now_millis()).await?;
        let unit = self.store.unit(appid).await?.expect("the unit exists");
        if !inserted && (unit.payee != payee || !logo.is_that_of(&unit)) {
            return Err(BureauError::TemplateConflict {
                appid: appid.to_owned(),
                payee: unit.payee,
                logo_url: unit.logo_url,
            });
        }
        if unit.card_id.is_some() {
            return Ok((unit, false));
        }
        let created = self.ensure(appid).await?;
        Ok((self.store.unit(appid).await?.expect("the unit exists"), created.1))
    }

    /// The unit's template; NotFound until one exists.
    pub async fn get(&self, appid: &str) -> Result<Unit, BureauError> {
        match self.unit(appid).await? {
            Some(unit) if unit.card_id.is_some() => Ok(unit),
            _ => Err(BureauError::TemplateNotFound(appid.to_owned())),
        }
    }

    /// ListCardTemplates: units with a template, by appid, after `after`.
    pub async fn list(&self, after: &str, limit: i64) -> Result<Page<Unit>, BureauError> {
        Ok(fetch_page(limit, |limit| self.store.list_templates(after, limit)).await?)
    }

    /// The unit's card_id, creating the template on first need; and whether this call did.
    pub async fn ensure(&self, appid: &str) -> Result<(String, bool), BureauError> {
        // The self-built platform: the bureau's account is the unit's too, and collection-svc
        // fetches its tokens as well. With cgi-bin/token each fetch invalidates the other's.
        if appid == self.bureau_appid && self.token_mode != TokenMode::StableToken {
            return Err(BureauError::SelfBuiltTokenMode(appid.to_owned()));
        }
        let unit = self.unit(appid).await?.ok_or_else(|| BureauError::UnitNotOnboarded(appid.to_owned()))?;
        if let Some(card_id) = unit.card_id {
            return Ok((card_id, false));
        }
        let lock = self.creating.lock().unwrap().entry(appid.to_owned()).or_default().clone();
        let _one = lock.lock().await;
        let deadline = now_millis() + CLAIM_MS * 2;
        loop {
            let unit = self.store.unit(appid).await?.expect("the unit exists");
            if let Some(card_id) = unit.card_id {
                return Ok((card_id, false));
            }
            let now = now_millis();
            if self.store.claim_template(appid, &self.holder, now, now + CLAIM_MS).await? {
                return self.create_at_wechat(&unit).await.map(|card_id| (card_id, true));
            }
            if now > deadline {
                return Err(BureauError::Busy(format!("another replica is still creating the template of {appid}")));
            }
            // Another replica is creating it.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create_at_wechat(&self, unit: &Unit) -> Result<String, BureauError> {
        let created = match self.logo_url(unit).await {
            Ok(logo_url) => {
                let info = &BillCardInfo { payee: unit.payee.clone(), logo_url };
                self.credentials.account(&self.bureau_appid).create_bill_card(info).await.map_err(BureauError::from)
            }
            Err(error) => Err(error),
        };
        match created {
            Ok(card_id) => {
                self.store.set_card_id(&unit.appid, &card_id, now_millis()).await?;
                tracing::info!(unit_appid = %unit.appid, %card_id, "created the unit's bill template");
                let stored = self.store.unit(&unit.appid).await?.and_then(|u| u.card_id);
                Ok(stored.unwrap_or(card_id))
            }
            Err(error) => {
                self.store.release_template_claim(&unit.appid, &self.holder).await?;
                Err(error)
            }
        }
    }

    /// The unit's logo URL on WeChat's image host: as given, or its image uploaded through
    /// uploadimg now (once: the URL is stored, and the caller holds the template claim).
    async fn logo_url(&self, unit: &Unit) -> Result<String, BureauError> {
        if !unit.logo_url.is_empty() {
            return Ok(unit.logo_url.clone());
        }
        let bytes =
            self.store.logo_image(&unit.appid).await?.ok_or_else(|| BureauError::LogoMissing(unit.appid.clone()))?;
        let image = LogoImage::new(bytes.into()).map_err(|e| BureauError::LogoInvalid(unit.appid.clone(), e))?;
        let url = self.credentials.account(&self.bureau_appid).upload_image(&image).await?;
        self.store.set_logo_url(&unit.appid, &url, now_millis()).await?;
        tracing::info!(unit_appid = %unit.appid, %url, "uploaded the unit's logo through WeChat's image upload");
        Ok(url)
    }
}
