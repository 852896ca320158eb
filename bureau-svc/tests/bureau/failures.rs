//! Every failure class ends in its documented state: permanent WeChat refusals fail the bill
//! with a precise reason; transient trouble is retried until the bill is inserted, once.

use fiscalbill_common::db::test_support;
use fiscalbill_common::proto::bureau as pb;
use serde_json::json;

use crate::support::*;

fn failure(bill: &pb::Bill) -> (String, i64) {
    let failure = bill.failure.clone().unwrap_or_default();
    (failure.reason, failure.wechat_errcode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_never_authorized_fails_after_its_window_and_can_be_issued_again() {
    let mut env = Env::start(test_support::sqlite()).await;
    let bill = env.issue(request("o-never")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Failed, "{bill:?}");
    assert_eq!(failure(&bill), ("WECHAT_ORDER_NEVER_AUTHORIZED".to_owned(), 72038));
    let recorded = bill.failure.unwrap();
    assert!(!recorded.wechat_rid.is_empty() && recorded.wechat_errmsg == "invoice order never auth");
    assert!(env.calls("/nontax/insertbill").await >= 2, "retried within the window");

    // The payer authorizes later; the unit's repeated IssueBill starts the bill over.
    env.authorize("o-never").await;
    let bill = env.issue(request("o-never")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert_eq!(env.cards().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_arriving_within_the_window_is_inserted() {
    let mut issuing = fast_issuing();
    issuing.never_authorized_retry_secs = 30;
    let mut env = Env::start_with(test_support::sqlite(), issuing).await;
    // Not authorized yet: IssueBill answers at once with the bill waiting for its retry and
    // why, rather than holding the call.
    let first = env.client.issue_bill(request("o-late")).await.unwrap().into_inner().bill.unwrap();
    assert!(!is_final(&first), "{first:?}");
    assert!(first.last_error.contains("72038"), "{first:?}");
    env.authorize("o-late").await;
    let bill = env.issue(request("o-late")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert!(bill.attempts >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_fail_the_bill_with_their_reason() {
    let mut env = Env::start(test_support::sqlite()).await;
    // The unit rejected the order (rejectinsert): 72035.
    env.authorize("o-rejected").await;
    let s_pappid = env.s_pappid().await;
    let client = env.unit.client();
    let reject = &wechat::types::RejectInsertRequest {
        s_pappid,
        order_id: "o-rejected".into(),
        reason: "refunded".into(),
        url: None,
    };
    env.unit.with_access_token(UNIT, |t| async move { client.reject_insert(&t, reject).await }).await.unwrap();
    let bill = env.issue(request("o-rejected")).await.unwrap();
    assert_eq!(failure(&bill), ("WECHAT_ORDER_REJECTED".to_owned(), 72035));
    assert_eq!(state(&bill), pb::BillState::Failed);
    // A rejected order is never issued again, however often it is asked.
    let again = env.issue(request("o-rejected")).await.unwrap();
    assert_eq!(state(&again), pb::BillState::Failed);

    for (order, errcode, reason) in [
        ("o-72042", 72042, "WECHAT_BILLING_NUMBER_REPEATED"),
        ("o-72040", 72040, "WECHAT_PDF_REJECTED"),
        ("o-72031", 72031, "WECHAT_INVALID_PARAMS"),
        ("o-48001", 48001, "WECHAT_PERMISSION_MISSING"),
    ] {
        env.authorize(order).await;
        env.fault(json!({"path": "/nontax/insertbill", "kind": "errcode", "errcode": errcode, "count": 1})).await;
        let bill = env.issue(request(order)).await.unwrap();
        assert_eq!(state(&bill), pb::BillState::Failed, "{order}: {bill:?}");
        assert_eq!(failure(&bill), (reason.to_owned(), errcode), "{order}");
    }
    assert!(env.cards().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_trouble_is_retried_until_inserted_once() {
    let mut env = Env::start(test_support::sqlite()).await;
    env.authorize("o-flaky").await;
    env.fault(json!({"path": "/card/invoice/platform/setpdf", "kind": "errcode", "errcode": -1, "count": 2})).await;
    env.fault(json!({"path": "/card/invoice/platform/getpdf", "kind": "http_status", "status": 503, "count": 5})).await;
    env.fault(json!({"path": "/nontax/insertbill", "kind": "drop", "count": 1})).await;
    env.fault(json!({"path": "/nontax/insertbill", "kind": "errcode", "errcode": 40001, "count": 2})).await;
    let bill = env.issue(request("o-flaky")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert!(bill.attempts >= 3, "{bill:?}");
    assert!(bill.last_error.is_empty());
    assert_eq!(env.cards().await.len(), 1, "one bill in the card package");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_insert_answer_never_inserts_twice() {
    let mut env = Env::start(test_support::sqlite()).await;
    // WeChat inserts, and the answer is lost on the way back.
    env.authorize("o-lost").await;
    env.fault(json!({"path": "/nontax/insertbill", "kind": "drop", "after_processing": true, "count": 1})).await;
    let bill = env.issue(request("o-lost")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert!(bill.card_code.is_empty(), "the code was in the lost answer");
    assert_eq!(env.cards().await.len(), 1);
    assert_eq!(env.calls("/nontax/insertbill").await, 2, "one resend, answered 'already billed'");

    // The answer is slower than the client's timeout: the same.
    env.authorize("o-slow").await;
    env.fault(json!({"path": "/nontax/insertbill", "kind": "delay", "delay_ms": 1_500, "count": 1})).await;
    let bill = env.issue(request("o-slow")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert_eq!(env.cards().await.len(), 2);

    // The request never reached WeChat: the resend inserts and gets the code.
    env.authorize("o-unsent").await;
    env.fault(json!({"path": "/nontax/insertbill", "kind": "drop", "count": 1})).await;
    let bill = env.issue(request("o-unsent")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted);
    assert!(!bill.card_code.is_empty());
    assert_eq!(env.cards().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_minute_quota_waits_a_minute_instead_of_failing() {
    let mut env = Env::start(test_support::sqlite()).await;
    env.authorize("o-quota").await;
    env.fault(json!({"path": "/card/invoice/platform/getpdf", "kind": "errcode", "errcode": 45011, "count": 1})).await;
    let mut short = tonic::Request::new(request("o-quota"));
    short.set_timeout(std::time::Duration::from_millis(1_500));
    let bill = env.client.issue_bill(short).await.unwrap().into_inner().bill.unwrap();
    assert_eq!(state(&bill), pb::BillState::PdfUploaded, "{bill:?}");
    assert!(bill.last_error.contains("45011"), "{}", bill.last_error);
    assert_eq!(bill.attempts, 1);
    assert_eq!(env.calls("/card/invoice/platform/getpdf").await, 1, "not hammered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_card_status_after_a_lost_answer_is_never_taken_as_inserted() {
    let mut issuing = fast_issuing();
    issuing.invalid_card_status_tries = 3;
    let mut env = Env::start_with(test_support::sqlite(), issuing).await;
    env.authorize("o-40078").await;
    // The first insert reaches WeChat but its answer is lost (it did not land); every resend is
    // answered "invalid card status", which says nothing about the first.
    env.fault(json!({"path": "/nontax/insertbill", "kind": "drop", "count": 1})).await;
    env.fault(json!({"path": "/nontax/insertbill", "kind": "errcode", "errcode": 40078, "count": 3})).await;
    let bill = env.issue(request("o-40078")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Failed, "{bill:?}");
    assert_eq!(failure(&bill), ("WECHAT_INVALID_CARD_STATUS".to_owned(), 40078));
    let message = bill.failure.clone().unwrap().message;
    assert!(message.contains("3 inserts") && message.contains("card permission"), "{message}");
    assert!(env.cards().await.is_empty(), "nothing was inserted");
    assert_eq!(env.calls("/nontax/insertbill").await, 4, "the lost one, then a bounded number of tries");

    // Once the card is fixed at WeChat, a repeated IssueBill starts over and inserts, once.
    let bill = env.issue(request("o-40078")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert!(!bill.card_code.is_empty(), "the insert was answered");
    assert_eq!(env.cards().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_that_landed_is_proven_by_repeated_billing_numbers_only() {
    let mut env = Env::start(test_support::sqlite()).await;
    env.authorize("o-landed").await;
    // The first insert lands but its answer is lost; the resend is answered "invalid card
    // status" once (not proof), then "billing numbers repeated" (proof).
    env.fault(json!({"path": "/nontax/insertbill", "kind": "drop", "after_processing": true, "count": 1})).await;
    env.fault(json!({"path": "/nontax/insertbill", "kind": "errcode", "errcode": 40078, "count": 1})).await;
    let bill = env.issue(request("o-landed")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert!(bill.card_code.is_empty(), "the code was in the lost answer");
    assert_eq!(env.cards().await.len(), 1);
    assert_eq!(env.calls("/nontax/insertbill").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pdf_kept_at_wechat_is_compared_with_the_one_uploaded() {
    let mut env = Env::start(test_support::sqlite()).await;
    // WeChat's copy differs once: uploaded again, then checked and inserted.
    env.authorize("o-differs-once").await;
    env.fault(json!({"path": "/sandbox/pdf", "kind": "corrupt", "count": 1})).await;
    let bill = env.issue(request("o-differs-once")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 2, "uploaded again once");
    assert_eq!(env.calls("/sandbox/pdf").await, 2, "each upload's copy was downloaded and compared");
    assert_eq!(env.cards().await[0]["pdf_sha256"], bill.pdf_sha256.as_str());

    // It differs again after the second upload: the bill fails with its own reason.
    env.authorize("o-differs").await;
    env.fault(json!({"path": "/sandbox/pdf", "kind": "corrupt", "count": 2})).await;
    let bill = env.issue(request("o-differs")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Failed, "{bill:?}");
    assert_eq!(failure(&bill), ("PDF_MISMATCH".to_owned(), 0));
    assert_eq!(env.cards().await.len(), 1, "never inserted");

    // A download that fails is retried like any transient trouble.
    env.authorize("o-download-503").await;
    env.fault(json!({"path": "/sandbox/pdf", "kind": "http_status", "status": 503, "count": 2})).await;
    let bill = env.issue(request("o-download-503")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
}
