//! Fault injection for tests and demos: an errcode, an HTTP status, a delay or a dropped
//! connection, on one endpoint path (or all) and optionally one appid, for a count of calls or
//! with a probability.

use serde::{Deserialize, Serialize};

use crate::world::World;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer HTTP 200 with this errcode instead of processing (with the rulebook's errmsg
    /// unless one is given).
    Errcode {
        errcode: i64,
        #[serde(default)]
        errmsg: Option<String>,
    },
    /// Answer HTTP 200 with the rulebook's error of this name, e.g. `ip_not_whitelisted`.
    Error { name: String },
    /// Answer with this HTTP status and an empty body instead of processing.
    HttpStatus { status: u16 },
    /// Wait, then process and answer normally (past a client's timeout the answer is lost
    /// but the call took effect).
    Delay { delay_ms: u64 },
    /// Close the connection without answering; with `after_processing` the call takes effect
    /// first (a lost answer).
    Drop {
        #[serde(default)]
        after_processing: bool,
    },
    /// Serve a download (a getpdf `pdf_url`, path `/sandbox/pdf`) with altered bytes.
    Corrupt,
}

// No deny_unknown_fields: serde does not support it together with `flatten`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct FaultRule {
    /// Assigned by the sandbox.
    #[serde(default)]
    pub id: u64,
    /// An endpoint path such as `/nontax/insertbill`, `/sandbox/pdf` for getpdf's download
    /// links, or `*` for every endpoint.
    pub path: String,
    /// Only calls by (or for) this appid.
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(flatten)]
    pub action: FaultAction,
    /// Fire on the next `count` matching calls, then disappear.
    #[serde(default)]
    pub count: Option<u64>,
    /// Fire on each matching call with this probability (0..=1). With neither count nor
    /// probability the rule fires on every matching call until removed.
    #[serde(default)]
    pub probability: Option<f64>,
}

impl FaultRule {
    fn matches(&self, path: &str, appid: Option<&str>) -> bool {
        (self.path == "*" || self.path == path) && self.appid.as_deref().is_none_or(|wanted| Some(wanted) == appid)
    }
}

impl World {
    pub fn add_fault(&mut self, mut rule: FaultRule) -> Result<u64, String> {
        if let Some(p) = rule.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err("probability must be between 0 and 1".to_owned());
        }
        if rule.action == FaultAction::Corrupt && rule.path != "/sandbox/pdf" {
            return Err("kind corrupt applies to path /sandbox/pdf only".to_owned());
        }
        if let FaultAction::Error { name } = &rule.action
            && wechat::rulebook::by_name(name).is_none()
        {
            return Err(format!("no error named {name:?} in the rulebook"));
        }
        rule.id = self.faults.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        let id = rule.id;
        self.faults.push(rule);
        Ok(id)
    }

    /// The fault to apply to this call, if any; counts down count-limited rules.
    pub fn pick_fault(&mut self, path: &str, appid: Option<&str>) -> Option<FaultAction> {
        let mut fired = None;
        for rule in self.faults.iter_mut().filter(|r| r.matches(path, appid)) {
            let fires = match (rule.count, rule.probability) {
                (Some(0), _) => false,
                (_, Some(p)) => rand::random::<f64>() < p,
                _ => true,
            };
            if fires {
                if let Some(count) = &mut rule.count {
                    *count -= 1;
                }
                fired = Some(rule.action.clone());
                break;
            }
        }
        self.faults.retain(|r| r.count != Some(0));
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, appid: Option<&str>, count: Option<u64>) -> FaultRule {
        FaultRule {
            id: 0,
            path: path.into(),
            appid: appid.map(Into::into),
            action: FaultAction::Errcode { errcode: -1, errmsg: None },
            count,
            probability: None,
        }
    }

    #[test]
    fn count_limited_rules_fire_then_vanish() {
        let mut world = World::default();
        world.add_fault(rule("/nontax/insertbill", Some("wxa"), Some(2))).unwrap();
        assert!(world.pick_fault("/nontax/insertbill", Some("wxb")).is_none());
        assert!(world.pick_fault("/nontax/getbillauthurl", Some("wxa")).is_none());
        assert!(world.pick_fault("/nontax/insertbill", Some("wxa")).is_some());
        assert!(world.pick_fault("/nontax/insertbill", Some("wxa")).is_some());
        assert!(world.pick_fault("/nontax/insertbill", Some("wxa")).is_none());
        assert!(world.faults.is_empty());
    }

    #[test]
    fn wildcard_and_probability_rules() {
        let mut world = World::default();
        let mut never = rule("*", None, None);
        never.probability = Some(0.0);
        world.add_fault(never).unwrap();
        assert!(world.pick_fault("/cgi-bin/token", None).is_none());
        world.add_fault(rule("*", None, None)).unwrap();
        assert!(world.pick_fault("/cgi-bin/token", None).is_some());
        let mut bad = rule("*", None, None);
        bad.probability = Some(1.5);
        assert!(world.add_fault(bad).is_err());
    }

    #[test]
    fn rules_parse_from_json() {
        let rule: FaultRule =
            serde_json::from_str(r#"{"path":"*","kind":"http_status","status":503,"count":1}"#).unwrap();
        assert_eq!(rule.action, FaultAction::HttpStatus { status: 503 });
        let drop: FaultRule =
            serde_json::from_str(r#"{"path":"/nontax/insertbill","kind":"drop","after_processing":true}"#).unwrap();
        assert_eq!(drop.action, FaultAction::Drop { after_processing: true });
        let named_rule = || -> FaultRule {
            serde_json::from_str(r#"{"path":"*","kind":"error","name":"ip_not_whitelisted"}"#).unwrap()
        };
        let named = named_rule();
        assert_eq!(named.action, FaultAction::Error { name: "ip_not_whitelisted".into() });
        let mut world = World::default();
        assert!(world.add_fault(named).is_ok());
        let unknown = FaultRule { action: FaultAction::Error { name: "nope".into() }, ..named_rule() };
        assert!(world.add_fault(unknown).is_err());
    }
}
