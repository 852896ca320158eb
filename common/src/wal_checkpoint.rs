//! Checkpoints of SQLite's WAL, off the writer.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages:
//! that commit, and every write queued behind it (a push's acknowledgement too), waits while
//! the pages are copied into the database file and both files are synced. Here the writer never
//! checkpoints (`wal_autocheckpoint = 0`); a task with a connection of its own copies the WAL
//! into the database file every [`INTERVAL`] while writes go on. Such a PASSIVE checkpoint never
//! waits and copies only the frames there when it starts, so under steady writes the WAL would
//! never be copied whole, and SQLite starts a WAL over from its beginning only once it is. When
//! the WAL holds more than [`RESTART_PAGES`], the task therefore copies the rest right after its
//! pass while holding the writer (the frames added during the pass: a few ms of writes), and
//! the next write starts the WAL over.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::{Mutex, watch};
use tokio::time::MissedTickBehavior;

/// How often the WAL is copied while something is written.
const INTERVAL: Duration = Duration::from_millis(100);
/// The WAL's length (in pages, 128 MiB of 4 KiB pages) past which it is started over.
const RESTART_PAGES: i64 = 32768;

/// Stops the task when dropped or told to.
#[derive(Debug)]
pub struct WalCheckpoints {
    stop: watch::Sender<bool>,
}

impl WalCheckpoints {
    /// Starts the task on the current runtime, with its own connection `conn` to the database
    /// that `writer` writes (held, never used, to keep writes out while the WAL is finished).
    pub fn start(writer: &Arc<Mutex<AnyConnection>>, conn: AnyConnection) -> Self {
        Self::start_with(writer, conn, RESTART_PAGES)
    }

    fn start_with(writer: &Arc<Mutex<AnyConnection>>, conn: AnyConnection, restart_pages: i64) -> Self {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(run(Arc::downgrade(writer), conn, restart_pages, stopped));
        Self { stop }
    }

    /// Ends the task (its connection closes) before the database is closed.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for WalCheckpoints {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(
    writer: Weak<Mutex<AnyConnection>>,
    mut conn: AnyConnection,
    restart_pages: i64,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut written_before, mut quiet_ticks) = (None, 0);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => break,
        }
        // No write transaction began since the tick before last (in this process: the WAL has
        // no other writer): nothing new to copy. One pass more after the last one began copies
        // what it committed after the pass before had begun. What a lone statement (not a
        // counted transaction) wrote waits for the next write.
        let written = crate::statement_counts::WRITE_TRANSACTIONS.get();
        quiet_ticks = if written_before == Some(written) { quiet_ticks + 1 } else { 0 };
        written_before = Some(written);
        if quiet_ticks > 1 {
            continue;
        }
        let Some(writer) = writer.upgrade() else { break };
        let copied = match checkpoint(&mut conn).await {
            // The pass copied the WAL as it was when it began; the writer went on meanwhile.
            Ok(pages) if pages > restart_pages => {
                let _no_writes = writer.lock().await;
                checkpoint(&mut conn).await
            }
            other => other,
        };
        if let Err(error) = copied {
            tracing::warn!(%error, "WAL checkpoint failed; the next one copies what it left");
        }
    }
    let _ = conn.close().await;
}

/// A PASSIVE checkpoint; gives back the WAL's length in pages when it began.
async fn checkpoint(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(conn).await?.try_get(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Executor;

    /// Under writes that never stop, the WAL is started over once past its bound (SQLite alone
    /// would start it over only once a checkpoint copies it whole, which such writes prevent),
    /// and what was written reaches the database file.
    #[tokio::test]
    async fn the_wal_stays_bounded_under_steady_writes() {
        sqlx::any::install_default_drivers();
        let config = crate::db::test_support::sqlite();
        let path = std::path::PathBuf::from(config.url.strip_prefix("sqlite://").unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let url = format!("{}?mode=rwc", config.url);
        let connect = || async {
            let mut conn = AnyConnection::connect(&url).await.unwrap();
            conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0")
                .await
                .unwrap();
            conn
        };
        let writer = Arc::new(Mutex::new(connect().await));
        writer.lock().await.execute("CREATE TABLE chunk (n INTEGER PRIMARY KEY, data BLOB)").await.unwrap();
        // A bound of 4 MiB; 96 MiB written in rows of 64 KiB, each its own transaction.
        let checkpoints = WalCheckpoints::start_with(&writer, connect().await, 1024);
        let wal = path.with_extension("db-wal");
        let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let (rows, row_bytes) = (1536_u64, 64 * 1024_u64);
        let mut longest_wal = 0;
        for n in 0..rows {
            let mut conn = writer.lock().await;
            crate::statement_counts::WRITE_TRANSACTIONS.inc();
            sqlx::query("INSERT INTO chunk (n, data) VALUES ($1, $2)")
                .bind(n as i64)
                .bind(vec![n as u8; row_bytes as usize])
                .execute(&mut *conn)
                .await
                .unwrap();
            drop(conn);
            longest_wal = longest_wal.max(size(&wal));
            // Writes that never pause for long (96 MiB in 2 to 3 s), as a busy service's: a
            // pause longer than a pass (10 ms did, on a fast machine) lets a pass copy the whole
            // WAL and SQLite start it over by itself, and the test could not tell.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(longest_wal > 0, "the database is in WAL mode");
        assert!(longest_wal < 24 << 20, "the WAL grew to {} MiB: never started over", longest_wal >> 20);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size(&path) < rows * row_bytes && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(size(&path) >= rows * row_bytes, "the database file has {} bytes", size(&path));
        checkpoints.stop();
    }
}
