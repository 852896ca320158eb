//! Storage bootstrap: sqlx `Any` pools on SQLite (the default: embedded, a file created on
//! first start) or PostgreSQL (for several replicas); the URL decides. Each service brings its
//! migrations, with SQL for both backends, applied in order at start-up under a lock.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://var/bureau.db` (created if missing) or `postgres://user@host:5432/db`.
    pub url: String,
    pub max_connections: u32,
    /// PostgreSQL schema holding this service's tables; default: the service's name.
    pub schema: Option<String>,
    /// How long a request waits for a free connection.
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), max_connections: 8, schema: None, acquire_timeout_ms: 10_000 }
    }
}

/// One migration of one set (`common`, `bureau`, `collection`). The SQL is written once for
/// both backends where it can be (the only type that differs, `BLOB`, becomes `BYTEA` on
/// PostgreSQL); where the dialects part (triggers), `postgres_sql` is PostgreSQL's own.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub set: &'static str,
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    pub postgres_sql: Option<&'static str>,
}

/// The tables of [`crate::sql_credentials::SqlCredentialStore`].
pub const COMMON_MIGRATIONS: &[Migration] = &[Migration {
    set: "common",
    version: 1,
    name: "wechat credentials",
    sql: include_str!("../migrations/common/0001_credentials.sql"),
    postgres_sql: None,
}];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL must start with sqlite: or postgres:")]
    UnsupportedUrl,
    #[error("an in-memory SQLite database is not supported: each pooled connection would see its own; use a file")]
    MemoryDatabase,
    #[error("PostgreSQL schema name {0:?} must match [a-z_][a-z0-9_]*")]
    BadSchema(String),
    #[error("cannot create the database directory {0}: {1}")]
    Directory(String, std::io::Error),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration {set}/{version} ({name}) failed: {source}")]
    Migration { set: &'static str, version: i64, name: &'static str, source: sqlx::Error },
}

/// Connection pools and the backend behind them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    writer: AnyPool,
    backend: Backend,
    /// On SQLite, the turn of ordinary write transactions: one at a time waits for (or holds)
    /// the writer, so that a write that must come first (a push's acknowledgement) never
    /// queues behind many of them.
    ordinary_turn: Arc<Mutex<()>>,
}

/// A write transaction; derefs to its connection like sqlx's `Transaction`. Dropped without
/// `commit`, it rolls back.
pub struct WriteTx {
    // Dropped first: the connection goes back before the turn passes on.
    tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Db {
    /// Connects (creating a SQLite file and its directory when needed).
    pub async fn connect(config: &DatabaseConfig, default_schema: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let url = config.url.trim();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            (Backend::Sqlite, sqlite_url(path)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let schema = config.schema.clone().unwrap_or_else(|| default_schema.to_owned());
        if !valid_schema(&schema) {
            return Err(DbError::BadSchema(schema));
        }
        let options = |connections: u32| {
            let options = AnyPoolOptions::new()
                .max_connections(connections.max(1))
                .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms));
            match backend {
                Backend::Sqlite => options.after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL: readers never block the writer. NORMAL: a commit survives a crash
                        // of the process (not necessarily of the machine).
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;").await?;
                        Ok(())
                    })
                }),
                Backend::Postgres => {
                    let set_path = format!("SET search_path TO \"{schema}\"");
                    options.after_connect(move |conn, _| {
                        let set_path = set_path.clone();
                        Box::pin(async move {
                            conn.execute(AssertSqlSafe(set_path)).await?;
                            Ok(())
                        })
                    })
                }
            }
        };
        let pool = options(config.max_connections).connect(&url).await?;
        let writer = match backend {
            // SQLite lets one connection write at a time; the others would nap in its busy
            // handler (1 ms, 2 ms, 5 ms ... 100 ms). Writers queue for this one connection instead.
            Backend::Sqlite => options(1).connect(&url).await?,
            Backend::Postgres => pool.clone(),
        };
        Ok(Db { pool, writer, backend, ordinary_turn: Arc::default() })
    }

    /// For reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// For statements that write (and transactions, see [`Db::begin_write`]).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Picks the statement written for this backend.
    pub fn sql(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self.backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }

    /// A transaction that will write. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so two writers queue instead of failing with SQLITE_BUSY on upgrade, and
    /// waits for its turn among ordinary transactions first.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = match self.backend {
            Backend::Sqlite => Some(self.ordinary_turn.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        Ok(WriteTx { tx: self.begin_on_writer().await?, _turn: turn })
    }

    /// A write transaction that goes before ordinary ones: on SQLite it queues for the writer
    /// directly, behind at most one ordinary transaction. For what a caller waits on under load
    /// (WeChat's push, acknowledged once it is durable).
    pub async fn begin_write_first(&self) -> Result<WriteTx, sqlx::Error> {
        Ok(WriteTx { tx: self.begin_on_writer().await?, _turn: None })
    }

    async fn begin_on_writer(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        crate::statement_counts::WRITE_TRANSACTIONS.inc();
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
    }

    /// Applies the migrations not yet applied, in order, each in its own transaction. On
    /// PostgreSQL an advisory lock keeps two replicas from migrating at once.
    pub async fn migrate(&self, sets: &[&[Migration]], schema: &str) -> Result<(), DbError> {
        let mut conn = self.writer.acquire().await?;
        if self.backend == Backend::Postgres {
            conn.execute(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))).await?;
            conn.execute("SELECT pg_advisory_lock(7271031)").await?;
        }
        let result = self.apply(&mut conn, sets).await;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7271031)").await?;
        }
        result
    }

    async fn apply(&self, conn: &mut sqlx::AnyConnection, sets: &[&[Migration]]) -> Result<(), DbError> {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration (
                migration_set TEXT NOT NULL,
                version BIGINT NOT NULL,
                name TEXT NOT NULL,
                applied_at BIGINT NOT NULL,
                PRIMARY KEY (migration_set, version))",
        )
        .await?;
        for migration in sets.iter().flat_map(|set| set.iter()) {
            let applied = sqlx::query("SELECT 1 FROM schema_migration WHERE migration_set = $1 AND version = $2")
                .bind(migration.set)
                .bind(migration.version)
                .fetch_optional(&mut *conn)
                .await?;
            if applied.is_some() {
                continue;
            }
            let fail = |source| DbError::Migration {
                set: migration.set,
                version: migration.version,
                name: migration.name,
                source,
            };
            let begin = match self.backend {
                Backend::Sqlite => "BEGIN IMMEDIATE",
                Backend::Postgres => "BEGIN",
            };
            conn.execute(begin).await.map_err(fail)?;
            let sql = match (self.backend, migration.postgres_sql) {
                (Backend::Sqlite, _) => migration.sql.to_owned(),
                (Backend::Postgres, Some(sql)) => sql.to_owned(),
                (Backend::Postgres, None) => migration.sql.replace(" BLOB", " BYTEA"),
            };
            let applied = async {
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await?;
                sqlx::query(
                    "INSERT INTO schema_migration (migration_set, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(migration.set)
                .bind(migration.version)
                .bind(migration.name)
                .bind(wechat::clock::unix_now())
                .execute(&mut *conn)
                .await
            }
            .await;
            match applied {
                Ok(_) => conn.execute("COMMIT").await.map_err(fail)?,
                Err(error) => {
                    let _ = conn.execute("ROLLBACK").await;
                    return Err(fail(error));
                }
            };
            tracing::info!(
                set = migration.set,
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
        }
        Ok(())
    }

    /// A cheap query proving the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Connects and migrates, retrying every 2 s until the database answers (a service starts
    /// before its database and reports NOT_SERVING meanwhile).
    pub async fn connect_until_ready(config: &DatabaseConfig, default_schema: &str, sets: &[&[Migration]]) -> Db {
        let schema = config.schema.clone().unwrap_or_else(|| default_schema.to_owned());
        loop {
            let attempt = async {
                let db = Db::connect(config, default_schema).await?;
                db.migrate(sets, &schema).await?;
                Ok::<Db, DbError>(db)
            };
            match attempt.await {
                Ok(db) => return db,
                Err(error) => {
                    tracing::error!(%error, "database not ready; retrying in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// `var/x.db` → `sqlite://var/x.db?mode=rwc`, creating `var/`.
fn sqlite_url(path: &str) -> Result<String, DbError> {
    let (file, query) = path.split_once('?').unwrap_or((path, ""));
    if file == ":memory:" || query.contains("mode=memory") {
        return Err(DbError::MemoryDatabase);
    }
    if let Some(parent) = Path::new(file).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DbError::Directory(parent.display().to_string(), e))?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{file}?{query}"))
}

fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63
}

/// An SQL list of fixed names (`'accepted', 'pdf_uploaded'`): the "from" states a domain rule
/// allows, written into the statement as literals so that the planner can match partial indexes
/// on them. Only names the code itself defines go here (checked: letters, digits, `_`). An empty
/// set gives `NULL`, which matches nothing.
pub fn sql_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names
        .into_iter()
        .map(|name| {
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "not a plain name: {name:?}"
            );
            format!("'{name}'")
        })
        .collect();
    if quoted.is_empty() { "NULL".to_owned() } else { quoted.join(", ") }
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        assert!(matches!(sqlite_url(":memory:"), Err(DbError::MemoryDatabase)));
        let dir = std::env::temp_dir().join(format!("fiscalbill-db-{}", std::process::id()));
        let file = dir.join("sub/x.db");
        assert_eq!(sqlite_url(file.to_str().unwrap()).unwrap(), format!("sqlite://{}?mode=rwc", file.display()));
        assert!(dir.join("sub").is_dir());
        assert_eq!(sqlite_url("a.db?mode=ro").unwrap(), "sqlite://a.db?mode=ro");
    }

    #[test]
    fn name_lists_are_quoted_literals() {
        assert_eq!(sql_list(["pending", "issue_failed"]), "'pending', 'issue_failed'");
        assert_eq!(sql_list([]), "NULL");
        assert!(std::panic::catch_unwind(|| sql_list(["x'; DROP TABLE bill; --"])).is_err());
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema("bureau") && valid_schema("_x1"));
        assert!(!valid_schema("Bureau") && !valid_schema("a;drop") && !valid_schema("") && !valid_schema("1a"));
    }
}

/// Databases for tests: a fresh SQLite file, or a fresh schema in the PostgreSQL named by
/// `FISCALBILL_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Tests
/// that need PostgreSQL fail when it is unreachable: they never skip.
pub mod test_support {
    use super::DatabaseConfig;

    pub const POSTGRES_URL_VAR: &str = "FISCALBILL_TEST_POSTGRES_URL";

    fn unique(prefix: &str) -> String {
        format!("{prefix}_{}_{}", std::process::id(), hex::encode(rand::random::<[u8; 6]>()))
    }

    pub fn sqlite() -> DatabaseConfig {
        let path = std::env::temp_dir().join("fiscalbill-tests").join(format!("{}.db", unique("db")));
        DatabaseConfig { url: format!("sqlite://{}", path.display()), ..DatabaseConfig::default() }
    }

    pub fn postgres() -> DatabaseConfig {
        let url =
            std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        DatabaseConfig { url, schema: Some(unique("t")), max_connections: 4, ..DatabaseConfig::default() }
    }

    /// Both backends, for tests that must pass on each.
    pub fn both() -> [DatabaseConfig; 2] {
        [sqlite(), postgres()]
    }
}
