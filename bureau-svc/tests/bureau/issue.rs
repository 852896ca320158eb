//! Issuing bills: templates, idempotency, PDFs, validation, listing.

use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::proto::bureau as pb;
use sha2::Digest;

use crate::on_both_databases;
use crate::support::*;

async fn first_issue_creates_the_template_once(db: DatabaseConfig) {
    let mut env = Env::start(db).await;
    env.authorize("o-1").await;
    let bill = env.issue(request("o-1")).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
    assert_eq!(bill.openid, PAYER);
    assert!(!bill.card_code.is_empty() && bill.card_id.len() == 28);
    assert_eq!(bill.pdf_origin, pb::PdfOrigin::Rendered as i32);
    assert_eq!(bill.reimburse_status, fiscalbill_common::proto::types::ReimburseStatus::Init as i32);

    let cards = env.cards().await;
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["code"], bill.card_code.as_str());
    assert_eq!(cards[0]["pdf_sha256"], bill.pdf_sha256.as_str());
    assert_eq!(cards[0]["fee"], 1_500);
    for (path, calls) in [
        ("/card/invoice/seturl", 1),
        ("/nontax/createbillcard", 1),
        ("/card/invoice/platform/setpdf", 1),
        ("/card/invoice/platform/getpdf", 1),
        ("/nontax/insertbill", 1),
        ("/cgi-bin/stable_token", 1),
    ] {
        assert_eq!(env.calls(path).await, calls, "{path}");
    }
    let template = env
        .client
        .get_card_template(pb::GetCardTemplateRequest { unit_appid: UNIT.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(template.template.unwrap().card_id, bill.card_id);
}
on_both_databases!(first_issue_creates_the_template_once);

async fn many_bills_share_one_template(db: DatabaseConfig) {
    let mut env = Env::start(db).await;
    let orders: Vec<String> = (0..12).map(|i| format!("many-{i}")).collect();
    for order in &orders {
        env.authorize(order).await;
    }
    let calls: Vec<_> = orders
        .iter()
        .map(|order| {
            let mut client = env.client.clone();
            let request = request(order);
            tokio::spawn(async move { client.issue_bill(request).await.unwrap().into_inner().bill.unwrap() })
        })
        .collect();
    let mut card_ids = std::collections::BTreeSet::new();
    for call in calls {
        let bill = call.await.unwrap();
        assert_eq!(state(&bill), pb::BillState::Inserted, "{bill:?}");
        card_ids.insert(bill.card_id);
    }
    assert_eq!(card_ids.len(), 1, "one template for the unit");
    assert_eq!(env.calls("/nontax/createbillcard").await, 1);
    assert_eq!(env.calls("/nontax/insertbill").await, 12);
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 12);
    assert_eq!(env.cards().await.len(), 12);
}
on_both_databases!(many_bills_share_one_template);

async fn repeats_are_idempotent(db: DatabaseConfig) {
    let mut env = Env::start(db).await;
    env.authorize("o-r").await;
    let mut first = request("o-r");
    first.request_id = "req-1".into();
    let bill = env.issue(first.clone()).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted);
    // The same call again, by natural key and by request_id, in parallel.
    let again = env.issue(first.clone()).await.unwrap();
    let mut without_id = first.clone();
    without_id.request_id.clear();
    let by_key = env.issue(without_id).await.unwrap();
    assert_eq!(
        (again.card_code.as_str(), by_key.card_code.as_str()),
        (bill.card_code.as_str(), bill.card_code.as_str())
    );
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 1);
    assert_eq!(env.calls("/nontax/insertbill").await, 1);
    assert_eq!(env.cards().await.len(), 1);

    // Same order, different content: a conflict, not a second bill.
    let mut changed = first.clone();
    changed.content.as_mut().unwrap().payer_title = "李四".into();
    let status = env.issue(changed).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::AlreadyExists, "ORDER_CONFLICT"));
    // The request_id of another order.
    env.authorize("o-r2").await;
    let mut reused = request("o-r2");
    reused.request_id = "req-1".into();
    let status = env.issue(reused).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), ["request_id"]);
    // The billing numbers of another order.
    let mut taken = request("o-r2");
    taken.content = first.content.clone();
    let status = env.issue(taken).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::AlreadyExists, "BILLING_NUMBER_TAKEN"));
    assert_eq!(env.calls("/nontax/insertbill").await, 1);
}
on_both_databases!(repeats_are_idempotent);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplied_pdfs_are_validated_and_inserted_as_given() {
    let mut env = Env::start(fiscalbill_common::db::test_support::sqlite()).await;
    env.authorize("o-pdf").await;
    let pdf = wechat::pdf::sample("Supplied bill o-pdf");
    let mut supplied = request("o-pdf");
    supplied.pdf = pdf.clone().into();
    let bill = env.issue(supplied.clone()).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted);
    assert_eq!(bill.pdf_origin, pb::PdfOrigin::Supplied as i32);
    let sha = hex::encode(sha2::Sha256::digest(&pdf));
    assert_eq!(bill.pdf_sha256, sha);
    assert_eq!(env.cards().await[0]["pdf_sha256"], sha.as_str());
    // The same order without the PDF is another request.
    let mut rendered = supplied.clone();
    rendered.pdf = Default::default();
    assert_eq!(env.issue(rendered).await.unwrap_err().code(), tonic::Code::AlreadyExists);

    // Not a PDF, a truncated one, one whose objects are not where its table says, an encrypted
    // one, one without pages, one over the limit: INVALID_ARGUMENT on `pdf` saying which, and
    // no WeChat call.
    let mut truncated = pdf.clone();
    truncated.truncate(pdf.len() - 30);
    let mut oversized = wechat::pdf::sample("big");
    oversized.splice(9..9, std::iter::repeat_n(b'%', 2 * 1024 * 1024));
    let mut shifted = pdf.clone();
    shifted.splice(15..15, *b"\n\n\n\n");
    let cases = [
        (b"<html>not a pdf</html>".to_vec(), "no %PDF"),
        (truncated, "PDF"),
        (shifted, "cross-reference table does not resolve"),
        (wechat::pdf::encrypted_sample(), "encrypted"),
        (wechat::pdf::sample_without_pages(), "no pages"),
        (oversized, "more than the limit"),
    ];
    for (bad, why) in cases {
        let mut invalid = request("o-bad-pdf");
        invalid.pdf = bad.into();
        let status = env.issue(invalid).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(violations(&status), ["pdf"]);
        assert!(status.message().contains(why), "{why}: {}", status.message());
    }
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, 1);

    // The rendered bill is a real PDF with the bill's text.
    env.authorize("o-rendered").await;
    let rendered = env.issue(request("o-rendered")).await.unwrap();
    let card = env.cards().await.into_iter().find(|c| c["code"] == rendered.card_code.as_str()).unwrap();
    let downloaded = env.http.get(card["pdf_url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    wechat::pdf::validate(&downloaded, 1 << 20).unwrap();
    assert!(downloaded.len() < 200 * 1024, "{} bytes", downloaded.len());
    // Signed by the bureau's certificate, which GetBill names.
    assert!(String::from_utf8_lossy(&downloaded).contains("/SubFilter /adbe.pkcs7.detached"));
    assert_eq!(rendered.signer_certificate_sha256, env.signer_sha256);
    assert_eq!(bill.signer_certificate_sha256, "", "a supplied PDF is not the bureau's to sign");

    // Unless [signing] sign_supplied: then it is signed as an incremental update that keeps
    // the unit's bytes, and a repeat with the same PDF is still the same request.
    env.restart_with(false, |config| config.signing.as_mut().unwrap().sign_supplied = true).await;
    env.authorize("o-signed").await;
    let mut signed = request("o-signed");
    signed.pdf = wechat::pdf::sample("Supplied bill o-signed").into();
    let bill = env.issue(signed.clone()).await.unwrap();
    assert_eq!(state(&bill), pb::BillState::Inserted);
    assert_eq!(bill.signer_certificate_sha256, env.signer_sha256);
    let card = env.cards().await.into_iter().find(|c| c["code"] == bill.card_code.as_str()).unwrap();
    let downloaded = env.http.get(card["pdf_url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert!(downloaded.starts_with(&signed.pdf), "the unit's bytes come first, unchanged");
    assert!(String::from_utf8_lossy(&downloaded).contains("/adbe.pkcs7.detached"));
    assert_eq!(bill.pdf_sha256, hex::encode(sha2::Sha256::digest(&downloaded)));
    assert_eq!(env.issue(signed).await.unwrap().card_code, bill.card_code, "the repeat is the same bill");

    // A PDF within the limit that the signature would take over it is refused before WeChat
    // (whose setpdf would answer 40006), saying by how much.
    let setpdf_before = env.calls("/card/invoice/platform/setpdf").await;
    let limit = 2 * 1024 * 1024;
    let mut large = request("o-large");
    large.pdf = wechat::pdf::sample(&"x".repeat(limit - wechat::pdf::sample("").len() - 1000)).into();
    assert!(large.pdf.len() <= limit && large.pdf.len() > limit - 2000, "{}", large.pdf.len());
    let status = env.issue(large).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), ["pdf"]);
    assert!(status.message().contains("with the bureau's signature"), "{}", status.message());
    assert_eq!(env.calls("/card/invoice/platform/setpdf").await, setpdf_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_with_field_violations_and_no_wechat_call() {
    let mut env = Env::start(fiscalbill_common::db::test_support::sqlite()).await;
    // The start check (token, s_pappid) is done; from here on, nothing may call WeChat.
    env.wait_wechat_ready().await;
    let before = env.get("/sandbox/stats").await;
    let mut bad = request("has space");
    bad.unit_appid = "wxNOTHEX".into();
    let content = bad.content.as_mut().unwrap();
    content.fee = 0;
    content.billing_no = "".into();
    content.billing_time = None;
    content.items[0].quantity = "-1".into();
    let status = env.issue(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        [
            "unit_appid",
            "order_id",
            "content.fee",
            "content.billing_no",
            "content.billing_time",
            "content.items[0].quantity",
            "content.items"
        ]
    );
    let mut missing = request("o-x");
    missing.content = None;
    assert_eq!(violations(&env.issue(missing).await.unwrap_err()), ["content"]);

    // A unit the bureau has not onboarded: refused before any WeChat call.
    let mut foreign = request("o-foreign");
    foreign.unit_appid = OTHER_UNIT.into();
    let status = env.issue(foreign).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::FailedPrecondition, "UNIT_NOT_ONBOARDED"));
    let stats = env.get("/sandbox/stats").await;
    assert_eq!(stats["calls"], before["calls"], "no WeChat call for any of these requests");

    let status =
        env.client.get_bill(pb::GetBillRequest { unit_appid: UNIT.into(), order_id: "nope".into() }).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::NotFound, "BILL_NOT_FOUND"));
    let status = env
        .client
        .list_bills(pb::ListBillsRequest { page_size: 5000, page_token: "garbage".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["page_size", "page_token"]);
}

async fn bills_are_listed_newest_first_in_pages(db: DatabaseConfig) {
    let mut env = Env::start(db).await;
    for i in 0..5 {
        let order = format!("list-{i}");
        env.authorize(&order).await;
        env.issue(request(&order)).await.unwrap();
    }
    let mut failed = request("list-failed");
    failed.authorized_appid = APP.into(); // never authorized under the App: fails after the window
    env.issue(failed).await.unwrap();
    env.final_bill("list-failed").await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = env
            .client
            .list_bills(pb::ListBillsRequest { unit_appid: UNIT.into(), state: 0, page_size: 2, page_token: token })
            .await
            .unwrap()
            .into_inner();
        assert!(page.bills.len() <= 2);
        seen.extend(page.bills.into_iter().map(|b| b.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["list-failed", "list-4", "list-3", "list-2", "list-1", "list-0"]);
    let inserted = env
        .client
        .list_bills(pb::ListBillsRequest { state: pb::BillState::Inserted as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inserted.bills.len(), 5);
    let failed = env
        .client
        .list_bills(pb::ListBillsRequest {
            state: pb::BillState::Failed as i32,
            unit_appid: UNIT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.bills.len(), 1);
    let other = env
        .client
        .list_bills(pb::ListBillsRequest { unit_appid: OTHER_UNIT.into(), ..Default::default() })
        .await
        .unwrap();
    assert!(other.into_inner().bills.is_empty());
}
on_both_databases!(bills_are_listed_newest_first_in_pages);
