//! The query counter (`fiscalbill_db_queries_total`): one per round trip to the database, a
//! write unit sent as one query counted once. A test binary of its own: the counters are the
//! process's, and the counting layer must be the global subscriber (SQLite runs a query on its
//! connection's own thread).

use fiscalbill_common::db::{COMMON_MIGRATIONS, Db, test_support};
use fiscalbill_common::statement_counts::{self, KindLabel, QUERIES, STATEMENTS};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn statements(kind: &'static str) -> u64 {
    STATEMENTS.get_or_create(&KindLabel { kind }).get()
}

/// Queries other than the WAL's copy on SQLite, which runs now and then on a connection of its
/// own (its queries are PRAGMAs, statements of kind "other"); statements by kind.
fn counts() -> (u64, [u64; 4]) {
    (QUERIES.get() - statements("other"), ["select", "insert", "update", "with"].map(statements))
}

#[tokio::test]
async fn each_round_trip_is_one_query_and_a_write_unit_is_one() {
    tracing_subscriber::registry().with(statement_counts::layer()).init();
    for config in test_support::both() {
        let db = Db::connect(&config, "query_counts").await.unwrap();
        // Creates the test's schema on PostgreSQL.
        db.migrate(&[COMMON_MIGRATIONS], &config.schema.clone().unwrap_or_default()).await.unwrap();
        let create = "CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)";
        sqlx::query(create).execute(&mut *db.write().await.unwrap()).await.unwrap();
        let before = counts();

        sqlx::query("SELECT COUNT(*) FROM t").fetch_one(&mut *db.read().await.unwrap()).await.unwrap();
        let unit = ["INSERT INTO t VALUES ($1, 1)".to_owned(), "INSERT INTO t VALUES ($2, 2)".to_owned()];
        db.write_together(unit.to_vec(), |query| query.bind("a").bind("b"), None).await.unwrap();
        let mut tx = db.begin_write().await.unwrap();
        sqlx::query("UPDATE t SET v = 3 WHERE k = $1").bind("a").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();

        let after = counts();
        // The read; the unit; BEGIN, the update and COMMIT.
        assert_eq!(after.0 - before.0, 5, "queries on {}", config.url);
        let run: Vec<u64> = after.1.iter().zip(before.1).map(|(a, b)| a - b).collect();
        // Select, insert, update, with: on SQLite the unit's statements are counted each; on
        // PostgreSQL the unit is one statement (WITH).
        let expected = match config.url.starts_with("sqlite") {
            true => [1, 2, 1, 0],
            false => [1, 0, 1, 1],
        };
        assert_eq!(run, expected, "statements on {}", config.url);
        db.close().await;
    }
}
