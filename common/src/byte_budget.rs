//! Bytes that the holders of a budget may hold at once, counted in KiB: what bounds memory by
//! the bytes themselves where counting holders alone would bound it only by `holders × largest`.
//! Used by collection-svc's deliveries (the PDFs they hold while IssueBill sends them) and by
//! every gRPC server's requests ([`crate::message_budget`]).
//!
//! A reservation larger than the whole budget takes all of it: it goes alone. One that does not
//! know its size yet may reserve the most it could need and give back the rest
//! ([`Reservation::shrink_to`]). Reservations that wait are served in turn (tokio's semaphore is
//! fair): small ones never starve a large one, and one taken without waiting never goes before
//! one that waits.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const KIB: usize = 1024;

pub struct ByteBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

/// Bytes reserved by one holder; given back when dropped.
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl ByteBudget {
    /// A budget of `bytes`, counted in KiB (at least one).
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX).max(1);
        Self { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib }
    }

    /// Waits until `bytes` are free and takes them (all of the budget for more than it holds).
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let kib = self.kib_of(bytes);
        let permit = self.kib.clone().acquire_many_owned(kib).await.expect("the budget's semaphore is never closed");
        Reservation { permit }
    }

    /// Takes `bytes` if they are free now, without waiting (a reservation waiting in turn
    /// keeps what is freed for itself, so this never goes before it).
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let kib = self.kib_of(bytes);
        self.kib.clone().try_acquire_many_owned(kib).ok().map(|permit| Reservation { permit })
    }

    /// The budget's size.
    pub fn total_bytes(&self) -> usize {
        self.total_kib as usize * KIB
    }

    fn kib_of(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX).clamp(1, self.total_kib)
    }

    #[cfg(test)]
    fn free_kib(&self) -> usize {
        self.kib.available_permits()
    }
}

impl Reservation {
    /// Keeps only what `bytes` need and gives the rest back.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(KIB).max(1);
        if let Some(extra) = self.permit.num_permits().checked_sub(keep).filter(|extra| *extra > 0) {
            drop(self.permit.split(extra));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_reservation_waits_while_the_budget_is_taken_and_shrinks_to_what_it_read() {
        let budget = Arc::new(ByteBudget::new(2 * 1024 * KIB));
        let mut first = budget.reserve(2 * 1024 * KIB).await;
        assert_eq!(budget.free_kib(), 0);

        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(2 * 1024 * KIB).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a second largest PDF waits for the first");

        // The first PDF turned out to be 64 KiB: the rest is given back (to the waiter, which
        // is first in line), still not enough for a second reservation of the largest size.
        first.shrink_to(64 * KIB);
        assert_eq!(first.permit.num_permits(), 64);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());

        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(second.permit.num_permits(), 2048);
        drop(second);
        assert_eq!(budget.free_kib(), 2048);
    }

    #[tokio::test]
    async fn a_pdf_larger_than_the_budget_goes_alone_and_an_empty_one_counts_one_kib() {
        let budget = ByteBudget::new(1024 * KIB);
        let all = budget.reserve(10 * 1024 * KIB).await;
        assert_eq!(budget.free_kib(), 0);
        drop(all);

        let mut empty = budget.reserve(0).await;
        assert_eq!(budget.free_kib(), 1023);
        empty.shrink_to(0);
        assert_eq!(budget.free_kib(), 1023);
    }

    #[tokio::test]
    async fn shrinking_never_takes_more_than_was_reserved() {
        let budget = ByteBudget::new(1024 * KIB);
        let mut small = budget.reserve(64 * KIB).await;
        small.shrink_to(512 * KIB);
        assert_eq!(small.permit.num_permits(), 64);
        assert_eq!(budget.free_kib(), 1024 - 64);
    }

    /// A push's delivery takes its bytes only if they are free now: never while a reservation
    /// waits in turn, even for bytes that would fit beside what is held.
    #[tokio::test]
    async fn a_reservation_without_waiting_takes_only_what_is_free_and_never_goes_first() {
        let budget = Arc::new(ByteBudget::new(4 * 1024 * KIB));
        let held = budget.try_reserve(3 * 1024 * KIB).expect("free");
        assert!(budget.try_reserve(2 * 1024 * KIB).is_none(), "1 MiB is free, not 2");

        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(2 * 1024 * KIB).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        assert!(budget.try_reserve(KIB).is_none(), "the waiting reservation keeps what is free for itself");

        drop(held);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(second.permit.num_permits(), 2048);
        assert_eq!(budget.try_reserve(2 * 1024 * KIB).map(|r| r.permit.num_permits()), Some(2048));
    }
}
