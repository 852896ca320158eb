//! Whether WeChat answers at all, as the calls of this process see it: a few calls in a row
//! without an answer (timeouts, refused or dropped connections) mean it cannot be reached, and
//! the next answer, whatever it says, means it can. Services answer at once instead of making
//! callers wait for a timeout.

use std::sync::Mutex;
use std::time::Duration;

use crate::client::CallObserver;
use crate::endpoint::Endpoint;

/// Calls in a row without an answer after which WeChat counts as unreachable.
const UNANSWERED_IN_A_ROW: u32 = 3;

#[derive(Debug, Default)]
pub struct Reachability {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    unanswered: u32,
    /// What the last unanswered call met (timeout, transport).
    last: Option<String>,
}

impl Reachability {
    /// None while WeChat answers; how the last calls failed when it does not.
    pub fn unreachable(&self) -> Option<String> {
        let state = self.state.lock().unwrap();
        (state.unanswered >= UNANSWERED_IN_A_ROW).then(|| {
            format!(
                "{} calls in a row got no answer (last: {})",
                state.unanswered,
                state.last.as_deref().unwrap_or("?")
            )
        })
    }
}

impl CallObserver for Reachability {
    fn observe(&self, endpoint: Endpoint, outcome: &str, _elapsed: Duration) {
        let mut state = self.state.lock().unwrap();
        let unanswered = outcome.ends_with("timeout") || outcome.ends_with("transport");
        if unanswered {
            state.unanswered += 1;
            state.last = Some(format!("{outcome} at {endpoint}"));
        } else {
            state.unanswered = 0;
            state.last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanswered_calls_in_a_row_make_wechat_unreachable_until_an_answer() {
        let reachability = Reachability::default();
        let observe = |outcome| reachability.observe(Endpoint::InsertBill, outcome, Duration::ZERO);
        observe("transport");
        observe("timeout");
        assert_eq!(reachability.unreachable(), None);
        observe("transport");
        assert!(reachability.unreachable().unwrap().contains("3 calls in a row"));
        // Any answer, even an error or an HTTP status, shows WeChat can be reached.
        observe("http_503");
        assert_eq!(reachability.unreachable(), None);
        for outcome in ["timeout", "download_transport", "transport"] {
            observe(outcome);
        }
        assert!(reachability.unreachable().is_some());
        observe("0");
        assert_eq!(reachability.unreachable(), None);
    }
}
