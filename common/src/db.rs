//! Storage bootstrap: sqlx `Any` pools on SQLite (the default: embedded, a file created on
//! first start) or PostgreSQL (for several replicas); the URL decides. Each service brings its
//! migrations, with SQL for both backends, applied in order at start-up under a lock.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions, Connection, Execute, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::group_commit::GroupCommit;
use crate::sqlite_reads::SqliteReads;
use crate::wal_checkpoint::WalCheckpoints;

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

/// The database connections of a service. Cheap to clone.
///
/// On SQLite the connections are the service's own, not a pool's: sqlx's pool tests a
/// connection with a ping (a round trip to the connection's thread) when it is taken and again
/// when it is given back, which tripled the hand-offs of every statement. An in-process SQLite
/// connection cannot go away, so there is nothing to test. Readers are a set of connections;
/// all writes go through one writer connection (SQLite lets one connection write at a time,
/// and the others would nap in its busy handler: 1 ms, 2 ms, 5 ms ... 100 ms). On PostgreSQL,
/// whose connections can break, sqlx's pool with its tests.
#[derive(Clone, Debug)]
pub struct Db {
    inner: Arc<Connections>,
}

#[derive(Debug)]
enum Connections {
    Sqlite(SqliteConnections),
    Postgres(AnyPool),
}

#[derive(Debug)]
struct SqliteConnections {
    readers: Arc<ReaderSet>,
    writer: Arc<Mutex<AnyConnection>>,
    /// The turn of ordinary write transactions: one at a time waits for (or holds) the
    /// writer, so that a write that must come first (a push's acknowledgement) never queues
    /// behind many of them.
    ordinary_turn: Arc<Mutex<()>>,
    /// Write units, committed in groups on the writer.
    groups: GroupCommit,
    /// Short reads, run by the task that asks for them ([`Db::read_rows`]).
    direct_reads: SqliteReads,
    /// The WAL copied into the database file off the writer.
    checkpoints: WalCheckpoints,
    acquire_timeout: Duration,
}

/// Idle reader connections, and a permit for each.
#[derive(Debug)]
struct ReaderSet {
    idle: std::sync::Mutex<Vec<AnyConnection>>,
    permits: Arc<Semaphore>,
}

/// A statement with its arguments bound (copied in), not yet run.
pub type Statement = sqlx::query::Query<'static, Any, sqlx::any::AnyArguments>;

/// Statements that follow a write unit in its transaction, each built (and its arguments
/// copied) when its turn comes.
pub type MoreStatements<'a> = Box<dyn Iterator<Item = Statement> + Send + 'a>;

/// A connection for one use (statements, not a transaction): derefs to the connection and goes
/// back when dropped.
pub struct Conn(ConnKind);

enum ConnKind {
    Reader { conn: Option<AnyConnection>, set: Arc<ReaderSet>, _permit: OwnedSemaphorePermit },
    Writer(OwnedMutexGuard<AnyConnection>),
    Pooled(PoolConnection<Any>),
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let ConnKind::Reader { conn, set, .. } = &mut self.0
            && let Some(conn) = conn.take()
        {
            // Back before the permit: the next holder of a permit always finds one idle.
            set.idle.lock().unwrap().push(conn);
        }
    }
}

impl Deref for Conn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            ConnKind::Reader { conn, .. } => conn.as_ref().expect("held until dropped"),
            ConnKind::Writer(conn) => conn,
            ConnKind::Pooled(conn) => conn,
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            ConnKind::Reader { conn, .. } => conn.as_mut().expect("held until dropped"),
            ConnKind::Writer(conn) => conn,
            ConnKind::Pooled(conn) => conn,
        }
    }
}

/// A write transaction; derefs to its connection like sqlx's `Transaction`. Dropped without
/// `commit`, it rolls back.
pub struct WriteTx(TxKind);

enum TxKind {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Any>),
}

/// On SQLite, the writer held from `BEGIN IMMEDIATE` to `COMMIT` (None once finished), and the
/// turn of an ordinary transaction, given up after the writer.
struct SqliteTx {
    writer: Option<OwnedMutexGuard<AnyConnection>>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl SqliteTx {
    /// COMMIT or ROLLBACK; a COMMIT that fails is rolled back.
    async fn finish(mut self, statement: &'static str) -> Result<(), sqlx::Error> {
        let mut conn = self.writer.take().expect("an open transaction");
        let finished = conn.execute(statement).await.map(|_| ());
        if finished.is_err() {
            rollback_in_background(conn);
        }
        finished
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // Dropped open (an error returned early, or the caller went away): roll back on the
        // writer before anyone else gets it. sqlx's Transaction does the same for PostgreSQL.
        if let Some(conn) = self.writer.take() {
            rollback_in_background(conn);
        }
    }
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.0 {
            TxKind::Sqlite(tx) => tx.finish("COMMIT").await,
            TxKind::Postgres(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.0 {
            TxKind::Sqlite(tx) => tx.finish("ROLLBACK").await,
            TxKind::Postgres(tx) => tx.rollback().await,
        }
    }
}

/// Rolls back the writer's open transaction in a task that holds the writer meanwhile (a
/// rollback of no transaction fails harmlessly).
fn rollback_in_background(mut conn: OwnedMutexGuard<AnyConnection>) {
    tokio::spawn(async move {
        if let Err(error) = conn.execute("ROLLBACK").await {
            tracing::debug!(%error, "rollback after an unfinished transaction");
        }
    });
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            TxKind::Sqlite(tx) => tx.writer.as_ref().expect("an open transaction"),
            TxKind::Postgres(tx) => tx,
        }
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            TxKind::Sqlite(tx) => tx.writer.as_mut().expect("an open transaction"),
            TxKind::Postgres(tx) => tx,
        }
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
        let acquire_timeout = Duration::from_millis(config.acquire_timeout_ms);
        let connections = match backend {
            Backend::Sqlite => {
                let options: AnyConnectOptions = url.parse()?;
                let mut writer = sqlite_connection(&options).await?;
                writer.execute(WRITER_PRAGMAS).await?;
                // A reader's page cache (below): most writes are the group-commit thread's,
                // whose every commit empties this connection's cache, and a large PDF written
                // here filled 2 MiB.
                writer.execute(SMALL_PAGE_CACHE).await?;
                let checkpointer = sqlite_connection(&options).await?;
                let mut idle = Vec::new();
                for _ in 0..config.max_connections.max(1) {
                    let mut reader = sqlite_connection(&options).await?;
                    // A reader's page cache is emptied whenever it begins a transaction after a
                    // write, so under writes it serves one statement only: 256 KiB (64 pages)
                    // instead of SQLite's 2 MiB, which a PDF read back filled and kept.
                    reader.execute(SMALL_PAGE_CACHE).await?;
                    idle.push(reader);
                }
                let readers = ReaderSet { permits: Arc::new(Semaphore::new(idle.len())), idle: idle.into() };
                // The file as SQLite opened it, for the connections of our own (the group-commit
                // thread's, the direct reads').
                let file: String = sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                    .fetch_one(&mut writer)
                    .await?;
                let writer = Arc::new(Mutex::new(writer));
                Connections::Sqlite(SqliteConnections {
                    readers: Arc::new(readers),
                    groups: GroupCommit::start(Path::new(&file), writer.clone())?,
                    direct_reads: SqliteReads::open(Path::new(&file))?,
                    checkpoints: WalCheckpoints::start(&writer, checkpointer),
                    writer,
                    ordinary_turn: Arc::default(),
                    acquire_timeout,
                })
            }
            Backend::Postgres => {
                let set_path = format!("SET search_path TO \"{schema}\"");
                let pool = AnyPoolOptions::new()
                    .max_connections(config.max_connections.max(1))
                    .acquire_timeout(acquire_timeout)
                    .after_connect(move |conn, _| {
                        let set_path = set_path.clone();
                        Box::pin(async move {
                            conn.execute(AssertSqlSafe(set_path)).await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                Connections::Postgres(pool)
            }
        };
        Ok(Db { inner: Arc::new(connections) })
    }

    /// A connection for reads.
    pub async fn read(&self) -> Result<Conn, sqlx::Error> {
        match &*self.inner {
            Connections::Sqlite(sqlite) => {
                let permits = sqlite.readers.permits.clone();
                let permit = tokio::time::timeout(sqlite.acquire_timeout, permits.acquire_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?
                    .map_err(|_| sqlx::Error::PoolClosed)?;
                let conn = sqlite.readers.idle.lock().unwrap().pop().ok_or(sqlx::Error::PoolClosed)?;
                Ok(Conn(ConnKind::Reader { conn: Some(conn), set: sqlite.readers.clone(), _permit: permit }))
            }
            Connections::Postgres(pool) => Ok(Conn(ConnKind::Pooled(pool.acquire().await?))),
        }
    }

    /// Runs one statement that reads a few rows (by key, or up to a small LIMIT) and gives back
    /// its rows, its arguments bound by `bind` (`$1` ... `$n`). On SQLite it runs here, on the
    /// asking thread ([`crate::sqlite_reads`]): no round trip to a connection's thread. A read
    /// that can be long (a list of any length, a PDF) takes a connection of [`Db::read`]
    /// instead, whose reads run off the asking thread. On PostgreSQL, a pooled connection.
    pub async fn read_rows(
        &self,
        sql: &str,
        bind: impl FnOnce(Statement) -> Statement,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        self.read_up_to(sql, bind, usize::MAX).await
    }

    /// The first row of a read (see [`Db::read_rows`]), if any.
    pub async fn read_row(
        &self,
        sql: &str,
        bind: impl FnOnce(Statement) -> Statement,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        Ok(self.read_up_to(sql, bind, 1).await?.pop())
    }

    /// The one row a read gives (see [`Db::read_rows`]); `RowNotFound` if none.
    pub async fn read_one(&self, sql: &str, bind: impl FnOnce(Statement) -> Statement) -> Result<AnyRow, sqlx::Error> {
        self.read_row(sql, bind).await?.ok_or(sqlx::Error::RowNotFound)
    }

    async fn read_up_to(
        &self,
        sql: &str,
        bind: impl FnOnce(Statement) -> Statement,
        max_rows: usize,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        match &*self.inner {
            Connections::Sqlite(sqlite) => {
                // sqlx never sees the statement: counted here (a statement, not a query: there
                // is no round trip).
                crate::statement_counts::count(sql);
                sqlite.direct_reads.read(sql, &arguments_of(bind)?.values.0, max_rows)
            }
            Connections::Postgres(pool) => {
                let query = bind(sqlx::query(AssertSqlSafe(sql.to_owned())));
                match max_rows {
                    1 => Ok(query.fetch_optional(pool).await?.into_iter().collect()),
                    _ => query.fetch_all(pool).await,
                }
            }
        }
    }

    /// A connection for statements that write, each a transaction of its own (for several
    /// statements, see [`Db::begin_write`]). On SQLite, the one writer.
    pub async fn write(&self) -> Result<Conn, sqlx::Error> {
        match &*self.inner {
            Connections::Sqlite(sqlite) => Ok(Conn(ConnKind::Writer(sqlite.lock_writer().await?))),
            Connections::Postgres(pool) => Ok(Conn(ConnKind::Pooled(pool.acquire().await?))),
        }
    }

    /// On SQLite, what the group-commit thread has done: write units, and the transactions they
    /// ran in.
    pub fn group_commit_counts(&self) -> Option<&crate::group_commit::GroupCounts> {
        match &*self.inner {
            Connections::Sqlite(sqlite) => Some(sqlite.groups.counts()),
            Connections::Postgres(_) => None,
        }
    }

    pub fn backend(&self) -> Backend {
        match &*self.inner {
            Connections::Sqlite(_) => Backend::Sqlite,
            Connections::Postgres(_) => Backend::Postgres,
        }
    }

    /// Picks the statement written for this backend.
    pub fn sql(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self.backend() {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }

    /// A transaction that will write. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so that it never fails with SQLITE_BUSY on upgrade, and waits for its turn
    /// among ordinary transactions first.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        self.begin(true).await
    }

    /// A write transaction that goes before ordinary ones: on SQLite it queues for the writer
    /// directly, behind at most one ordinary transaction. For what a caller waits on under load
    /// (WeChat's push, acknowledged once it is durable).
    pub async fn begin_write_first(&self) -> Result<WriteTx, sqlx::Error> {
        self.begin(false).await
    }

    async fn begin(&self, ordinary: bool) -> Result<WriteTx, sqlx::Error> {
        crate::statement_counts::WRITE_TRANSACTIONS.inc();
        match &*self.inner {
            Connections::Sqlite(sqlite) => {
                // Held by the transaction before BEGIN is sent: a failed or abandoned BEGIN
                // is rolled back like any unfinished transaction.
                let mut tx = WriteTx(TxKind::Sqlite(sqlite.take_writer(ordinary).await?));
                tx.execute("BEGIN IMMEDIATE").await?;
                Ok(tx)
            }
            Connections::Postgres(pool) => Ok(WriteTx(TxKind::Postgres(begin_postgres(pool).await?))),
        }
    }

    /// Runs a write unit: statements that write together and need nothing from one another's
    /// results, as one transaction in one round trip to the database instead of one per
    /// statement and two more for BEGIN and COMMIT. Their arguments are numbered across all of
    /// them (`$1` ... `$n`; any statement may use any of them), bound by `bind`. `more` are
    /// statements of their own, run one after the other in the same transaction, each built
    /// when its turn comes (the chunks of a large PDF: bound all at once, they would be copied
    /// all at once). Gives back the rows its statements return (`RETURNING`; on PostgreSQL only
    /// the last statement's rows come out of a `WITH`), once the unit is committed. The
    /// statements may differ by backend: on SQLite, a statement can test what the one before it
    /// changed with `changes()`; on PostgreSQL, one statement with its own `WITH` can do the
    /// same.
    ///
    /// On SQLite a unit is `SAVEPOINT unit; s1; ...; sn; RELEASE unit`, run by the group-commit
    /// thread ([`crate::group_commit`]) on a connection of its own while it holds the writer; it
    /// runs units waiting together in one transaction, and a failure undoes the unit alone. A
    /// unit with `more` runs as `BEGIN IMMEDIATE; s1; ...; sn`, its `more`, then COMMIT, on the
    /// writer in its turn among ordinary transactions; a failure or an abandoned call rolls back
    /// what ran. On PostgreSQL the unit is one statement, the first ones in `WITH`.
    pub async fn write_together(
        &self,
        statements: Vec<String>,
        bind: impl FnOnce(Statement) -> Statement,
        more: Option<MoreStatements<'_>>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        self.run_unit(statements, bind, more, true).await
    }

    /// A write unit (see [`Db::write_together`]) that goes before ordinary ones, as
    /// [`Db::begin_write_first`] does.
    pub async fn write_together_first(
        &self,
        statements: Vec<String>,
        bind: impl FnOnce(Statement) -> Statement,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        self.run_unit(statements, bind, None, false).await
    }

    async fn run_unit(
        &self,
        statements: Vec<String>,
        bind: impl FnOnce(Statement) -> Statement,
        more: Option<MoreStatements<'_>>,
        ordinary: bool,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        if self.backend() == Backend::Sqlite {
            // sqlx never reports a unit's statements one by one (the group-commit thread runs
            // them itself; a unit with `more` is one batch, which starts with BEGIN): they are
            // counted here.
            for statement in &statements {
                crate::statement_counts::count(statement);
            }
        }
        match (&*self.inner, more) {
            (Connections::Sqlite(sqlite), None) => {
                // The group-commit thread counts the transactions, and runs the statements in
                // their SAVEPOINT: only their arguments are bound here.
                sqlite.groups.run(statements, arguments_of(bind)?, !ordinary).await
            }
            (Connections::Sqlite(sqlite), Some(more)) => {
                crate::statement_counts::WRITE_TRANSACTIONS.inc();
                let query = bind(sqlx::query(AssertSqlSafe(format!("BEGIN IMMEDIATE; {}", statements.join("; ")))));
                let mut tx = sqlite.take_writer(ordinary).await?;
                let conn = tx.writer.as_mut().expect("just taken");
                let ran = async {
                    let rows = query.fetch_all(&mut **conn).await?;
                    for statement in more {
                        statement.execute(&mut **conn).await?;
                    }
                    Ok::<_, sqlx::Error>(rows)
                }
                .await;
                match ran {
                    Err(error) => {
                        let _ = tx.finish("ROLLBACK").await;
                        Err(error)
                    }
                    Ok(rows) => tx.finish("COMMIT").await.map(|()| rows),
                }
            }
            (Connections::Postgres(pool), more) => {
                crate::statement_counts::WRITE_TRANSACTIONS.inc();
                let query = bind(sqlx::query(AssertSqlSafe(postgres_unit_sql(&statements))));
                match more {
                    None => query.fetch_all(pool).await,
                    Some(more) => {
                        let mut tx = begin_postgres(pool).await?;
                        let rows = query.fetch_all(&mut *tx).await?;
                        for statement in more {
                            statement.execute(&mut *tx).await?;
                        }
                        tx.commit().await.map(|()| rows)
                    }
                }
            }
        }
    }

    /// Applies the migrations not yet applied, in order, each in its own transaction. On
    /// PostgreSQL an advisory lock keeps two replicas from migrating at once.
    pub async fn migrate(&self, sets: &[&[Migration]], schema: &str) -> Result<(), DbError> {
        let mut conn = self.write().await?;
        if self.backend() == Backend::Postgres {
            conn.execute(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))).await?;
            conn.execute("SELECT pg_advisory_lock(7271031)").await?;
        }
        let result = self.apply(&mut conn, sets).await;
        if self.backend() == Backend::Postgres {
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
            let begin = match self.backend() {
                Backend::Sqlite => "BEGIN IMMEDIATE",
                Backend::Postgres => "BEGIN",
            };
            conn.execute(begin).await.map_err(fail)?;
            let sql = match (self.backend(), migration.postgres_sql) {
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
        sqlx::query("SELECT 1").execute(&mut *self.read().await?).await.map(|_| ())
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

    /// Closes the connections. On SQLite: the idle readers (one in use closes when dropped),
    /// and the WAL is folded into the database file through the writer, which stays open until
    /// the last handle of this `Db` goes.
    pub async fn close(&self) {
        match &*self.inner {
            Connections::Sqlite(sqlite) => {
                sqlite.readers.permits.close();
                sqlite.checkpoints.stop();
                let idle: Vec<AnyConnection> = std::mem::take(&mut *sqlite.readers.idle.lock().unwrap());
                for conn in idle {
                    let _ = conn.close().await;
                }
                let mut writer = sqlite.writer.lock().await;
                let _ = writer.execute("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE)").await;
            }
            Connections::Postgres(pool) => pool.close().await,
        }
    }
}

impl SqliteConnections {
    /// The writer for a transaction, after the turn among ordinary transactions when
    /// `ordinary` (a push's goes straight to the writer).
    async fn take_writer(&self, ordinary: bool) -> Result<SqliteTx, sqlx::Error> {
        let turn = match ordinary {
            true => Some(self.ordinary_turn.clone().lock_owned().await),
            false => None,
        };
        Ok(SqliteTx { writer: Some(self.lock_writer().await?), _turn: turn })
    }

    async fn lock_writer(&self) -> Result<OwnedMutexGuard<AnyConnection>, sqlx::Error> {
        tokio::time::timeout(self.acquire_timeout, self.writer.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)
    }
}

/// A transaction on PostgreSQL. sqlx sends its BEGIN without the per-statement event the
/// queries are counted from (its COMMIT and ROLLBACK have one): counted here.
async fn begin_postgres(pool: &AnyPool) -> Result<Transaction<'static, Any>, sqlx::Error> {
    let tx = pool.begin().await?;
    crate::statement_counts::QUERIES.inc();
    Ok(tx)
}

/// The arguments `bind` binds, for SQL that our own SQLite connections run (the group-commit
/// thread's, the direct reads'): sqlx encodes them, as for its own queries.
fn arguments_of(bind: impl FnOnce(Statement) -> Statement) -> Result<AnyArguments, sqlx::Error> {
    let mut bound = bind(sqlx::query(AssertSqlSafe(String::new())));
    Ok(bound.take_arguments().map_err(sqlx::Error::Encode)?.unwrap_or_default())
}

/// A write unit on PostgreSQL: one statement, the first ones in `WITH`.
fn postgres_unit_sql(statements: &[String]) -> String {
    let (last, first) = statements.split_last().expect("at least one statement");
    let parts: Vec<String> = first.iter().enumerate().map(|(i, statement)| format!("w{i} AS ({statement})")).collect();
    match parts.is_empty() {
        true => last.clone(),
        false => format!("WITH {} {last}", parts.join(", ")),
    }
}

/// How every SQLite connection of a service is set up. WAL: readers never block the writer.
/// NORMAL: a commit survives a crash of the process (not necessarily of the machine).
/// temp_store MEMORY: the statement journal, which keeps what each write unit's SAVEPOINT would
/// roll back, stays in memory instead of spilling to a temporary file past 64 KiB (a unit holds
/// a PDF chunk of up to 256 KiB); it is gone at each RELEASE, and its content is never needed
/// after a crash.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;";

/// What a connection that writes adds (the writer, the group-commit thread's): its commits never
/// checkpoint, see [`WalCheckpoints`].
pub(crate) const WRITER_PRAGMAS: &str = "PRAGMA wal_autocheckpoint = 0";

/// A page cache of 256 KiB instead of SQLite's 2 MiB, for connections whose cache another
/// connection's commits keep emptying (see [`Db::connect`]).
pub(crate) const SMALL_PAGE_CACHE: &str = "PRAGMA cache_size = -256";

/// One SQLite connection of the service's own.
async fn sqlite_connection(options: &AnyConnectOptions) -> Result<AnyConnection, sqlx::Error> {
    let mut conn = options.connect().await?;
    conn.execute(SQLITE_PRAGMAS).await?;
    Ok(conn)
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
