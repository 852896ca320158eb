//! The token and ticket cache against the sandbox: single flight, refresh ahead of expiry,
//! compare-and-expire with exactly one retry, quotas, and replicas sharing a store.

use std::sync::Arc;

use serde_json::json;
use wechat::types::OrderRef;
use wechat::{CallError, MemoryCredentialStore, TokenMode};

use crate::support::*;

#[tokio::test]
async fn two_hundred_concurrent_callers_cause_one_token_fetch() {
    let env = Env::start().await;
    let creds = Arc::new(env.credentials(TokenMode::StableToken));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let creds = creds.clone();
            tokio::spawn(async move { creds.access_token(UNIT).await.unwrap().value })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "everyone got the same token");
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, 1);

    // Tickets likewise: one getticket for 200 callers.
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let creds = creds.clone();
            tokio::spawn(async move { creds.card_ticket(UNIT).await.unwrap().value })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(env.calls("/cgi-bin/ticket/getticket", UNIT).await, 1);
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_failed_fetch() {
    let env = Env::start().await;
    env.fault(json!({"path": "/cgi-bin/stable_token", "kind": "errcode", "errcode": 40164})).await;
    let creds = Arc::new(env.credentials(TokenMode::StableToken));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = creds.clone();
            tokio::spawn(async move { c.access_token(UNIT).await })
        })
        .collect();
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert!(matches!(error, CallError::Wechat(ref e) if e.errcode() == Some(40164)), "{error:?}");
    }
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, 1, "no refresh storm while WeChat refuses");
}

/// A getauthdata call by the unit for an unknown order: 72038 means the token was accepted.
async fn auth_data_calls(creds: &wechat::Credentials) -> Result<(), CallError> {
    let client = creds.client();
    let order = &OrderRef { s_pappid: "unknown".into(), order_id: "o".into() };
    match creds.with_access_token(UNIT, |t| async move { client.get_auth_data(&t, order).await }).await {
        Err(CallError::Wechat(error)) if error.errcode() == Some(72038) => Ok(()),
        other => other.map(|_| ()),
    }
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_and_the_call_retried_exactly_once() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    auth_data_calls(&creds).await.unwrap();
    assert_eq!(env.calls("/card/invoice/getauthdata", UNIT).await, 1);

    // Once: the retry succeeds.
    env.fault(
        json!({"path": "/card/invoice/getauthdata", "appid": UNIT, "kind": "errcode", "errcode": 40001, "count": 1}),
    )
    .await;
    auth_data_calls(&creds).await.unwrap();
    assert_eq!(env.calls("/card/invoice/getauthdata", UNIT).await, 3);
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, 2, "one refresh after the rejection");

    // Persistently: exactly one retry, then the error.
    env.fault(
        json!({"path": "/card/invoice/getauthdata", "appid": UNIT, "kind": "errcode", "errcode": 42001, "count": 5}),
    )
    .await;
    let error = auth_data_calls(&creds).await.unwrap_err();
    assert!(matches!(error, CallError::Wechat(ref e) if e.errcode() == Some(42001)), "{error:?}");
    assert_eq!(env.calls("/card/invoice/getauthdata", UNIT).await, 5);
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, 3);
    assert_eq!(creds.stats().token_rejections.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_really_invalidated_token_is_replaced() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let before = creds.access_token(UNIT).await.unwrap().value;
    env.post(&format!("/sandbox/accounts/{UNIT}/invalidate-tokens"), json!({})).await;
    auth_data_calls(&creds).await.unwrap();
    let after = creds.access_token(UNIT).await.unwrap().value;
    assert_ne!(before, after);
    assert_eq!(env.calls("/card/invoice/getauthdata", UNIT).await, 2);
}

#[tokio::test]
async fn daily_quota_errors_never_refresh_the_token() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    env.fault(json!({"path": "/card/invoice/getauthdata", "kind": "errcode", "errcode": 45009, "count": 3})).await;
    for _ in 0..3 {
        let error = auth_data_calls(&creds).await.unwrap_err();
        assert!(matches!(error, CallError::Wechat(ref e) if e.errcode() == Some(45009)));
    }
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, 1);
    assert_eq!(env.calls("/card/invoice/getauthdata", UNIT).await, 3, "45009 is not resent");
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let first = creds.access_token(UNIT).await.unwrap();
    env.advance(6_000).await;
    assert_eq!(creds.access_token(UNIT).await.unwrap(), first, "fresh until 5 minutes remain");
    env.advance(950).await; // 250 s left: due for refresh; stable_token now renews.
    let second = creds.access_token(UNIT).await.unwrap();
    assert_ne!(second.value, first.value);
    assert_eq!(env.calls("/cgi-bin/stable_token", UNIT).await, 2);
    // The old token stays valid until it expires (the overlap).
    let client = env.client();
    client.get_card_ticket(&first.value).await.unwrap();
    env.advance(300).await;
    assert_eq!(client.get_card_ticket(&first.value).await.unwrap_err().errcode(), Some(42001));
    client.get_card_ticket(&second.value).await.unwrap();
}

#[tokio::test]
async fn cgi_bin_token_mode_and_its_five_minute_overlap() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::Token);
    let first = creds.access_token(BUREAU).await.unwrap().value;
    assert_eq!(env.calls("/cgi-bin/token", BUREAU).await, 1);
    assert_eq!(env.calls("/cgi-bin/stable_token", BUREAU).await, 0);
    // Another party fetches a token with the same secret: ours works 5 more minutes.
    env.client().token(BUREAU, &secret_of(BUREAU)).await.unwrap();
    let client = env.client();
    client.get_card_ticket(&first).await.unwrap();
    env.advance(301).await;
    assert_eq!(client.get_card_ticket(&first).await.unwrap_err().errcode(), Some(40001));
    // Through the cache the rejection is repaired with one refresh.
    let client = creds.client();
    creds.with_access_token(BUREAU, |t| async move { client.get_card_ticket(&t).await }).await.unwrap();
    assert_eq!(env.calls("/cgi-bin/token", BUREAU).await, 3);
}

#[tokio::test]
async fn replicas_sharing_a_store_fetch_once() {
    let env = Env::start().await;
    let store = Arc::new(MemoryCredentialStore::default());
    let replicas: Vec<_> =
        (0..4).map(|_| Arc::new(env.credentials_with(env.client(), TokenMode::Token, store.clone()))).collect();
    let tasks: Vec<_> = replicas
        .iter()
        .flat_map(|r| (0..25).map(move |_| r.clone()))
        .map(|r| tokio::spawn(async move { r.access_token(UNIT).await.unwrap().value }))
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.unwrap());
    }
    assert!(values.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(env.calls("/cgi-bin/token", UNIT).await, 1, "one fetch for four replicas");

    // One replica sees the token rejected: the others pick up its replacement from the store.
    let first = values[0].clone();
    replicas[0].expire(&wechat::CredentialKey::access_token(UNIT), &first).await.unwrap();
    let fresh = replicas[0].access_token(UNIT).await.unwrap().value;
    assert_ne!(fresh, first);
    replicas[1].expire(&wechat::CredentialKey::access_token(UNIT), &first).await.unwrap();
    assert_eq!(replicas[1].access_token(UNIT).await.unwrap().value, fresh);
    assert_eq!(env.calls("/cgi-bin/token", UNIT).await, 2);
}

#[tokio::test]
async fn token_quota_gives_45009() {
    let mut config = test_config();
    let mut accounts = demo_accounts();
    accounts[1].daily_quota.insert("token".into(), 2);
    config.accounts = accounts;
    let env = Env::start_with(config).await;
    let client = env.client();
    client.token(UNIT, &secret_of(UNIT)).await.unwrap();
    client.token(UNIT, &secret_of(UNIT)).await.unwrap();
    assert_eq!(client.token(UNIT, &secret_of(UNIT)).await.unwrap_err().errcode(), Some(45009));
    env.advance(86_400).await;
    client.token(UNIT, &secret_of(UNIT)).await.unwrap();
}

#[tokio::test]
async fn unknown_accounts_are_refused_without_a_call() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    assert_eq!(
        creds.access_token("wx00000000000000ff").await.unwrap_err(),
        CallError::UnknownAccount("wx00000000000000ff".into())
    );
    assert_eq!(
        creds.card_ticket("wx00000000000000ff").await.unwrap_err(),
        CallError::UnknownAccount("wx00000000000000ff".into())
    );
    let stats = env.get("/sandbox/stats").await;
    assert!(stats["calls"].as_array().unwrap().is_empty());
}
