//! A misconfigured bureau shows it at start: one log line with the fix, `/healthz` and
//! `fiscalbill_wechat_ready`; and IssueBill against a WeChat that does not answer says so at
//! once (UNAVAILABLE with RetryInfo) while the bill is kept for later.

use fiscalbill_common::db::test_support;
use fiscalbill_common::proto::bureau as pb;
use serde_json::json;
use tonic_types::StatusExt;

use crate::support::*;

async fn admin(bureau: &Bureau, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", bureau.admin_addr)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `/healthz` until its body names a problem (the start check runs right after start).
async fn health_detail(bureau: &Bureau) -> (u16, String) {
    for _ in 0..200 {
        let (status, body) = admin(bureau, "/healthz").await;
        if body.contains("fix:") {
            return (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no problem shown on /healthz: {:?}", admin(bureau, "/healthz").await);
}

async fn start(config: bureau_svc::BureauConfig) -> Bureau {
    let bureau = tokio::task::spawn_blocking(move || Bureau::start(config)).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(bureau.grpc_addr).await);
    for _ in 0..200 {
        let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
        if status.is_ok_and(|s| s.into_inner().status == 1) {
            return bureau;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the bureau never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_wechat_shows_at_start_and_issue_bill_answers_unavailable_at_once() {
    // Nothing listens where WeChat should be.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let bureau = start(bureau_config(&base, &test_support::sqlite(), &fast_issuing())).await;
    let (status, body) = health_detail(&bureau).await;
    assert_eq!(status, 200, "the service stays up: WeChat may come back");
    assert!(body.starts_with("serving\n") && body.contains("outbound HTTPS"), "{body}");
    let (_, metrics) = admin(&bureau, "/metrics").await;
    assert!(metrics.contains("fiscalbill_wechat_ready 0"), "{metrics}");

    let mut client = client_for(connect(bureau.grpc_addr).await);
    let status = client.issue_bill(request("o-offline")).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (tonic::Code::Unavailable, "WECHAT_UNREACHABLE"),
        "{status:?}"
    );
    assert!(status.get_error_details().retry_info().is_some());
    assert!(status.message().contains("kept and retried"), "{}", status.message());
    // The bill is recorded, waiting for WeChat.
    let bill = client
        .get_bill(pb::GetBillRequest { unit_appid: UNIT.into(), order_id: "o-offline".into() })
        .await
        .unwrap()
        .into_inner()
        .bill
        .unwrap();
    assert_eq!(state(&bill), pb::BillState::Accepted);
    tokio::task::spawn_blocking(move || bureau.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_wechat_refuses_shows_at_start_with_its_fix() {
    let env = Env::start(test_support::sqlite()).await;
    // The bureau of `env` passes its start check: WeChat serves it.
    let mut ready = String::new();
    for _ in 0..200 {
        ready = admin(env.bureau.as_ref().unwrap(), "/metrics").await.1;
        if ready.contains("fiscalbill_wechat_ready 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ready.contains("fiscalbill_wechat_ready 1"), "{ready}");
    // A second bureau with a fresh database (no stored token): its token fetch meets 40164.
    let errmsg = "invalid ip 198.51.100.4 ipv6 ::ffff:198.51.100.4, not in whitelist";
    env.fault(json!({"path": "/cgi-bin/stable_token", "appid": BUREAU, "kind": "errcode", "errcode": 40164, "errmsg": errmsg})).await;
    let bureau = start(bureau_config(env.sandbox.base_url(), &test_support::sqlite(), &fast_issuing())).await;
    let (_, body) = health_detail(&bureau).await;
    assert!(body.contains("40164") && body.contains("egress IP 198.51.100.4"), "{body}");
    let (_, metrics) = admin(&bureau, "/metrics").await;
    assert!(metrics.contains("fiscalbill_wechat_ready 0"), "{metrics}");
    tokio::task::spawn_blocking(move || bureau.stop()).await.unwrap();
}
