//! Latency samples and their percentiles.

use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    pub fn record(&mut self, value: Duration) {
        self.samples.push(value);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The `q` quantile (0..=1), nearest-rank; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    pub fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }

    /// `p50 / p99 / max` in milliseconds, for the report.
    pub fn summary(&self) -> String {
        format!("{} / {} / {} ms", ms(self.quantile(0.50)), ms(self.quantile(0.99)), ms(self.max()))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.len(),
            "p50_ms": self.quantile(0.50).as_secs_f64() * 1e3,
            "p99_ms": self.quantile(0.99).as_secs_f64() * 1e3,
            "max_ms": self.max().as_secs_f64() * 1e3,
        })
    }
}

pub fn ms(value: Duration) -> String {
    format!("{:.1}", value.as_secs_f64() * 1e3)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut latencies = Latencies::default();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        assert_eq!(latencies.quantile(0.5), Duration::from_millis(50));
        assert_eq!(latencies.quantile(0.99), Duration::from_millis(99));
        assert_eq!(latencies.max(), Duration::from_millis(100));
        assert_eq!(Latencies::default().quantile(0.99), Duration::ZERO);
    }
}
