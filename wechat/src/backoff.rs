//! Retry delays: exponential, with jitter so that many clients do not retry in step.

use std::time::Duration;

/// `base · 2^(attempt-1)`, ±25% at random, never above `max` (attempts count from 1).
pub fn jittered(base: Duration, max: Duration, attempt: u32) -> Duration {
    let base_ms = base.as_millis().max(1) as u64;
    let delay = base_ms.saturating_mul(1u64 << (attempt.clamp(1, 21) - 1));
    let jittered = delay - delay / 4 + rand::random_range(0..=delay / 2);
    Duration::from_millis(jittered).min(max.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_a_cap() {
        let (base, max) = (Duration::from_millis(500), Duration::from_secs(300));
        for _ in 0..200 {
            let first = jittered(base, max, 1).as_millis();
            assert!((375..=625).contains(&first), "{first}");
            let tenth = jittered(base, max, 10).as_millis();
            assert!((192_000..=300_000).contains(&tenth), "{tenth}");
            assert!(jittered(base, max, 99) <= max);
            assert!(jittered(base, max, 0) <= Duration::from_millis(625));
        }
    }
}
