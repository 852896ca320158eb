//! [`CredentialStore`] in the service's database (table `wechat_credential`), so that replicas
//! share one token per appid and one of them refreshes it at a time.

use async_trait::async_trait;
use sqlx::Row;

use crate::db::Db;
use wechat::Secret;
use wechat::{Credential, CredentialKey, CredentialStore, StoreError};

pub struct SqlCredentialStore {
    db: Db,
}

impl SqlCredentialStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn store_error(error: sqlx::Error) -> StoreError {
    StoreError(error.to_string())
}

#[async_trait]
impl CredentialStore for SqlCredentialStore {
    async fn load(&self, key: &CredentialKey) -> Result<Option<Credential>, StoreError> {
        let sql = "SELECT value, expires_at, refresh_at FROM wechat_credential WHERE kind = $1 AND appid = $2 AND value IS NOT NULL";
        let row =
            self.db.read_row(sql, |query| query.bind(key.kind.as_str()).bind(&key.appid)).await.map_err(store_error)?;
        row.map(|row| {
            Ok(Credential {
                value: Secret::new(row.try_get::<String, _>(0)?),
                expires_at: row.try_get(1)?,
                refresh_at: row.try_get(2)?,
            })
        })
        .transpose()
        .map_err(store_error)
    }

    async fn save(&self, key: &CredentialKey, credential: &Credential) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wechat_credential (kind, appid, value, expires_at, refresh_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, appid) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, refresh_at = excluded.refresh_at",
        )
        .bind(key.kind.as_str())
        .bind(&key.appid)
        .bind(credential.value.expose())
        .bind(credential.expires_at)
        .bind(credential.refresh_at)
        .execute(&mut *self.db.write().await.map_err(store_error)?)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn expire_if_current(&self, key: &CredentialKey, value: &Secret) -> Result<(), StoreError> {
        sqlx::query("UPDATE wechat_credential SET value = NULL WHERE kind = $1 AND appid = $2 AND value = $3")
            .bind(key.kind.as_str())
            .bind(&key.appid)
            .bind(value.expose())
            .execute(&mut *self.db.write().await.map_err(store_error)?)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn try_claim(&self, key: &CredentialKey, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        sqlx::query("INSERT INTO wechat_credential (kind, appid) VALUES ($1, $2) ON CONFLICT (kind, appid) DO NOTHING")
            .bind(key.kind.as_str())
            .bind(&key.appid)
            .execute(&mut *self.db.write().await.map_err(store_error)?)
            .await
            .map_err(store_error)?;
        let claimed = sqlx::query(
            "UPDATE wechat_credential SET claim_holder = $3, claim_until = $5
             WHERE kind = $1 AND appid = $2 AND (claim_holder IS NULL OR claim_holder = $3 OR claim_until <= $4)",
        )
        .bind(key.kind.as_str())
        .bind(&key.appid)
        .bind(holder)
        .bind(now)
        .bind(until)
        .execute(&mut *self.db.write().await.map_err(store_error)?)
        .await
        .map_err(store_error)?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn release_claim(&self, key: &CredentialKey, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE wechat_credential SET claim_holder = NULL, claim_until = 0 WHERE kind = $1 AND appid = $2 AND claim_holder = $3",
        )
        .bind(key.kind.as_str())
        .bind(&key.appid)
        .bind(holder)
        .execute(&mut *self.db.write().await.map_err(store_error)?)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}
