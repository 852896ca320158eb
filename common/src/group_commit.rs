//! Group commit of write units on SQLite.
//!
//! Write units ([`crate::db::Db::write_together`]) queue for one task that runs them on the
//! writer connection. When several are waiting, it runs them in one transaction: the pages
//! they share (the last pages of the tables and indexes they append to, the outbox's, the
//! change log's) go to the WAL once per group instead of once per unit, and a commit's own
//! work (frame headers, the WAL index, its locks) is paid once. A caller hears back after the
//! commit that made its unit durable. Each unit is a SAVEPOINT of its own, so a unit that fails
//! is undone alone and the others commit; a unit alone in the queue is its own transaction, as
//! before. Units that must not wait behind issuing work (WeChat's pushes) have a lane of their
//! own, taken first.
//!
//! A caller that goes away while its unit waits or runs does not stop it: the task finishes the
//! unit and its group, and the unit is either wholly written or not at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Executor};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::Statement;

/// The most units in one transaction: bounds how long the first of a group waits for its commit
/// (units take 0.1 to 0.5 ms each on the writer).
const MAX_GROUP: usize = 16;

/// The handle of the group-commit task; the task ends when the last handle goes.
#[derive(Debug)]
pub struct GroupCommit {
    first: mpsc::UnboundedSender<Unit>,
    ordinary: mpsc::UnboundedSender<Unit>,
    counts: Arc<GroupCounts>,
}

/// What the task has done, since its start.
#[derive(Debug, Default)]
pub struct GroupCounts {
    /// Units handed to the task.
    pub units: AtomicU64,
    /// Transactions the task ran them in (a unit alone, or a group).
    pub transactions: AtomicU64,
}

type Reply = oneshot::Sender<Result<Vec<AnyRow>, sqlx::Error>>;

/// One write unit: a batch `SAVEPOINT unit; ...; RELEASE unit` with its arguments bound.
struct Unit {
    query: Statement,
    reply: Reply,
    /// In the lane taken first.
    first: bool,
}

/// How a unit's batch is written: its statements between the SAVEPOINT that makes them one
/// unit inside a group (or one transaction alone) and its RELEASE.
pub fn unit_sql(statements: &[String]) -> String {
    format!("SAVEPOINT unit; {}; RELEASE unit", statements.join("; "))
}

impl GroupCommit {
    /// Starts the task on the current runtime; it takes the writer (shared with the rest of
    /// [`crate::db::Db`], which uses it for statements outside units) for each group.
    pub fn start(writer: Arc<Mutex<AnyConnection>>) -> Self {
        let (first, first_queue) = mpsc::unbounded_channel();
        let (ordinary, ordinary_queue) = mpsc::unbounded_channel();
        let counts = Arc::new(GroupCounts::default());
        let queues = Queues { first: first_queue, ordinary: ordinary_queue };
        tokio::spawn(serve(writer, queues, counts.clone()));
        Self { first, ordinary, counts }
    }

    pub fn counts(&self) -> &GroupCounts {
        &self.counts
    }

    /// Runs a unit of [`unit_sql`] and gives back its rows once committed. `first`: in the
    /// lane taken before ordinary units.
    pub async fn run(&self, query: Statement, first: bool) -> Result<Vec<AnyRow>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let lane = if first { &self.first } else { &self.ordinary };
        lane.send(Unit { query, reply, first }).map_err(|_| sqlx::Error::PoolClosed)?;
        self.counts.units.fetch_add(1, Ordering::Relaxed);
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

struct Queues {
    first: mpsc::UnboundedReceiver<Unit>,
    ordinary: mpsc::UnboundedReceiver<Unit>,
}

impl Queues {
    /// The next unit, waiting for one; None once every handle is gone.
    async fn next(&mut self) -> Option<Unit> {
        tokio::select! {
            biased;
            Some(unit) = self.first.recv() => Some(unit),
            Some(unit) = self.ordinary.recv() => Some(unit),
            else => None,
        }
    }

    /// The next unit already waiting, if any; with `first_only`, of the first lane only.
    fn waiting(&mut self, first_only: bool) -> Option<Unit> {
        match self.first.try_recv() {
            Ok(unit) => Some(unit),
            Err(_) if first_only => None,
            Err(_) => self.ordinary.try_recv().ok(),
        }
    }
}

async fn serve(writer: Arc<Mutex<AnyConnection>>, mut queues: Queues, counts: Arc<GroupCounts>) {
    while let Some(unit) = queues.next().await {
        let mut conn = writer.lock().await;
        counts.transactions.fetch_add(1, Ordering::Relaxed);
        // A unit of the first lane is not held up by ordinary ones: it goes alone, or with
        // others of its lane.
        match queues.waiting(unit.first) {
            None => run_alone(&mut conn, unit).await,
            Some(second) => run_group(&mut conn, [unit, second], &mut queues).await,
        }
    }
}

/// A unit with nobody behind it: its SAVEPOINT is its transaction.
async fn run_alone(conn: &mut AnyConnection, unit: Unit) {
    crate::statement_counts::WRITE_TRANSACTIONS.inc();
    let ran = match run_unit(conn, unit.query).await {
        Ok(rows) => Ok(rows),
        Err((error, undone)) => {
            if !undone {
                // Whatever is left open goes (no transaction: a harmless error).
                let _ = conn.execute("ROLLBACK").await;
            }
            Err(error)
        }
    };
    let _ = unit.reply.send(ran);
}

/// Units in one transaction: the two already taken and whatever waits meanwhile, up to
/// [`MAX_GROUP`]; once the group holds a unit of the first lane, only more of those (so that
/// it is committed as soon as none waits). Each caller hears back after the COMMIT; a unit
/// that failed hears its own error at once.
async fn run_group(conn: &mut AnyConnection, taken: [Unit; 2], queues: &mut Queues) {
    crate::statement_counts::WRITE_TRANSACTIONS.inc();
    let mut with_first = taken.iter().any(|unit| unit.first);
    let mut pending = taken.into_iter();
    if let Err(error) = conn.execute("BEGIN IMMEDIATE").await {
        for unit in pending {
            let _ = unit.reply.send(Err(group_failed("BEGIN", &error)));
        }
        return;
    }
    let mut ran: Vec<(Reply, Vec<AnyRow>)> = Vec::with_capacity(MAX_GROUP);
    let mut count = 0;
    while let Some(unit) = pending.next().or_else(|| (count < MAX_GROUP).then(|| queues.waiting(with_first)).flatten())
    {
        count += 1;
        with_first |= unit.first;
        match run_unit(conn, unit.query).await {
            Ok(rows) => ran.push((unit.reply, rows)),
            Err((error, undone)) => {
                let _ = unit.reply.send(Err(error));
                if !undone {
                    // The transaction itself is gone (SQLite rolls back the whole of it on
                    // some errors): nothing of the group was written.
                    let _ = conn.execute("ROLLBACK").await;
                    fail_all(ran, pending, "the group's transaction was rolled back");
                    return;
                }
            }
        }
    }
    match conn.execute("COMMIT").await {
        Ok(_) => {
            for (reply, rows) in ran {
                let _ = reply.send(Ok(rows));
            }
        }
        Err(error) => {
            let _ = conn.execute("ROLLBACK").await;
            let message = format!("COMMIT failed: {error}");
            fail_all(ran, pending, &message);
        }
    }
}

/// Runs one unit's batch; on failure, undoes what of it ran. The error comes with whether the
/// unit was undone alone (false: its transaction is gone, or in an unknown state).
async fn run_unit(conn: &mut AnyConnection, query: Statement) -> Result<Vec<AnyRow>, (sqlx::Error, bool)> {
    match query.fetch_all(&mut *conn).await {
        Ok(rows) => Ok(rows),
        Err(error) => {
            let undone = conn.execute("ROLLBACK TO unit; RELEASE unit").await.is_ok();
            Err((error, undone))
        }
    }
}

fn fail_all(ran: Vec<(Reply, Vec<AnyRow>)>, pending: impl Iterator<Item = Unit>, message: &str) {
    let replies = ran.into_iter().map(|(reply, _)| reply).chain(pending.map(|unit| unit.reply));
    for reply in replies {
        let _ = reply.send(Err(sqlx::Error::Protocol(format!("group commit: {message}"))));
    }
}

fn group_failed(statement: &str, error: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(format!("group commit: {statement} failed: {error}"))
}
