//! Restarts and crashes in the middle of issuing: state survives, work resumes from the last
//! completed step, and the bill is inserted exactly once.

use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::proto::bureau as pb;
use serde_json::json;

use crate::on_both_databases;
use crate::support::*;

async fn a_crash_mid_insert_resumes_and_inserts_once(db: DatabaseConfig) {
    let mut env = Env::start(db).await;
    env.authorize("o-crash").await;
    // The insert takes 2 s at WeChat; the bureau dies while waiting for the answer.
    env.fault(json!({"path": "/nontax/insertbill", "kind": "delay", "delay_ms": 2_000, "count": 1})).await;
    let mut short = tonic::Request::new(request("o-crash"));
    short.set_timeout(std::time::Duration::from_millis(800));
    let bill = env.client.issue_bill(short).await.unwrap().into_inner().bill.unwrap();
    assert_eq!(state(&bill), pb::BillState::PdfChecked, "answered in progress before its deadline");
    env.restart(true).await;

    // The restarted bureau takes the bill over once the lease lapses, and finishes it.
    let bill = env.final_bill("o-crash").await;
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(env.cards().await.len(), 1, "inserted exactly once");
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 1, "the upload was not repeated");
    assert_eq!(env.calls("/card/invoice/platform/getpdf").await, 1, "the check was not repeated");
}
on_both_databases!(a_crash_mid_insert_resumes_and_inserts_once);

async fn a_crash_during_the_check_uploads_again_and_inserts_once(db: DatabaseConfig) {
    let mut env = Env::start(db).await;
    env.authorize("o-check").await;
    // The upload is recorded with its check: while getpdf takes 1.5 s, the bill is stored as
    // accepted, and the bureau dies then.
    env.fault(json!({"path": "/card/invoice/platform/getpdf", "kind": "delay", "delay_ms": 1_500, "count": 1})).await;
    let mut short = tonic::Request::new(request("o-check"));
    short.set_timeout(std::time::Duration::from_millis(800));
    let bill = env.client.issue_bill(short).await.unwrap().into_inner().bill.unwrap();
    assert_eq!(state(&bill), pb::BillState::Accepted, "the upload is not recorded before its check");
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 1);
    env.restart(true).await;

    // The restarted bureau uploads and checks again, then inserts, once.
    let bill = env.final_bill("o-check").await;
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 2, "uploaded again");
    assert_eq!(env.calls("/card/invoice/platform/getpdf").await, 2, "checked again");
    assert_eq!(env.calls("/nontax/insertbill").await, 1);
    assert_eq!(env.cards().await.len(), 1, "inserted exactly once");
}
on_both_databases!(a_crash_during_the_check_uploads_again_and_inserts_once);

async fn a_clean_stop_parks_bills_and_a_restart_finishes_them(db: DatabaseConfig) {
    let mut env = Env::start(db).await;
    env.authorize("o-park").await;
    env.fault(json!({"path": "/card/invoice/platform/getpdf", "kind": "http_status", "status": 503})).await;
    let mut short = tonic::Request::new(request("o-park"));
    short.set_timeout(std::time::Duration::from_millis(600));
    let bill = env.client.issue_bill(short).await.unwrap().into_inner().bill.unwrap();
    assert_eq!(state(&bill), pb::BillState::PdfUploaded);
    env.restart(false).await;
    assert_eq!(state(&env.bill("o-park").await), pb::BillState::PdfUploaded, "the state survived the restart");
    let (status, _) = {
        let response = env.http.delete(format!("{}/sandbox/faults", env.sandbox.base_url())).send().await.unwrap();
        (response.status(), ())
    };
    assert!(status.is_success());
    let bill = env.final_bill("o-park").await;
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 1);
    assert_eq!(env.calls("/nontax/insertbill").await, 1);

    // An inserted bill is answered from the store after a restart: no WeChat call.
    env.restart(false).await;
    let again = env.issue(request("o-park")).await.unwrap();
    assert_eq!(again.card_code, bill.card_code);
    assert_eq!(env.calls("/nontax/insertbill").await, 1);
    assert_eq!(env.calls("/nontax/createbillcard").await, 1, "the template survived too");
    assert_eq!(env.calls("/card/invoice/seturl").await, 1, "and the s_pappid");
}
on_both_databases!(a_clean_stop_parks_bills_and_a_restart_finishes_them);
