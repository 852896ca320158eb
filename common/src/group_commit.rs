//! Group commit of write units on SQLite, on a thread of its own.
//!
//! Write units ([`crate::db::Db::write_together`]) queue for one thread that holds a SQLite
//! connection of its own and runs them itself. When several are waiting, it runs them in one
//! transaction: the pages they share (the last pages of the tables and indexes they append to,
//! the outbox's, the change log's) go to the WAL once per group instead of once per unit, and a
//! commit's own work (frame headers, the WAL index, its locks) is paid once. A caller hears back
//! after the commit that made its unit durable. Each unit is a SAVEPOINT of its own, so a unit
//! that fails is undone alone and the others commit; a unit alone in the queue is its own
//! transaction. Units that must not wait behind issuing work (WeChat's pushes) have a lane of
//! their own, taken first.
//!
//! Why a thread that runs the SQL itself (with `rusqlite`, over the same SQLite library as
//! sqlx's): sqlx's SQLite driver runs each query on the connection's own thread, so every unit
//! was a round trip between threads, about two context switches (BENCHMARKS.md, "where
//! collection-svc's context switches come from"). Here the thread that waits for units is the
//! one that runs them: a group of n units costs one wake-up of this thread, not n round trips.
//!
//! The thread writes only while it holds the writer of [`crate::db::Db`] (the sqlx connection
//! that transactions of several round trips, migrations and the WAL's checkpoints hold while
//! they write): SQLite lets one connection write at a time, and that lock keeps the turns.
//!
//! A caller that goes away while its unit waits or runs does not stop it: the thread finishes
//! the unit and its group, and the unit is either wholly written or not at all.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rusqlite::Connection;
use sqlx::AnyConnection;
use sqlx_core::any::{AnyArguments, AnyRow, AnyValueKind};
use tokio::sync::oneshot;

use crate::db::WRITER_PRAGMAS;
use crate::sqlite_rows::{run_statement, sql_error};

/// The most units in one transaction: bounds how long the first of a group waits for its commit
/// (units take 0.05 to 0.5 ms each).
const MAX_GROUP: usize = 16;

/// The handle of the group-commit thread; the thread ends when the handle goes, once it has
/// run what was queued.
pub struct GroupCommit {
    lanes: Arc<Lanes>,
    counts: Arc<GroupCounts>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("counts", &self.counts).finish_non_exhaustive()
    }
}

/// What the thread has done, since its start.
#[derive(Debug, Default)]
pub struct GroupCounts {
    /// Units handed to the thread.
    pub units: AtomicU64,
    /// Transactions the thread ran them in (a unit alone, or a group).
    pub transactions: AtomicU64,
}

type Rows = Vec<AnyRow>;
type Reply = oneshot::Sender<Result<Rows, sqlx::Error>>;

/// One write unit: its statements, with the arguments they share.
struct Unit {
    statements: Vec<String>,
    arguments: Vec<AnyValueKind>,
    reply: Reply,
    /// In the lane taken first.
    first: bool,
}

/// The units waiting, by lane, and the thread's wake-up.
#[derive(Default)]
struct Lanes {
    waiting: Mutex<Waiting>,
    arrived: Condvar,
}

#[derive(Default)]
struct Waiting {
    first: VecDeque<Unit>,
    ordinary: VecDeque<Unit>,
    /// The thread waits for a unit: the next one to arrive wakes it (only then, so that a busy
    /// thread costs its callers no system call).
    asleep: bool,
    /// The handle is gone: the thread ends once the lanes are empty.
    closed: bool,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.first.is_empty() && self.ordinary.is_empty()
    }
}

impl Lanes {
    /// The next unit waiting, if any; with `first_only`, of the first lane only.
    fn take(&self, first_only: bool) -> Option<Unit> {
        let mut waiting = self.waiting.lock().unwrap();
        match waiting.first.pop_front() {
            Some(unit) => Some(unit),
            None if first_only => None,
            None => waiting.ordinary.pop_front(),
        }
    }

    /// Waits until a unit is queued; false once the handle is gone and nothing is left.
    fn wait(&self) -> bool {
        let mut waiting = self.waiting.lock().unwrap();
        while waiting.is_empty() {
            if waiting.closed {
                return false;
            }
            waiting.asleep = true;
            waiting = self.arrived.wait(waiting).unwrap();
        }
        true
    }
}

impl GroupCommit {
    /// Opens the thread's connection to the SQLite file at `path` (which the writer has
    /// created and put in WAL mode) and starts the thread, which takes `writer` for each group.
    pub fn start(path: &Path, writer: Arc<tokio::sync::Mutex<AnyConnection>>) -> Result<Self, sqlx::Error> {
        // Set up as the writer is (`db.rs`); it keeps SQLite's page cache.
        let conn = crate::sqlite_rows::open(path, &[WRITER_PRAGMAS]).map_err(sql_error)?;
        let lanes = Arc::new(Lanes::default());
        let counts = Arc::new(GroupCounts::default());
        let (thread_lanes, thread_counts) = (lanes.clone(), counts.clone());
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || serve(conn, &writer, &thread_lanes, &thread_counts))
            .map_err(sqlx::Error::Io)?;
        Ok(Self { lanes, counts })
    }

    pub fn counts(&self) -> &GroupCounts {
        &self.counts
    }

    /// Runs a unit of `statements` (their arguments numbered across all of them, `$1` ...
    /// `$n`) and gives back the rows they return, once committed. `first`: in the lane taken
    /// before ordinary units.
    pub async fn run(
        &self,
        statements: Vec<String>,
        arguments: AnyArguments,
        first: bool,
    ) -> Result<Rows, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let unit = Unit { statements, arguments: arguments.values.0, reply, first };
        let wake = {
            let mut waiting = self.lanes.waiting.lock().unwrap();
            if waiting.closed {
                return Err(sqlx::Error::PoolClosed);
            }
            match first {
                true => waiting.first.push_back(unit),
                false => waiting.ordinary.push_back(unit),
            }
            std::mem::take(&mut waiting.asleep)
        };
        if wake {
            self.lanes.arrived.notify_one();
        }
        self.counts.units.fetch_add(1, Ordering::Relaxed);
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.lanes.waiting.lock().unwrap().closed = true;
        self.lanes.arrived.notify_one();
    }
}

fn serve(mut conn: Connection, writer: &tokio::sync::Mutex<AnyConnection>, lanes: &Lanes, counts: &GroupCounts) {
    let _close = CloseOnExit(lanes);
    while lanes.wait() {
        // Held while the group writes; taken before the group's units, so that those that
        // arrive meanwhile join it.
        let _writer = writer.blocking_lock();
        run_group(&mut conn, lanes, counts);
    }
}

/// Closes the lanes when the thread ends, by a panic too: the units queued, and any that come
/// later, get an error (their reply gone) rather than wait for a thread that is not there.
struct CloseOnExit<'a>(&'a Lanes);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let mut waiting = self.0.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.closed = true;
        waiting.first.clear();
        waiting.ordinary.clear();
    }
}

/// Runs the units waiting, up to [`MAX_GROUP`], in one transaction; once the group holds a unit
/// of the first lane, only more of those (so that it is committed as soon as none waits). Every
/// caller hears back once the group is over, a unit that failed too: its caller may read what
/// made it fail (another unit's row), which must be committed by then.
fn run_group(conn: &mut Connection, lanes: &Lanes, counts: &GroupCounts) {
    let Some(unit) = lanes.take(false) else { return };
    counts.transactions.fetch_add(1, Ordering::Relaxed);
    crate::statement_counts::WRITE_TRANSACTIONS.inc();
    // The hand-off to this thread, what a query to sqlx's own thread was.
    crate::statement_counts::QUERIES.inc();
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        let _ = unit.reply.send(Err(sql_error(error)));
        return;
    }
    let mut with_first = unit.first;
    let mut ran: Vec<(Reply, Result<Rows, sqlx::Error>)> = Vec::with_capacity(MAX_GROUP);
    let mut next = Some(unit);
    while let Some(unit) = next.take() {
        match run_unit(conn, &unit) {
            Ok(rows) => ran.push((unit.reply, Ok(rows))),
            // Undone alone; the others go on, and are committed without it.
            Err((error, true)) => ran.push((unit.reply, Err(error))),
            Err((error, false)) => {
                // The transaction is gone or in an unknown state (SQLite rolls back the whole
                // of it on some errors): nothing of the group is written.
                let _ = conn.execute_batch("ROLLBACK");
                ran.push((unit.reply, Err(error)));
                return answer(ran, Some("the group's transaction was rolled back"));
            }
        }
        if ran.len() < MAX_GROUP {
            next = lanes.take(with_first);
            with_first |= next.as_ref().is_some_and(|unit| unit.first);
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => answer(ran, None),
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            answer(ran, Some(&format!("COMMIT failed: {error}")));
        }
    }
}

/// Answers a group's callers once it is over: committed, each with what its unit gave; rolled
/// back (`rolled_back` says why), an error for each unit that had run, and its own error for
/// each that had failed.
fn answer(ran: Vec<(Reply, Result<Rows, sqlx::Error>)>, rolled_back: Option<&str>) {
    for (reply, result) in ran {
        let result = match (result, rolled_back) {
            (Ok(_), Some(why)) => Err(sqlx::Error::Protocol(format!("group commit: {why}"))),
            (result, _) => result,
        };
        let _ = reply.send(result);
    }
}

/// Runs one unit as a SAVEPOINT of the group's transaction; on failure, undoes what of it ran.
/// The error comes with whether the unit was undone alone, the transaction still open (false:
/// the transaction is gone or in an unknown state).
fn run_unit(conn: &mut Connection, unit: &Unit) -> Result<Rows, (sqlx::Error, bool)> {
    conn.execute_batch("SAVEPOINT unit").map_err(|error| (sql_error(error), false))?;
    let mut rows = Vec::new();
    // sqlx's numbering: `$n` and `?n` name an argument; a bare `?` takes the next one, counted
    // across the unit's statements.
    let mut bare = 0;
    let ran = unit
        .statements
        .iter()
        .try_for_each(|statement| run_statement(conn, statement, &unit.arguments, &mut bare, &mut rows, usize::MAX));
    match ran {
        Ok(()) => conn.execute_batch("RELEASE unit").map(|()| rows).map_err(|error| (sql_error(error), false)),
        Err(error) => {
            let undone = !conn.is_autocommit() && conn.execute_batch("ROLLBACK TO unit; RELEASE unit").is_ok();
            Err((error, undone))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that ends (a panic) leaves no caller waiting: the units queued get an error, and
    /// so does any unit run later.
    #[tokio::test]
    async fn a_thread_that_ends_leaves_no_unit_waiting() {
        let lanes = Arc::new(Lanes::default());
        let (reply, answer) = oneshot::channel();
        let unit = Unit { statements: vec!["SELECT 1".to_owned()], arguments: Vec::new(), reply, first: false };
        lanes.waiting.lock().unwrap().ordinary.push_back(unit);
        drop(CloseOnExit(&lanes));
        let answered = tokio::time::timeout(std::time::Duration::from_secs(10), answer).await;
        assert!(matches!(answered, Ok(Err(_))), "the queued unit's reply is gone");
        let handle = GroupCommit { lanes, counts: Arc::default() };
        let later = handle.run(vec!["SELECT 1".to_owned()], AnyArguments::default(), true).await;
        assert!(matches!(later, Err(sqlx::Error::PoolClosed)), "{:?}", later.err());
    }
}
