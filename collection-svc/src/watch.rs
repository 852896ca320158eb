//! WatchAuthorizations: each stream reads the change log (written by the database's triggers
//! with each change of state) after its position, sends what its filter wants, and then waits
//! for this process's next write or, for the writes of other replicas, a short timer. The
//! position is the stream's resume token, so a broken stream continues where it stopped, on
//! any replica.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::domain::{AuthChange, ChangePosition, WatchFilter};
use crate::error::CollectionError;
use crate::store::Store;
use crate::units::Units;

/// Changes a stream reads from the database at a time.
const READ_BATCH: i64 = 500;

/// After a wake-up, how long a stream lets further commits gather before it reads: under load
/// one read then serves many commits instead of one each.
const GATHER: Duration = Duration::from_millis(10);

/// How often old changes are deleted, and how many at a time (one write transaction each).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_BATCH: i64 = 10_000;

/// What a stream carries.
#[derive(Debug)]
pub enum WatchItem {
    /// The first item: the watch is in place from this position on.
    Started(ChangePosition),
    Change(Box<AuthChange>),
}

pub struct Watches {
    store: Store,
    units: Arc<Units>,
    /// How often a stream looks for other replicas' changes when this process wrote nothing.
    poll: Duration,
    stopping: watch::Sender<bool>,
}

impl Watches {
    pub fn new(store: Store, units: Arc<Units>, poll: Duration) -> Self {
        Self { store, units, poll, stopping: watch::channel(false).0 }
    }

    /// WatchAuthorizations: starts a stream of a unit served here, after `from` (or at the
    /// current end).
    pub async fn start(
        &self,
        filter: WatchFilter,
        from: Option<ChangePosition>,
    ) -> Result<mpsc::Receiver<Result<WatchItem, CollectionError>>, CollectionError> {
        if self.units.get(&filter.unit_appid).is_none() {
            return Err(CollectionError::UnitNotServed(filter.unit_appid));
        }
        if *self.stopping.borrow() {
            return Err(CollectionError::ShuttingDown);
        }
        let position = match from {
            Some(position) if position < self.store.pruned_through().await? => {
                return Err(CollectionError::ResumeTokenExpired);
            }
            Some(position) => position,
            None => self.store.end_of_changes().await?,
        };
        let (sender, receiver) = mpsc::channel(64);
        let stream = Stream {
            store: self.store.clone(),
            poll: self.poll,
            filter,
            position,
            sender,
            stopping: self.stopping.subscribe(),
        };
        tokio::spawn(stream.run());
        Ok(receiver)
    }

    /// Deletes the changes older than `retention`, a batch at a time, every few minutes until
    /// `stop`.
    pub async fn run_pruner(self: Arc<Self>, retention: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            let before = fiscalbill_common::db::now_millis() - retention.as_millis() as i64;
            let mut total = 0;
            loop {
                match self.store.prune_changes(before, PRUNE_BATCH).await {
                    Ok(deleted) => {
                        total += deleted;
                        if (deleted as i64) < PRUNE_BATCH {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot delete old changes; trying again later");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::info!(deleted = total, "deleted changes older than watch_retention_hours");
            }
            tokio::select! {
                () = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Ends every stream with UNAVAILABLE SHUTTING_DOWN, and refuses new ones.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

struct Stream {
    store: Store,
    poll: Duration,
    filter: WatchFilter,
    position: ChangePosition,
    sender: mpsc::Sender<Result<WatchItem, CollectionError>>,
    stopping: watch::Receiver<bool>,
}

impl Stream {
    async fn run(mut self) {
        let mut wake = self.store.subscribe_changes();
        if !self.send(Ok(WatchItem::Started(self.position))).await {
            return;
        }
        let mut held_back_pause = Duration::ZERO;
        loop {
            // Marked seen before reading: a write that commits during the read wakes the next wait.
            wake.borrow_and_update();
            let read = match self.store.changes_after(&self.filter.unit_appid, self.position, READ_BATCH).await {
                Ok(read) => read,
                Err(error) => {
                    self.send(Err(error.into())).await;
                    return;
                }
            };
            let (changes, held_back) = (read.changes, read.held_back);
            let more = changes.len() as i64 == READ_BATCH;
            if changes.first().is_some_and(|(_, pruned)| *pruned > self.position) {
                // Changes after this stream's position were deleted: it cannot go on whole.
                self.send(Err(CollectionError::ResumeTokenExpired)).await;
                return;
            }
            for (change, _) in changes {
                self.position = change.position;
                if self.filter.wants(&change) && !self.send(Ok(WatchItem::Change(Box::new(change)))).await {
                    return;
                }
            }
            if more {
                continue;
            }
            // Changes held back behind a running transaction (PostgreSQL) come when it ends,
            // which may be another process's: look again soon, less often while it lasts.
            let pause = match held_back {
                true => {
                    held_back_pause = (held_back_pause * 2).clamp(GATHER, self.poll);
                    held_back_pause
                }
                false => {
                    held_back_pause = Duration::ZERO;
                    self.poll
                }
            };
            let (stopping, woken) = tokio::select! {
                _ = wake.changed() => (false, true),
                _ = tokio::time::sleep(pause) => (false, false),
                _ = self.sender.closed() => return,
                _ = self.stopping.wait_for(|stopping| *stopping) => (true, false),
            };
            if stopping {
                let _ = self.sender.try_send(Err(CollectionError::ShuttingDown));
                return;
            }
            if woken {
                tokio::time::sleep(GATHER).await;
            }
        }
    }

    /// False when the stream is over: the caller went away, or the service is stopping.
    async fn send(&mut self, item: Result<WatchItem, CollectionError>) -> bool {
        let sent = tokio::select! {
            sent = self.sender.send(item) => Some(sent.is_ok()),
            _ = self.stopping.wait_for(|stopping| *stopping) => None,
        };
        sent.unwrap_or_else(|| {
            let _ = self.sender.try_send(Err(CollectionError::ShuttingDown));
            false
        })
    }
}
