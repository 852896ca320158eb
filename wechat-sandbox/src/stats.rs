//! Per-endpoint, per-appid call statistics, so tests can prove how often each WeChat
//! endpoint was called.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::world::World;

#[derive(Clone, Debug, Default, Serialize)]
pub struct CallStats {
    pub calls: u64,
    /// Answers by errcode (`"0"` for success; `"http_503"`, `"dropped"` for faults).
    pub outcomes: BTreeMap<String, u64>,
}

impl World {
    pub fn count_call(&mut self, path: &str, appid: Option<&str>) {
        self.stats.entry((path.to_owned(), appid.unwrap_or_default().to_owned())).or_default().calls += 1;
    }

    pub fn count_outcome(&mut self, path: &str, appid: Option<&str>, outcome: String) {
        *self
            .stats
            .entry((path.to_owned(), appid.unwrap_or_default().to_owned()))
            .or_default()
            .outcomes
            .entry(outcome)
            .or_default() += 1;
    }

    /// Statistics as JSON: `[{"endpoint", "appid", "calls", "outcomes"}]`.
    pub fn stats_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .stats
            .iter()
            .map(|((path, appid), stats)| serde_json::json!({"endpoint": path, "appid": appid, "calls": stats.calls, "outcomes": stats.outcomes}))
            .collect();
        serde_json::json!({ "calls": rows })
    }
}
