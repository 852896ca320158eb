//! Wall-clock time as Unix seconds, behind a trait so tests can move it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Unix time in seconds.
    fn now(&self) -> i64;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        unix_now()
    }
}

/// Unix time in seconds from the system clock.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The system clock plus an offset that only grows: for tests and the sandbox.
#[derive(Clone, Debug, Default)]
pub struct OffsetClock {
    offset: Arc<AtomicI64>,
}

impl OffsetClock {
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds.max(0), Ordering::SeqCst);
    }

    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> i64 {
        unix_now() + self.offset()
    }
}

/// 2000-01-01T00:00:00Z: no time WeChat or a client sends us is older.
pub const EARLIEST_PLAUSIBLE: i64 = 946_684_800;
/// How far ahead of our clock a time may be (clocks drift).
pub const MAX_AHEAD_SECS: i64 = 86_400;

/// Whether `secs` (Unix seconds) is a believable time from WeChat or a client: between
/// 2000-01-01 and one day after `now_secs`. Times enter as a push's CreateTime, getauthdata's
/// auth_time and a bill's billing_time; an absurd one would overflow when turned into
/// milliseconds or come back as a Timestamp no client can read.
pub fn is_plausible(secs: i64, now_secs: i64) -> bool {
    (EARLIEST_PLAUSIBLE..=now_secs.saturating_add(MAX_AHEAD_SECS)).contains(&secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_times_lie_between_2000_and_tomorrow() {
        let now = 1_800_000_000;
        assert!(is_plausible(EARLIEST_PLAUSIBLE, now));
        assert!(is_plausible(now + MAX_AHEAD_SECS, now));
        for absurd in [EARLIEST_PLAUSIBLE - 1, now + MAX_AHEAD_SECS + 1, 0, -1, i64::MAX, i64::MIN, 253_402_300_800] {
            assert!(!is_plausible(absurd, now), "{absurd}");
        }
    }
}
