//! Bad gRPC input, method by method: every invalid request is answered INVALID_ARGUMENT with
//! the offending fields named in a google.rpc.BadRequest, nothing panics, and WeChat is never
//! called.

use e2e::*;
use fiscalbill_common::proto::bureau as bureau_pb;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::types as types_pb;

fn expect<T: std::fmt::Debug>(case: &str, result: Result<T, tonic::Status>, fields: &[&str]) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{case}: {status:?}");
    assert_eq!(reason(&status), "INVALID_ARGUMENT", "{case}");
    assert_eq!(violations(&status), fields, "{case}");
}

fn bad_bill() -> types_pb::BillContent {
    types_pb::BillContent {
        fee: -5,
        payer_title: " 张三".into(),
        billing_no: "44010125".into(),
        billing_code: "000\u{0}1".into(),
        billing_time: Some(prost_types::Timestamp { seconds: 5, nanos: 0 }),
        items: vec![types_pb::BillItem {
            name: String::new(),
            quantity: "one".into(),
            unit: "次".into(),
            unit_price: -1,
            amount: 0,
        }],
        remarks: "x".repeat(201),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_invalid_input_without_calling_wechat() {
    let stack = Stack::start(Options::default()).await;
    let mut collection = stack.collection.clone();
    let mut bureau = stack.bureau_client.clone();
    // What the services' start checks called; nothing more may follow.
    let before = stack.get("/sandbox/stats").await;

    // --- collection-svc ---
    let valid = stack.create_request("o-valid", types_pb::Source::Web);
    let cases: Vec<(&str, pb::CreateAuthorizationRequest, Vec<&str>)> = vec![
        (
            "empty request",
            pb::CreateAuthorizationRequest::default(),
            vec!["unit_appid", "order_id", "source", "bill", "money"],
        ),
        (
            "bad bill",
            pb::CreateAuthorizationRequest { bill: Some(bad_bill()), ..valid.clone() },
            vec![
                "bill.fee",
                "bill.payer_title",
                "bill.billing_code",
                "bill.billing_time",
                "bill.items[0].name",
                "bill.items[0].quantity",
                "bill.items[0].unit_price",
                "bill.items[0].amount",
                "bill.items",
                "bill.remarks",
            ],
        ),
        ("unknown source", pb::CreateAuthorizationRequest { source: 9, ..valid.clone() }, vec!["source"]),
        (
            "relative redirect",
            pb::CreateAuthorizationRequest { redirect_url: "/done".into(), ..valid.clone() },
            vec!["redirect_url"],
        ),
        (
            "order id too long",
            pb::CreateAuthorizationRequest { order_id: "o".repeat(65), ..valid.clone() },
            vec!["order_id"],
        ),
        ("money differs", pb::CreateAuthorizationRequest { money: valid.money + 1, ..valid.clone() }, vec!["money"]),
        (
            "html as pdf",
            pb::CreateAuthorizationRequest { pdf: b"<html/>".to_vec().into(), ..valid.clone() },
            vec!["pdf"],
        ),
        (
            "long request id",
            pb::CreateAuthorizationRequest { request_id: "r".repeat(65), ..valid.clone() },
            vec!["request_id"],
        ),
    ];
    for (case, request, fields) in cases {
        expect(case, collection.create_authorization(request).await, &fields);
    }
    let key = |unit: &str, order: &str| (unit.to_owned(), order.to_owned());
    for (unit, order, fields) in [key("", ""), key("wx123", "ok"), key(UNIT, "bad order!")]
        .into_iter()
        .zip([vec!["unit_appid", "order_id"], vec!["unit_appid"], vec!["order_id"]])
        .map(|((u, o), f)| (u, o, f))
    {
        let get = pb::GetAuthorizationRequest { unit_appid: unit.clone(), order_id: order.clone() };
        expect("GetAuthorization", collection.get_authorization(get).await, &fields);
        let sync = pb::SyncAuthorizationRequest { unit_appid: unit.clone(), order_id: order.clone() };
        expect("SyncAuthorization", collection.sync_authorization(sync).await, &fields);
        let retry = pb::RetryIssueRequest { unit_appid: unit.clone(), order_id: order.clone() };
        expect("RetryIssue", collection.retry_issue(retry).await, &fields);
        let reject = pb::RejectAuthorizationRequest {
            unit_appid: unit,
            order_id: order,
            reason: "why".into(),
            url: String::new(),
        };
        expect("RejectAuthorization", collection.reject_authorization(reject).await, &fields);
    }
    let reject = pb::RejectAuthorizationRequest {
        unit_appid: UNIT.into(),
        order_id: "o".into(),
        reason: "x".repeat(129),
        url: "ftp://x".into(),
    };
    expect("RejectAuthorization reason and url", collection.reject_authorization(reject).await, &["reason", "url"]);
    let list =
        pb::ListAuthorizationsRequest { unit_appid: "x".into(), state: 42, page_size: -1, page_token: "%%%".into() };
    expect(
        "ListAuthorizations",
        collection.list_authorizations(list).await,
        &["unit_appid", "state", "page_size", "page_token"],
    );
    expect(
        "GetAccessToken",
        collection.get_access_token(pb::GetAccessTokenRequest { appid: String::new() }).await,
        &["appid"],
    );
    expect(
        "GetCardTicket",
        collection.get_card_ticket(pb::GetCardTicketRequest { appid: "wxZZ".into() }).await,
        &["appid"],
    );

    // --- bureau-svc ---
    let template = bureau_pb::CreateCardTemplateRequest {
        unit_appid: "wx".into(),
        payee: "\n".into(),
        logo_url: "javascript:x".into(),
        logo_image: Default::default(),
    };
    expect("CreateCardTemplate", bureau.create_card_template(template).await, &["unit_appid", "payee", "logo_url"]);
    let template = bureau_pb::CreateCardTemplateRequest {
        unit_appid: "wxc0000000000000c9".into(),
        payee: "某某医院".into(),
        logo_url: String::new(),
        logo_image: b"GIF89a not a jpg or png".to_vec().into(),
    };
    expect("CreateCardTemplate", bureau.create_card_template(template).await, &["logo_image"]);
    expect(
        "GetCardTemplate",
        bureau.get_card_template(bureau_pb::GetCardTemplateRequest { unit_appid: String::new() }).await,
        &["unit_appid"],
    );
    let templates = bureau_pb::ListCardTemplatesRequest { page_size: 1001, page_token: "!".into() };
    expect("ListCardTemplates", bureau.list_card_templates(templates).await, &["page_size", "page_token"]);
    let issue = bureau_pb::IssueBillRequest {
        unit_appid: UNIT.into(),
        order_id: "o-bad".into(),
        content: Some(bad_bill()),
        pdf: b"%PDF-1.4 truncated".to_vec().into(),
        request_id: "a b".into(),
        authorized_appid: "wxAPP".into(),
    };
    expect(
        "IssueBill",
        bureau.issue_bill(issue).await,
        &[
            "content.fee",
            "content.payer_title",
            "content.billing_code",
            "content.billing_time",
            "content.items[0].name",
            "content.items[0].quantity",
            "content.items[0].unit_price",
            "content.items[0].amount",
            "content.items",
            "content.remarks",
            "pdf",
            "request_id",
            "authorized_appid",
        ],
    );
    expect(
        "IssueBill empty",
        bureau.issue_bill(bureau_pb::IssueBillRequest::default()).await,
        &["unit_appid", "order_id", "content"],
    );
    expect(
        "GetBill",
        bureau.get_bill(bureau_pb::GetBillRequest { unit_appid: "x".into(), order_id: "y z".into() }).await,
        &["unit_appid", "order_id"],
    );
    let bills =
        bureau_pb::ListBillsRequest { unit_appid: "x".into(), state: -3, page_size: 5000, page_token: "zz".into() };
    expect("ListBills", bureau.list_bills(bills).await, &["unit_appid", "state", "page_size", "page_token"]);
    let update =
        bureau_pb::UpdateBillStatusRequest { unit_appid: "x".into(), order_id: String::new(), reimburse_status: 99 };
    expect(
        "UpdateBillStatus",
        bureau.update_bill_status(update).await,
        &["unit_appid", "order_id", "reimburse_status"],
    );

    // Nothing reached WeChat, and both services still answer.
    let stats = stack.get("/sandbox/stats").await;
    assert_eq!(stats["calls"], before["calls"]);
    assert!(bureau.list_bills(bureau_pb::ListBillsRequest::default()).await.is_ok());
    assert!(collection.list_authorizations(pb::ListAuthorizationsRequest::default()).await.is_ok());
}
