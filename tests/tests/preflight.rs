//! The preflight checklists of both services against the sandbox: all ✓ for a working
//! configuration, and each way a real one goes wrong (faults and mistakes) turns its check ✗
//! with the fix.

use e2e::*;
use fiscalbill_common::db::test_support;
use fiscalbill_common::preflight::Checklist;
use fiscalbill_common::proto::collection as pb;
use serde_json::json;

fn failed(list: &Checklist, what: &str) -> String {
    let check = list.find(what).unwrap_or_else(|| panic!("no check {what}:\n{}", list.render()));
    assert!(!check.passed, "{what} passed:\n{}", list.render());
    check.fix.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_configuration_passes_every_check() {
    let mut stack = Stack::start(Options::default()).await;
    // One bill, so that the unit's template exists.
    let created = stack.create("order-preflight").await;
    stack.answer(&created.auth_url, false).await;
    stack.wait_for("order-preflight", pb::AuthorizationState::Issued).await;

    let bureau = bureau_svc::preflight(&stack.bureau_config()).await;
    assert!(bureau.passed(), "{}", bureau.render());
    assert!(bureau.find(&format!("bill template of unit {UNIT}")).is_some());
    let collection = collection_svc::preflight(&stack.collection_config()).await;
    assert!(collection.passed(), "{}", collection.render());
    for check in ["access token of", "wx_card ticket of", "invoice permission of"] {
        for appid in [UNIT, APP] {
            assert!(collection.find(&format!("{check} {appid}")).is_some_and(|c| c.passed), "{check} {appid}");
        }
    }
    // The running services' tokens were used, not replaced: one fetch per account in all.
    for appid in [BUREAU, UNIT, APP] {
        assert_eq!(stack.calls_by("/cgi-bin/stable_token", appid).await, 1, "{appid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_fails_its_check_with_the_fix() {
    let stack = Stack::start(Options::default()).await;
    // A fresh database, so that tokens are fetched (and the faults below are met).
    let fresh_bureau = || {
        let mut config = stack.bureau_config();
        config.database = test_support::sqlite();
        config
    };

    // The IP whitelist: WeChat names the caller's IP.
    let errmsg = "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist";
    stack.post("/sandbox/faults", json!({"path": "/cgi-bin/stable_token", "appid": BUREAU, "kind": "errcode", "errcode": 40164, "errmsg": errmsg, "count": 1})).await;
    let list = bureau_svc::preflight(&fresh_bureau()).await;
    let fix = failed(&list, &format!("access token of {BUREAU}"));
    assert!(fix.contains("egress IP 203.0.113.7") && fix.contains("IP白名单"), "{fix}");

    // A wrong secret.
    let mut wrong = fresh_bureau();
    wrong.account.secret = fiscalbill_common::config::SecretSetting::Inline(wechat::Secret::new("not-the-secret"));
    let fix = failed(&bureau_svc::preflight(&wrong).await, &format!("access token of {BUREAU}"));
    assert!(fix.contains("appsecret"), "{fix}");

    // No invoice permission.
    stack
        .post(
            "/sandbox/faults",
            json!({"path": "/card/invoice/seturl", "kind": "error", "name": "api_unauthorized", "count": 1}),
        )
        .await;
    let list = bureau_svc::preflight(&fresh_bureau()).await;
    assert!(failed(&list, "invoice permission and s_pappid").contains("docs/onboarding.md"));
    // ... and on this fresh database no template exists yet.
    assert!(failed(&list, &format!("bill template of unit {UNIT}")).contains("CreateCardTemplate"));

    // Malformed callback keys, and a logo that is not on WeChat's image host.
    let mut keys = fresh_bureau();
    keys.account.encoding_aes_key =
        Some(fiscalbill_common::config::SecretSetting::Inline(wechat::Secret::new("too-short")));
    keys.units[0].logo_file = None;
    keys.units[0].logo_url = Some("https://hospital.example/logo.png".to_owned());
    let list = bureau_svc::preflight(&keys).await;
    assert!(failed(&list, "callback keys").contains("EncodingAESKey"));
    assert!(failed(&list, &format!("logo of unit {UNIT}")).contains("logo_file"));

    // No signing certificate, or a key that is not the certificate's.
    let mut unsigned = fresh_bureau();
    unsigned.signing = None;
    assert!(failed(&bureau_svc::preflight(&unsigned).await, "bill signing").contains("[signing]"));
    let mut mismatched = fresh_bureau();
    let other = throwaway_signing();
    mismatched.signing.as_mut().unwrap().key = other.key;
    let list = bureau_svc::preflight(&mismatched).await;
    assert!(failed(&list, "bill signing").contains("[signing]"));
    assert!(list.render().contains("the signing key does not belong to the signing certificate"), "{}", list.render());

    // The database does not answer.
    let mut no_db = fresh_bureau();
    no_db.database = fiscalbill_common::db::DatabaseConfig {
        url: "postgres://postgres@127.0.0.1:9/none".to_owned(),
        acquire_timeout_ms: 500,
        ..Default::default()
    };
    assert!(failed(&bureau_svc::preflight(&no_db).await, "database").contains("[database] url"));

    // collection-svc: the bureau unreachable, and a unit without invoice permission.
    let mut collection = stack.collection_config();
    collection.database = test_support::sqlite();
    collection.bureau.endpoint = "http://127.0.0.1:9".to_owned();
    let list = collection_svc::preflight(&collection).await;
    assert!(failed(&list, "bureau at http://127.0.0.1:9").contains("[bureau] endpoint"));
    assert!(failed(&list, &format!("invoice permission of {UNIT}")).contains("bureau reachable"));

    let mut collection = stack.collection_config();
    collection.database = test_support::sqlite();
    stack.post("/sandbox/faults", json!({"path": "/card/invoice/getauthdata", "appid": UNIT, "kind": "error", "name": "api_unauthorized", "count": 1})).await;
    let list = collection_svc::preflight(&collection).await;
    assert!(failed(&list, &format!("invoice permission of {UNIT}")).contains("docs/onboarding.md"));
    assert!(list.find(&format!("invoice permission of {APP}")).unwrap().passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_bureau_does_not_accept_fails_the_bureau_check() {
    let stack = Stack::start(Options { auth: true, ..Options::default() }).await;
    let mut collection = stack.collection_config();
    collection.database = test_support::sqlite();
    collection.bureau.api_key =
        Some(fiscalbill_common::config::SecretSetting::Inline(wechat::Secret::new("SECRET-wrong-key")));
    let list = collection_svc::preflight(&collection).await;
    let fix = failed(&list, &format!("bureau at {}", collection.bureau.endpoint));
    assert!(fix.contains("api_key"), "{fix}");
}
