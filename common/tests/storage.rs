//! Migrations, the SQL credential store and PDF chunks on SQLite and PostgreSQL.

use std::sync::Arc;

use fiscalbill_common::db::{COMMON_MIGRATIONS, Db, Migration, MoreStatements, Statement, test_support};
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
    let db = chunk_table(&config).await;
    let table = PdfTable("test_pdf_chunk");
    // One byte, exactly one chunk, and two and a half chunks; every byte position distinct.
    let sizes = [1, CHUNK_BYTES, CHUNK_BYTES * 5 / 2];
    for (n, size) in sizes.into_iter().enumerate() {
        let pdf: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let order_id = format!("order-{n}");
        let in_unit = table.in_unit("wxc0000000000000c1", &order_id, &pdf, 3);
        let statements = [in_unit.statement];
        let bind = |query: Statement| query.bind("wxc0000000000000c1").bind(&order_id).bind(in_unit.first_chunk);
        db.write_together(statements.to_vec(), bind, in_unit.more).await.unwrap();
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

/// A database with the test table of chunks.
async fn chunk_table(config: &fiscalbill_common::db::DatabaseConfig) -> Db {
    let db = Db::connect(config, "common_test").await.unwrap_or_else(|e| panic!("{}: {e}", config.url));
    db.migrate(&[PDF_TEST_TABLE], &config.schema.clone().unwrap_or_default()).await.unwrap();
    db
}

/// The rows of an order in the test table.
async fn rows_of(db: &Db, order: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM test_pdf_chunk WHERE order_id = $1")
        .bind(order)
        .fetch_one(&mut *db.read().await.unwrap())
        .await
        .unwrap()
}

/// A write transaction dropped unfinished (an error returned early, a caller gone) is rolled
/// back, and the writer takes the next transaction; an error inside one leaves nothing behind
/// either. On SQLite the writer is the service's one connection, so a transaction left open
/// there would block every later write.
async fn unfinished_transactions_roll_back(config: fiscalbill_common::db::DatabaseConfig) {
    let db = chunk_table(&config).await;
    let count = |order: &'static str| rows_of(&db, order);
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

/// A write unit is all or nothing: one whose second statement fails leaves nothing of the
/// first; one abandoned while it runs is either wholly written or not at all; and the writer
/// takes the next unit either way.
async fn write_units_are_all_or_nothing(config: fiscalbill_common::db::DatabaseConfig) {
    let db = chunk_table(&config).await;
    let count = |order: &'static str| rows_of(&db, order);
    // Two rows of one order (seq 0 and 1), then a row of another.
    let statements = [
        "INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, 0, $3), ('wxc', $1, 1, $3)"
            .to_owned(),
        "INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $2, 0, $3)".to_owned(),
    ];
    let unit = |first: &'static str, second: &'static str| {
        move |query: Statement| query.bind(first).bind(second).bind(vec![1_u8])
    };

    db.write_together(statements.to_vec(), unit("taken", "kept"), None).await.unwrap();
    // The second statement finds its key taken: the first one's rows go too.
    let failed = db.write_together(statements.to_vec(), unit("failed", "kept"), None).await;
    assert!(failed.is_err(), "{}", config.url);
    assert_eq!(count("failed").await, 0, "{}", config.url);

    // Abandoned as soon as it is sent.
    let abandoned = tokio::time::timeout(
        std::time::Duration::ZERO,
        db.write_together(statements.to_vec(), unit("gone", "gone-2"), None),
    );
    let _ = abandoned.await;
    // Both counts in one read (one snapshot): on PostgreSQL the statement may still be running
    // and commit between two reads.
    let written: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM test_pdf_chunk WHERE order_id = 'gone'),
                (SELECT COUNT(*) FROM test_pdf_chunk WHERE order_id = 'gone-2')",
    )
    .fetch_one(&mut *db.read().await.unwrap())
    .await
    .unwrap();
    assert!(written == (0, 0) || written == (2, 1), "{written:?} {}", config.url);

    // With statements of their own after the unit, in its transaction: one failing takes the
    // unit's rows with it; all passing, everything is kept.
    let third_row = |order: &'static str| {
        sqlx::query("INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, 2, $2)")
            .bind(order)
            .bind(vec![2_u8])
    };
    // The second statement after the unit repeats the first's key.
    let more: MoreStatements = Box::new([third_row("opened"), third_row("opened")].into_iter());
    let failed = db.write_together(statements.to_vec(), unit("opened", "opened-2"), Some(more)).await;
    assert!(failed.is_err(), "{}", config.url);
    assert_eq!((count("opened").await, count("opened-2").await), (0, 0), "{}", config.url);
    let more: MoreStatements = Box::new([third_row("more")].into_iter());
    db.write_together(statements.to_vec(), unit("more", "more-2"), Some(more)).await.unwrap();
    assert_eq!((count("more").await, count("more-2").await), (3, 1), "{}", config.url);

    db.write_together(statements.to_vec(), unit("next", "next-2"), None).await.unwrap();
    assert_eq!((count("taken").await, count("kept").await), (2, 1), "{}", config.url);
    assert_eq!((count("next").await, count("next-2").await), (2, 1), "{}", config.url);
    db.close().await;
}

#[tokio::test]
async fn write_units_are_all_or_nothing_on_sqlite() {
    write_units_are_all_or_nothing(test_support::sqlite()).await;
}

#[tokio::test]
async fn write_units_are_all_or_nothing_on_postgres() {
    write_units_are_all_or_nothing(test_support::postgres()).await;
}

/// On SQLite the group-commit thread runs a unit's statements itself: what they return, and how
/// they fail, must be what sqlx's SQLite driver gives for the same SQL (the callers decode both
/// alike, and tell a duplicate by `is_unique_violation`).
#[tokio::test]
async fn a_units_rows_and_errors_are_sqlxs_on_sqlite() {
    use sqlx::{Column, Executor, Row};

    let db = Db::connect(&test_support::sqlite(), "common_test").await.unwrap();
    db.write()
        .await
        .unwrap()
        .execute("CREATE TABLE kinds (id INTEGER PRIMARY KEY, name TEXT UNIQUE, ratio REAL, data BLOB, flag INTEGER, missing TEXT)")
        .await
        .unwrap();
    // `$n` names an argument wherever it stands; a bare `?` takes the next one, counted across
    // the unit's statements.
    let statements = [
        "INSERT INTO kinds (name, ratio, data, flag) VALUES (?, $3, $4, $5)".to_owned(),
        "INSERT INTO kinds (name, ratio) VALUES (?, $3) RETURNING id, name, ratio, data, flag, missing".to_owned(),
    ];
    let bind = |first: &'static str, second: &'static str| {
        move |query: Statement| query.bind(first).bind(second).bind(0.5_f64).bind(vec![1_u8, 0, 255]).bind(true)
    };
    let by_thread = db.write_together(statements.to_vec(), bind("a", "b"), None).await.unwrap();
    // The same unit through sqlx's driver: a unit with statements after it is one sqlx batch.
    let by_sqlx =
        db.write_together(statements.to_vec(), bind("c", "d"), Some(Box::new(std::iter::empty()))).await.unwrap();
    let returned = |row: &sqlx::any::AnyRow| {
        (
            row.try_get::<i64, _>("id").unwrap(),
            row.try_get::<String, _>("name").unwrap(),
            row.try_get::<&str, _>(1).unwrap().to_owned(),
            row.try_get::<f64, _>("ratio").unwrap(),
            row.try_get::<Option<Vec<u8>>, _>("data").unwrap(),
            row.try_get::<Option<String>, _>("missing").unwrap(),
        )
    };
    assert_eq!(by_thread.len(), 1, "only the statement with RETURNING gives rows");
    assert_eq!(returned(&by_thread[0]), (2, "b".to_owned(), "b".to_owned(), 0.5, None, None));
    assert_eq!(returned(&by_sqlx[0]), (4, "d".to_owned(), "d".to_owned(), 0.5, None, None));
    assert!(by_thread[0].try_get::<i64, _>("no_such_column").is_err());

    // The first row, as the unit and as sqlx's reader give it.
    let select = "SELECT id, name, ratio, data, flag, missing FROM kinds WHERE id = 1";
    let through_unit = db.write_together(vec![select.to_owned()], |query| query, None).await.unwrap();
    let through_sqlx = sqlx::query(select).fetch_all(&mut *db.read().await.unwrap()).await.unwrap();
    let read = |row: &sqlx::any::AnyRow| {
        (
            row.try_get::<i64, _>("id").unwrap(),
            row.try_get::<String, _>("name").unwrap(),
            row.try_get::<f64, _>("ratio").unwrap(),
            row.try_get::<Vec<u8>, _>("data").unwrap(),
            row.try_get::<i64, _>("flag").unwrap(),
            row.try_get::<Option<String>, _>("missing").unwrap(),
        )
    };
    let expected = (1, "a".to_owned(), 0.5, vec![1_u8, 0, 255], 1, None);
    assert_eq!(read(&through_unit[0]), expected);
    assert_eq!(read(&through_sqlx[0]), expected);
    let names = |row: &sqlx::any::AnyRow| row.columns().iter().map(|c| c.name().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&through_unit[0]), names(&through_sqlx[0]));

    // A duplicate name: a unique violation with SQLite's extended code, the unit undone whole.
    let Err(sqlx::Error::Database(error)) = db.write_together(statements.to_vec(), bind("e", "b"), None).await else {
        panic!("a duplicate is a database error");
    };
    assert!(error.is_unique_violation(), "{error}");
    assert_eq!(error.code().as_deref(), Some("2067"), "SQLITE_CONSTRAINT_UNIQUE");
    assert!(error.message().contains("kinds.name"), "{error}");
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM kinds").fetch_one(&mut *db.read().await.unwrap()).await.unwrap();
    assert_eq!(count, 4, "the unit's first insert (\"e\") was undone with it");
    // SQL that does not parse is an error too, and the thread goes on.
    assert!(db.write_together(vec!["INSERT INTO nowhere".to_owned()], |query| query, None).await.is_err());
    db.write_together(statements.to_vec(), bind("f", "g"), None).await.unwrap();
    db.close().await;
}

/// `Db::read_rows` and its kin give the rows a read through a connection of `Db::read` gives
/// (on SQLite they run on the asking thread with a connection of their own, not sqlx's): the
/// same values and column names, the first row only for `read_row`, `RowNotFound` from
/// `read_one` when there is none, a committed unit's rows at once, and an error (the reads
/// going on after it) for SQL that does not parse. On SQLite they cannot write.
async fn direct_reads_are_reads_through_a_connection(config: fiscalbill_common::db::DatabaseConfig) {
    use sqlx::{Column, Row};

    let db = chunk_table(&config).await;
    let insert = "INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, $2, $3)";
    for seq in 0..3_i64 {
        db.write_together(
            vec![insert.to_owned()],
            |query| query.bind("order-1").bind(seq).bind(vec![seq as u8, 255]),
            None,
        )
        .await
        .unwrap();
    }
    let select = "SELECT order_id, seq, data, NULL AS absent FROM test_pdf_chunk WHERE order_id = $1 ORDER BY seq";
    let direct = db.read_rows(select, |query| query.bind("order-1")).await.unwrap();
    let through_conn = sqlx::query(select).bind("order-1").fetch_all(&mut *db.read().await.unwrap()).await.unwrap();
    let values = |rows: &[sqlx::any::AnyRow]| {
        rows.iter()
            .map(|row| {
                (
                    row.try_get::<String, _>("order_id").unwrap(),
                    row.try_get::<i64, _>(1).unwrap(),
                    row.try_get::<Vec<u8>, _>("data").unwrap(),
                    row.try_get::<Option<String>, _>("absent").unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let expected: Vec<_> = (0..3_i64).map(|seq| ("order-1".to_owned(), seq, vec![seq as u8, 255], None)).collect();
    assert_eq!(values(&direct), expected);
    assert_eq!(values(&through_conn), expected);
    let names = |row: &sqlx::any::AnyRow| row.columns().iter().map(|c| c.name().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&direct[0]), names(&through_conn[0]));

    let first = db.read_row(select, |query| query.bind("order-1")).await.unwrap().expect("a row");
    assert_eq!(values(&[first]), expected[..1]);
    assert!(db.read_row(select, |query| query.bind("order-2")).await.unwrap().is_none());
    let none = db.read_one(select, |query| query.bind("order-2")).await;
    assert!(matches!(none, Err(sqlx::Error::RowNotFound)), "{:?}", none.err());
    // A unit's rows, once it has returned, are there for the next read.
    db.write_together(vec![insert.to_owned()], |query| query.bind("order-2").bind(0_i64).bind(vec![7_u8]), None)
        .await
        .unwrap();
    assert_eq!(db.read_rows(select, |query| query.bind("order-2")).await.unwrap().len(), 1);

    assert!(db.read_rows("SELECT FROM nowhere", |query| query).await.is_err());
    assert_eq!(db.read_rows(select, |query| query.bind("order-1")).await.unwrap().len(), 3, "reads go on");
    if db.backend() == fiscalbill_common::db::Backend::Sqlite {
        let write = db.read_rows("DELETE FROM test_pdf_chunk", |query| query).await;
        assert!(write.is_err(), "a direct read cannot write");
        assert_eq!(rows_of(&db, "order-1").await, 3);
    }
    db.close().await;
}

#[tokio::test]
async fn direct_reads_are_reads_through_a_connection_on_sqlite() {
    direct_reads_are_reads_through_a_connection(test_support::sqlite()).await;
}

#[tokio::test]
async fn direct_reads_are_reads_through_a_connection_on_postgres() {
    direct_reads_are_reads_through_a_connection(test_support::postgres()).await;
}

/// On SQLite, write units waiting for the writer together are committed in one transaction,
/// and one of them failing (the group's first, one within, its last) undoes it alone: the
/// others are written, each whole. Every caller, a failing one too, hears back once the group
/// is committed (a failing caller may read what made it fail).
#[tokio::test]
async fn write_units_waiting_together_commit_together_on_sqlite() {
    use std::sync::atomic::Ordering;

    let db = chunk_table(&test_support::sqlite()).await;
    let counts = db.group_commit_counts().expect("SQLite commits units in groups");
    let (units_before, transactions_before) =
        (counts.units.load(Ordering::Relaxed), counts.transactions.load(Ordering::Relaxed));
    let statements = [
        "INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, 0, $2)".to_owned(),
        "INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, 1, $2)".to_owned(),
    ];
    // The second rows of units 0, 3 and 7 are taken already: the group's first, one within and
    // its last fail.
    let failing = [0, 3, 7];
    for n in failing {
        let order = format!("unit-{n}");
        db.write_together(statements[1..].to_vec(), |query| query.bind(order).bind(vec![0_u8]), None).await.unwrap();
    }

    // The writer is busy while eight units queue.
    let writer = db.write().await.unwrap();
    let units: Vec<_> = (0..8)
        .map(|n| {
            let (db, statements) = (db.clone(), statements.clone());
            tokio::spawn(async move {
                let order = format!("unit-{n}");
                let ran =
                    db.write_together(statements.to_vec(), |query| query.bind(order).bind(vec![n as u8]), None).await;
                // What a failing unit's caller finds when it hears back: the group is over, so
                // the rows of the others (unit-1's, run after unit-0) are committed.
                let seen = rows_of(&db, "unit-1").await;
                (ran.is_ok(), seen)
            })
        })
        .collect();
    while counts.units.load(Ordering::Relaxed) < units_before + 11 {
        tokio::task::yield_now().await;
    }
    drop(writer);
    let mut results = Vec::new();
    for unit in units {
        let (ok, seen) = unit.await.unwrap();
        assert_eq!(seen, 2, "a caller heard back before its group was committed");
        results.push(ok);
    }
    assert_eq!(results, [false, true, true, false, true, true, true, false]);
    for n in 0..8 {
        let expected = if failing.contains(&n) { 1 } else { 2 };
        assert_eq!(rows_of(&db, &format!("unit-{n}")).await, expected, "unit-{n}");
    }
    // The three written before, then the eight in one group.
    assert_eq!(counts.transactions.load(Ordering::Relaxed) - transactions_before, 4);
    db.close().await;
}

/// On SQLite the writer never checkpoints: a task of the `Db` copies the WAL into the database
/// file while it is open (`wal_checkpoint.rs` tests that the WAL is started over under steady
/// writes).
#[tokio::test]
async fn the_wal_is_copied_into_the_database_while_it_is_open_on_sqlite() {
    let config = test_support::sqlite();
    let path = std::path::PathBuf::from(config.url.strip_prefix("sqlite://").unwrap());
    let db = chunk_table(&config).await;
    let statement =
        ["INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, 0, $2)".to_owned()];
    let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    // 8 MiB in units of one 256 KiB chunk: less than SQLite's own checkpoint would wait for.
    let units = 32;
    for n in 0..units {
        let data = vec![n as u8; CHUNK_BYTES];
        db.write_together(statement.to_vec(), move |query| query.bind(format!("o-{n}")).bind(data), None)
            .await
            .unwrap();
    }
    assert!(size(&path.with_extension("db-wal")) > 0, "the database is in WAL mode");
    let written = (units * CHUNK_BYTES) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size(&path) < written && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(size(&path) >= written, "the database file has {} of {written} bytes", size(&path));
    db.close().await;
}

/// A reader keeps a small page cache (its cache is emptied after each write anyway, and a PDF
/// read back filled SQLite's default 2 MiB and kept it), and so does the writer, since the
/// group-commit thread's commits empty it as well; the group-commit thread keeps SQLite's
/// default, which only the writer's rarer transactions empty.
#[tokio::test]
async fn readers_keep_a_small_page_cache_on_sqlite() {
    use sqlx::Row;

    let db = chunk_table(&test_support::sqlite()).await;
    let cache_size = |row: sqlx::any::AnyRow| row.try_get::<i64, _>(0).unwrap();
    let reader = sqlx::query("PRAGMA cache_size").fetch_one(&mut *db.read().await.unwrap()).await.unwrap();
    assert_eq!(cache_size(reader), -256, "256 KiB");
    let writer = sqlx::query("PRAGMA cache_size").fetch_one(&mut *db.write().await.unwrap()).await.unwrap();
    assert_eq!(cache_size(writer), -256, "256 KiB");
    let unit = db.write_together(vec!["PRAGMA cache_size".to_owned()], |query| query, None).await.unwrap();
    assert_eq!(cache_size(unit.into_iter().next().unwrap()), -2000, "SQLite's default, 2,000 KiB");
    let direct = db.read_one("PRAGMA cache_size", |query| query).await.unwrap();
    assert_eq!(cache_size(direct), -256, "a direct read's connection: 256 KiB");
    db.close().await;
}

/// A push's unit (the first lane) is not held up by issuing work: a group holding one takes in
/// no more ordinary units, which commit in a transaction of their own after it.
#[tokio::test]
async fn a_group_with_a_push_takes_no_more_ordinary_units_on_sqlite() {
    use std::sync::atomic::Ordering;

    let db = chunk_table(&test_support::sqlite()).await;
    let counts = db.group_commit_counts().expect("SQLite commits units in groups");
    let statement =
        ["INSERT INTO test_pdf_chunk (unit_appid, order_id, seq, data) VALUES ('wxc', $1, 0, $2)".to_owned()];
    let writer = db.write().await.unwrap();
    let transactions_before = counts.transactions.load(Ordering::Relaxed);
    let mut units = Vec::new();
    for (order, first) in [("ordinary-1", false), ("ordinary-2", false), ("push", true)] {
        let (db, statement) = (db.clone(), statement.clone());
        let submitted = counts.units.load(Ordering::Relaxed);
        units.push(tokio::spawn(async move {
            let bind = |query: fiscalbill_common::db::Statement| query.bind(order).bind(vec![1_u8]);
            match first {
                true => db.write_together_first(statement.to_vec(), bind).await,
                false => db.write_together(statement.to_vec(), bind, None).await,
            }
        }));
        while counts.units.load(Ordering::Relaxed) == submitted {
            tokio::task::yield_now().await;
        }
    }
    drop(writer);
    for unit in units {
        unit.await.unwrap().unwrap();
    }
    for order in ["ordinary-1", "ordinary-2", "push"] {
        assert_eq!(rows_of(&db, order).await, 1, "{order}");
    }
    // The push with at most one ordinary unit, then the rest: never all three in one.
    assert_eq!(counts.transactions.load(Ordering::Relaxed) - transactions_before, 2);
    db.close().await;
}
