//! WeChat calls as the sandbox counted them.

use std::collections::BTreeMap;

use serde_json::Value;

/// Calls so far, by (endpoint, appid).
pub type Calls = BTreeMap<(String, String), u64>;

pub async fn fetch(http: &reqwest::Client, sandbox_url: &str) -> Result<Calls, String> {
    let stats: Value = http
        .get(format!("{sandbox_url}/sandbox/stats"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let rows = stats["calls"].as_array().ok_or("sandbox stats without calls")?;
    Ok(rows
        .iter()
        .map(|row| {
            let key =
                (row["endpoint"].as_str().unwrap_or("").to_owned(), row["appid"].as_str().unwrap_or("").to_owned());
            (key, row["calls"].as_u64().unwrap_or(0))
        })
        .collect())
}

/// Calls made between `before` and `after`, by endpoint (all appids together).
pub fn per_endpoint(after: &Calls, before: &Calls) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for ((endpoint, appid), calls) in after {
        let earlier = before.get(&(endpoint.clone(), appid.clone())).copied().unwrap_or(0);
        *totals.entry(endpoint.clone()).or_insert(0) += calls - earlier;
    }
    totals.retain(|_, calls| *calls > 0);
    totals
}

/// Token and ticket fetches, by (endpoint, appid).
pub fn credential_fetches(calls: Calls) -> Calls {
    calls
        .into_iter()
        .filter(|((endpoint, _), _)| endpoint == "/cgi-bin/stable_token" || endpoint == "/cgi-bin/ticket/getticket")
        .collect()
}
