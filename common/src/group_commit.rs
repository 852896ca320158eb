//! Group commit of write units on SQLite.
//!
//! Write units ([`crate::db::Db::write_together`]) queue for one task that runs them on the
//! writer connection. When several are waiting, it runs them in one transaction: the pages
//! they share (the last pages of the tables and indexes they append to, the outbox's, the
//! change log's) go to the WAL once per group instead of once per unit, and a commit's own
//! work (frame headers, the WAL index, its locks) is paid once. A caller hears back after the
//! commit that made its unit durable. Each unit is a SAVEPOINT of its own, so a unit that fails
//! is undone alone and the others commit; a unit alone in the queue is its own transaction, as
//! before. The first unit of a group carries its BEGIN and the last its COMMIT, so a group costs
//! no round trip to the writer's thread more than its units. Units that must not wait behind
//! issuing work (WeChat's pushes) have a lane of their own, taken first.
//!
//! A caller that goes away while its unit waits or runs does not stop it: the task finishes the
//! unit and its group, and the unit is either wholly written or not at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AnyConnection, AssertSqlSafe, Executor};
use tokio::sync::{Mutex, mpsc, oneshot};

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

/// One write unit: its statements (`s1; ...; sn`) with their arguments bound.
struct Unit {
    statements: String,
    arguments: AnyArguments,
    reply: Reply,
    /// In the lane taken first.
    first: bool,
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

    /// Runs a unit of `statements` (`s1; ...; sn`, their arguments numbered across all of them)
    /// and gives back its rows once committed. `first`: in the lane taken before ordinary units.
    pub async fn run(
        &self,
        statements: String,
        arguments: AnyArguments,
        first: bool,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let lane = if first { &self.first } else { &self.ordinary };
        lane.send(Unit { statements, arguments, reply, first }).map_err(|_| sqlx::Error::PoolClosed)?;
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
    // A unit taken for a group that could not go on.
    let mut left_over = None;
    loop {
        let unit = match left_over.take() {
            Some(unit) => unit,
            None => match queues.next().await {
                Some(unit) => unit,
                None => return,
            },
        };
        let mut conn = writer.lock().await;
        counts.transactions.fetch_add(1, Ordering::Relaxed);
        crate::statement_counts::WRITE_TRANSACTIONS.inc();
        // A unit of the first lane is not held up by ordinary ones: it goes alone, or with
        // others of its lane.
        match queues.waiting(unit.first) {
            None => run_alone(&mut conn, unit).await,
            Some(second) => left_over = run_group(&mut conn, unit, second, &mut queues).await,
        }
    }
}

/// A unit with nobody behind it: its SAVEPOINT is its transaction.
async fn run_alone(conn: &mut AnyConnection, unit: Unit) {
    let ran = match run_unit(conn, &unit.statements, unit.arguments, Place::Alone).await {
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

/// Where a unit's batch stands in its transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Its own transaction.
    Alone,
    /// The first of a group: it begins the transaction.
    Begins,
    /// Neither first nor last.
    Within,
    /// The last of a group: it commits the transaction.
    Commits,
}

/// Units in one transaction: `unit`, `second` and whatever waits meanwhile, up to
/// [`MAX_GROUP`]; once the group holds a unit of the first lane, only more of those (so that
/// it is committed as soon as none waits). The first unit's batch begins the transaction and
/// the last one's commits it: a group of n units takes n round trips to the writer's thread, as
/// n units alone would. Every caller hears back once the group is over, a unit that failed
/// too: its caller may read what made it fail (another unit's row), which must be committed by
/// then. Gives back a unit taken but not run when the group could not go on.
async fn run_group(conn: &mut AnyConnection, unit: Unit, second: Unit, queues: &mut Queues) -> Option<Unit> {
    let mut with_first = unit.first || second.first;
    let mut ran: Vec<(Reply, Ran)> = Vec::with_capacity(MAX_GROUP);
    let (mut current, mut next, mut count, mut begun) = (unit, Some(second), 1, false);
    loop {
        // The unit after this one: with none waiting, this one's batch commits the group.
        let following = next.take().or_else(|| (count < MAX_GROUP).then(|| queues.waiting(with_first)).flatten());
        let place = match (begun, &following) {
            (false, _) => Place::Begins,
            (true, Some(_)) => Place::Within,
            (true, None) => Place::Commits,
        };
        match run_unit(conn, &current.statements, current.arguments, place).await {
            Ok(rows) => ran.push((current.reply, Ok(rows))),
            Err((error, true)) => {
                // Undone alone; the others go on, and are committed without it.
                ran.push((current.reply, Err(error)));
                if place == Place::Commits {
                    return commit(conn, ran).await;
                }
            }
            Err((error, false)) => {
                // The transaction never began, or is gone (SQLite rolls back the whole of it on
                // some errors; a failed COMMIT is rolled back here): nothing of the group was
                // written.
                let _ = conn.execute("ROLLBACK").await;
                ran.push((current.reply, Err(error)));
                answer(ran, Some("the group's transaction was rolled back"));
                return following;
            }
        }
        begun = true;
        if place == Place::Commits {
            answer(ran, None);
            return None;
        }
        current = following.expect("a unit follows unless this one commits");
        with_first |= current.first;
        count += 1;
    }
}

/// What running a unit gave: its rows, or its own error.
type Ran = Result<Vec<AnyRow>, sqlx::Error>;

/// COMMIT on its own, for a group whose last unit failed.
async fn commit(conn: &mut AnyConnection, ran: Vec<(Reply, Ran)>) -> Option<Unit> {
    match conn.execute("COMMIT").await {
        Ok(_) => answer(ran, None),
        Err(error) => {
            let _ = conn.execute("ROLLBACK").await;
            answer(ran, Some(&format!("COMMIT failed: {error}")));
        }
    }
    None
}

/// Answers a group's callers once it is over: committed, each with what its unit gave; rolled
/// back (`rolled_back` says why), an error for each unit that had run, and its own error for
/// each that had failed.
fn answer(ran: Vec<(Reply, Ran)>, rolled_back: Option<&str>) {
    for (reply, result) in ran {
        let result = match (result, rolled_back) {
            (Ok(_), Some(why)) => Err(sqlx::Error::Protocol(format!("group commit: {why}"))),
            (result, _) => result,
        };
        let _ = reply.send(result);
    }
}

/// Runs one unit's batch, placed in its transaction; on failure, undoes what of it ran. The
/// error comes with whether the unit was undone alone, its transaction still open in a group
/// (false: its transaction is gone, never began, or is in an unknown state).
async fn run_unit(
    conn: &mut AnyConnection,
    statements: &str,
    arguments: AnyArguments,
    place: Place,
) -> Result<Vec<AnyRow>, (sqlx::Error, bool)> {
    let (before, after) = match place {
        Place::Alone | Place::Within => ("", ""),
        Place::Begins => ("BEGIN IMMEDIATE; ", ""),
        Place::Commits => ("", "; COMMIT"),
    };
    let batch = format!("{before}SAVEPOINT unit; {statements}; RELEASE unit{after}");
    match sqlx::query_with(AssertSqlSafe(batch), arguments).fetch_all(&mut *conn).await {
        Ok(rows) => Ok(rows),
        Err(error) => {
            let undone = conn.execute("ROLLBACK TO unit; RELEASE unit").await.is_ok();
            Err((error, undone))
        }
    }
}
