//! The rulebook walked end to end: each errcode, raised by name by the sandbox, comes back
//! through the real client over HTTP classified as that very row.

use serde_json::json;
use wechat::rulebook::RULES;
use wechat::{WechatError, WechatHttpConfig};

use crate::support::*;

#[tokio::test]
async fn every_rule_raised_by_the_sandbox_comes_back_classified_as_itself() {
    let env = Env::start().await;
    // No resends: each injected answer is seen once, as it is.
    let client = wechat::WechatClient::new(&WechatHttpConfig { max_resends: 0, ..env.http_config() }).unwrap();
    let secret = secret_of(UNIT);
    for rule in RULES {
        env.fault(json!({"path": "/cgi-bin/stable_token", "kind": "error", "name": rule.name, "count": 1})).await;
        let error = client.stable_token(UNIT, &secret, false).await.unwrap_err();
        let WechatError::Api { errcode, ref errmsg, ref rid, .. } = error else {
            panic!("{}: not an API error: {error:?}", rule.name);
        };
        assert_eq!(errcode, rule.errcode, "{}", rule.name);
        assert_eq!(errmsg, rule.errmsg, "{}: WeChat's errmsg without its rid", rule.name);
        assert!(rid.as_deref().is_some_and(|rid| rid.len() == 26), "{}: a rid like WeChat's", rule.name);
        assert_eq!(error.rule(), Some(*rule), "{}", rule.name);
        assert_eq!(error.kind(), rule.kind, "{}", rule.name);
    }
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, RULES.len() as u64);
    // With every fault used up, the endpoint answers normally again.
    assert!(client.stable_token(UNIT, &secret, false).await.is_ok());
}

#[tokio::test]
async fn an_errcode_injected_by_number_carries_the_rulebook_errmsg() {
    let env = Env::start().await;
    let client = wechat::WechatClient::new(&WechatHttpConfig { max_resends: 0, ..env.http_config() }).unwrap();
    let rule = &wechat::rulebook::IP_NOT_WHITELISTED;
    env.fault(json!({"path": "*", "kind": "errcode", "errcode": rule.errcode, "count": 1})).await;
    let error = client.stable_token(UNIT, &secret_of(UNIT), false).await.unwrap_err();
    assert_eq!(error.rule(), Some(rule));
    assert!(matches!(error, WechatError::Api { ref errmsg, .. } if errmsg == rule.errmsg));
    let (status, answer) = env
        .control(reqwest::Method::POST, "/sandbox/faults", Some(json!({"path": "*", "kind": "error", "name": "nope"})))
        .await;
    assert_eq!(status, 400, "{answer}");
}
