//! Migrations, the SQL credential store and PDF chunks on SQLite and PostgreSQL.

use std::sync::Arc;

use fiscalbill_common::db::{COMMON_MIGRATIONS, Db, Migration, test_support};
use fiscalbill_common::pdf_store::{CHUNK_BYTES, PdfTable};
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use wechat::Secret;
use wechat::{Credential, CredentialKey, CredentialStore};

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

const PDF_TEST_TABLE: &[Migration] = &[Migration {
    set: "pdf_store_test",
    version: 1,
    name: "a table of PDF chunks",
    sql: "CREATE TABLE test_pdf_chunk (unit_appid TEXT NOT NULL, order_id TEXT NOT NULL, seq BIGINT NOT NULL, \
          data BLOB NOT NULL, PRIMARY KEY (unit_appid, order_id, seq))",
    postgres_sql: None,
}];

async fn pdf_chunks_round_trip(config: fiscalbill_common::db::DatabaseConfig) {
    let db = Db::connect(&config, "common_test").await.unwrap_or_else(|e| panic!("{}: {e}", config.url));
    let schema = config.schema.clone().unwrap_or_default();
    db.migrate(&[PDF_TEST_TABLE], &schema).await.unwrap();
    let table = PdfTable("test_pdf_chunk");
    // One byte, exactly one chunk, and two and a half chunks; every byte position distinct.
    let sizes = [1, CHUNK_BYTES, CHUNK_BYTES * 5 / 2];
    for (n, size) in sizes.into_iter().enumerate() {
        let pdf: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut tx = db.begin_write().await.unwrap();
        table.insert(&mut tx, "wxc0000000000000c1", &format!("order-{n}"), &pdf).await.unwrap();
        tx.commit().await.unwrap();
        let read =
            table.read(&mut db.read().await.unwrap(), "wxc0000000000000c1", &format!("order-{n}")).await.unwrap();
        assert_eq!(read.as_deref(), Some(&pdf[..]), "{size} bytes read back");
    }
    let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM test_pdf_chunk WHERE order_id = 'order-2'")
        .fetch_one(&mut *db.read().await.unwrap())
        .await
        .unwrap();
    assert_eq!(chunks, 3);
    assert_eq!(table.read(&mut db.read().await.unwrap(), "wxc0000000000000c1", "order-9").await.unwrap(), None);
    assert_eq!(table.read(&mut db.read().await.unwrap(), "wxc0000000000000c2", "order-0").await.unwrap(), None);
    db.close().await;
}

#[tokio::test]
async fn pdf_chunks_on_sqlite() {
    pdf_chunks_round_trip(test_support::sqlite()).await;
}

#[tokio::test]
async fn pdf_chunks_on_postgres() {
    pdf_chunks_round_trip(test_support::postgres()).await;
}

/// A write transaction dropped unfinished (an error returned early, a caller gone) is rolled
/// back, and the writer takes the next transaction; an error inside one leaves nothing behind
/// either. On SQLite the writer is the service's one connection, so a transaction left open
/// there would block every later write.
async fn unfinished_transactions_roll_back(config: fiscalbill_common::db::DatabaseConfig) {
    let db = Db::connect(&config, "common_test").await.unwrap_or_else(|e| panic!("{}: {e}", config.url));
    let schema = config.schema.clone().unwrap_or_default();
    db.migrate(&[PDF_TEST_TABLE], &schema).await.unwrap();
    let count = |order: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM test_pdf_chunk WHERE order_id = $1")
                .bind(order)
                .fetch_one(&mut *db.read().await.unwrap())
                .await
                .unwrap()
        }
    };
    let insert = "INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, 0, $2)";

    let mut dropped = db.begin_write().await.unwrap();
    sqlx::query(insert).bind("dropped").bind(vec![1_u8]).execute(&mut *dropped).await.unwrap();
    drop(dropped);

    let mut failed = db.begin_write().await.unwrap();
    sqlx::query(insert).bind("failed").bind(vec![2_u8]).execute(&mut *failed).await.unwrap();
    let duplicate = sqlx::query(insert).bind("failed").bind(vec![3_u8]).execute(&mut *failed).await;
    assert!(duplicate.is_err(), "the same key twice");
    drop(failed);

    let mut kept = db.begin_write().await.unwrap();
    sqlx::query(insert).bind("kept").bind(vec![4_u8]).execute(&mut *kept).await.unwrap();
    kept.commit().await.unwrap();
    sqlx::query(insert).bind("single").bind(vec![5_u8]).execute(&mut *db.write().await.unwrap()).await.unwrap();

    assert_eq!(count("dropped").await, 0, "{}", config.url);
    assert_eq!(count("failed").await, 0, "{}", config.url);
    assert_eq!(count("kept").await, 1, "{}", config.url);
    assert_eq!(count("single").await, 1, "{}", config.url);
    db.close().await;
}

#[tokio::test]
async fn unfinished_transactions_roll_back_on_sqlite() {
    let config = test_support::sqlite();
    unfinished_transactions_roll_back(config.clone()).await;
    // Closed, the database leaves its WAL folded into the file (as a pool's last close did).
    let file = config.url.strip_prefix("sqlite://").unwrap();
    let wal = std::fs::metadata(format!("{file}-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "WAL of {file} after close");
}

#[tokio::test]
async fn unfinished_transactions_roll_back_on_postgres() {
    unfinished_transactions_roll_back(test_support::postgres()).await;
}
