//! Migrations and the SQL credential store on SQLite and PostgreSQL.

use std::sync::Arc;

use fiscalbill_common::Secret;
use fiscalbill_common::db::{COMMON_MIGRATIONS, Db, test_support};
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use fiscalbill_common::wechat::{Credential, CredentialKey, CredentialStore};

async fn store_behaves(config: fiscalbill_common::db::DatabaseConfig) {
    let db = Db::connect(&config, "common_test").await.unwrap_or_else(|e| panic!("{}: {e}", config.url));
    let schema = config.schema.clone().unwrap_or_default();
    db.migrate(&[COMMON_MIGRATIONS], &schema).await.unwrap();
    // Migrating again is a no-op.
    db.migrate(&[COMMON_MIGRATIONS], &schema).await.unwrap();
    db.ping().await.unwrap();

    let store: Arc<dyn CredentialStore> = Arc::new(SqlCredentialStore::new(db.clone()));
    let key = CredentialKey::access_token("wxc0000000000000c1");
    assert_eq!(store.load(&key).await.unwrap(), None);
    let first = Credential { value: Secret::new("token-1"), expires_at: 9_000, refresh_at: 8_700 };
    store.save(&key, &first).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), Some(first.clone()));
    let second = Credential { value: Secret::new("token-2"), expires_at: 19_000, refresh_at: 18_700 };
    store.save(&key, &second).await.unwrap();
    store.expire_if_current(&key, &Secret::new("token-1")).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), Some(second), "a stale expire leaves the newer token");
    store.expire_if_current(&key, &Secret::new("token-2")).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);

    let ticket = CredentialKey::card_ticket("wxc0000000000000c1");
    assert!(store.try_claim(&ticket, "replica-a", 100, 115).await.unwrap());
    assert!(!store.try_claim(&ticket, "replica-b", 110, 125).await.unwrap());
    assert!(store.try_claim(&ticket, "replica-a", 111, 126).await.unwrap(), "the holder may renew");
    store.release_claim(&ticket, "replica-b").await.unwrap();
    assert!(!store.try_claim(&ticket, "replica-b", 112, 127).await.unwrap(), "only the holder releases");
    store.release_claim(&ticket, "replica-a").await.unwrap();
    assert!(store.try_claim(&ticket, "replica-b", 113, 128).await.unwrap());
    assert!(store.try_claim(&ticket, "replica-a", 128, 140).await.unwrap(), "a lapsed claim is free");
    db.close().await;
}

#[tokio::test]
async fn credential_store_on_sqlite() {
    store_behaves(test_support::sqlite()).await;
}

#[tokio::test]
async fn credential_store_on_postgres() {
    store_behaves(test_support::postgres()).await;
}
