//! collection-svc's API in the whole system: validation, idempotency, RetryIssue,
//! SyncAuthorization, the token server, listing.

use e2e::*;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::types::Source;
use serde_json::json;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_field_violations_and_no_wechat_call() {
    let mut stack = Stack::start(Options::default()).await;
    let mut bad = stack.create_request("bad order", Source::Unspecified);
    bad.money = 1;
    bad.redirect_url = "javascript:alert(1)".into();
    bad.pdf = b"not a pdf".to_vec().into();
    bad.request_id = "has space".into();
    bad.bill.as_mut().unwrap().payer_title = String::new();
    let status = stack.collection.create_authorization(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // money is compared with the fee only once the bill itself is valid.
    assert_eq!(violations(&status), ["order_id", "source", "redirect_url", "bill.payer_title", "pdf", "request_id"]);

    let mut mismatch = stack.create_request("o-1", Source::Web);
    mismatch.money = 1;
    assert_eq!(violations(&stack.collection.create_authorization(mismatch).await.unwrap_err()), ["money"]);

    let mut foreign = stack.create_request("o-2", Source::Web);
    foreign.unit_appid = "wx00000000000000ff".into();
    let status = stack.collection.create_authorization(foreign).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::FailedPrecondition, "UNIT_NOT_SERVED"));
    assert_eq!(stack.calls("/nontax/getbillauthurl").await, 0);

    let status = stack
        .collection
        .get_authorization(pb::GetAuthorizationRequest { unit_appid: UNIT.into(), order_id: "none".into() })
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::NotFound, "AUTHORIZATION_NOT_FOUND"));
    let status = stack
        .collection
        .reject_authorization(pb::RejectAuthorizationRequest {
            unit_appid: UNIT.into(),
            order_id: "x".into(),
            reason: String::new(),
            url: "http://x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["reason", "url"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_authorization_is_idempotent() {
    let mut stack = Stack::start(Options::default()).await;
    let mut request = stack.create_request("o-idem", Source::Web);
    request.request_id = "biz-42".into();
    let first =
        stack.collection.create_authorization(request.clone()).await.unwrap().into_inner().authorization.unwrap();
    let again =
        stack.collection.create_authorization(request.clone()).await.unwrap().into_inner().authorization.unwrap();
    assert_eq!(first.auth_url, again.auth_url);
    assert_eq!(stack.calls("/nontax/getbillauthurl").await, 1);

    let mut changed = request.clone();
    changed.redirect_url = "https://elsewhere.example/".into();
    let status = stack.collection.create_authorization(changed).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::AlreadyExists, "ORDER_CONFLICT"));
    let mut reused = stack.create_request("o-other", Source::Web);
    reused.request_id = "biz-42".into();
    let status = stack.collection.create_authorization(reused).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::InvalidArgument, "REQUEST_ID_REUSED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplied_pdf_reaches_the_card_package() {
    let mut stack = Stack::start(Options::default()).await;
    let pdf = wechat::pdf::sample("hospital's own bill");
    let mut request = stack.create_request("o-pdf", Source::Web);
    request.pdf = pdf.clone().into();
    let created = stack.collection.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
    stack.answer(&created.auth_url, false).await;
    stack.wait_for("o-pdf", pb::AuthorizationState::Issued).await;
    let card = &stack.cards(PAYER).await[0];
    let downloaded = stack.http.get(card["pdf_url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(downloaded.as_ref(), pdf.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_issue_can_be_retried() {
    let mut stack = Stack::start(Options::default()).await;
    stack
        .post("/sandbox/faults", json!({"path": "/nontax/insertbill", "kind": "errcode", "errcode": 48001, "count": 1}))
        .await;
    let created = stack.create("o-retry").await;
    stack.answer(&created.auth_url, false).await;
    let failed = stack.wait_for("o-retry", pb::AuthorizationState::IssueFailed).await;
    let failure = failed.failure.unwrap();
    assert_eq!((failure.reason.as_str(), failure.wechat_errcode), ("WECHAT_PERMISSION_MISSING", 48001));
    assert!(!failure.wechat_rid.is_empty());

    let retried = stack
        .collection
        .retry_issue(pb::RetryIssueRequest { unit_appid: UNIT.into(), order_id: "o-retry".into() })
        .await
        .unwrap()
        .into_inner()
        .authorization
        .unwrap();
    assert_eq!(retried.state, pb::AuthorizationState::Authorized as i32);
    assert!(retried.failure.is_none());
    stack.wait_for("o-retry", pb::AuthorizationState::Issued).await;
    assert_eq!(stack.cards(PAYER).await.len(), 1);
    let status = stack
        .collection
        .retry_issue(pb::RetryIssueRequest { unit_appid: UNIT.into(), order_id: "o-retry".into() })
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::FailedPrecondition, "INVALID_STATE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billing_number_belongs_to_one_order_from_the_start() {
    billing_numbers(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billing_number_belongs_to_one_order_from_the_start_on_postgres() {
    billing_numbers(Options { postgres: true, ..Options::default() }).await;
}

async fn billing_numbers(options: Options) {
    let mut stack = Stack::start(options).await;
    let first = stack.create("o-number-1").await;
    let links = stack.calls("/nontax/getbillauthurl").await;

    // Another order with the first one's number: refused before a link exists.
    let mut second = stack.create_request("o-number-2", Source::Web);
    second.bill = Some(content("o-number-1", 2_500));
    let status = stack.collection.create_authorization(second).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::AlreadyExists, "BILLING_NUMBER_TAKEN"));
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.metadata["other_order_id"], "o-number-1");
    assert_eq!(info.metadata["other_unit_appid"], UNIT);
    assert_eq!(stack.calls("/nontax/getbillauthurl").await, links, "no WeChat call for it");
    // The first order's own repeat is still the same order.
    assert_eq!(stack.create("o-number-1").await.auth_url, first.auth_url);

    // Racing orders with one number: exactly one gets it.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let mut collection = stack.collection.clone();
            let mut request = stack.create_request(&format!("o-race-{i}"), Source::Web);
            request.bill = Some(content("o-race-number", 2_500));
            tokio::spawn(async move { collection.create_authorization(request).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(reason(&status), "BILLING_NUMBER_TAKEN", "{status:?}"),
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_cannot_help_is_refused_with_the_reason() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("o-doomed").await;
    // Another system used the order's billing number at the bureau directly in the meantime.
    let direct = fiscalbill_common::proto::bureau::IssueBillRequest {
        unit_appid: UNIT.into(),
        order_id: "o-elsewhere".into(),
        content: Some(content("o-doomed", 2_500)),
        pdf: Default::default(),
        request_id: String::new(),
        authorized_appid: String::new(),
    };
    stack.bureau_client.issue_bill(direct).await.unwrap();
    stack.answer(&created.auth_url, false).await;
    let failed = stack.wait_for("o-doomed", pb::AuthorizationState::IssueFailed).await;
    assert_eq!(failed.failure.unwrap().reason, "BILLING_NUMBER_TAKEN");
    let status = stack
        .collection
        .retry_issue(pb::RetryIssueRequest { unit_appid: UNIT.into(), order_id: "o-doomed".into() })
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::FailedPrecondition, "RETRY_CANNOT_FIX"));
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.metadata["failure_reason"], "BILLING_NUMBER_TAKEN");
    assert_eq!(stack.authorization("o-doomed").await.state, pb::AuthorizationState::IssueFailed as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_asks_wechat_on_demand() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("o-sync").await;
    let sync = |stack: &mut Stack| {
        let mut client = stack.collection.clone();
        async move {
            client
                .sync_authorization(pb::SyncAuthorizationRequest { unit_appid: UNIT.into(), order_id: "o-sync".into() })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let pending = sync(&mut stack).await;
    assert_eq!(pending.authorization.unwrap().state, pb::AuthorizationState::Pending as i32);
    assert_eq!(pending.wechat_invoice_status, "");
    // The payer authorizes but every push is lost.
    let dead = json!({"appid": UNIT, "secret": secret(UNIT).expose(), "callback_url": "http://127.0.0.1:9/x", "callback_token": TOKEN, "encoding_aes_key": AES_KEY});
    stack.post("/sandbox/accounts", dead).await;
    assert_eq!(stack.answer(&created.auth_url, false).await["delivered"], false);
    let found = sync(&mut stack).await;
    assert_eq!(found.wechat_invoice_status, "auth success");
    assert_ne!(found.authorization.unwrap().state, pb::AuthorizationState::Pending as i32);
    stack.wait_for("o-sync", pb::AuthorizationState::Issued).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_token_server_hands_out_working_credentials() {
    let mut stack = Stack::start(Options::default()).await;
    let token =
        stack.collection.get_access_token(pb::GetAccessTokenRequest { appid: UNIT.into() }).await.unwrap().into_inner();
    assert_eq!(token.access_token.len(), 136);
    assert!(token.expire_time.unwrap().seconds > wechat::clock::unix_now() + 7000);
    assert!(!format!("{token:?}").contains(&token.access_token), "Debug output hides the token");
    let client = wechat::WechatClient::new(&wechat::WechatHttpConfig {
        base_url: stack.sandbox.base_url().to_owned(),
        ..Default::default()
    })
    .unwrap();
    let ticket = client.get_card_ticket(&token.access_token.clone().into()).await.unwrap();
    let served =
        stack.collection.get_card_ticket(pb::GetCardTicketRequest { appid: UNIT.into() }).await.unwrap().into_inner();
    assert_eq!(served.ticket, ticket.ticket.expose(), "the same ticket as WeChat's current one");
    let app =
        stack.collection.get_access_token(pb::GetAccessTokenRequest { appid: APP.into() }).await.unwrap().into_inner();
    assert_ne!(app.access_token, token.access_token);
    // Asked again: from the cache, no new fetch (one each since the start check).
    stack.collection.get_access_token(pb::GetAccessTokenRequest { appid: UNIT.into() }).await.unwrap();
    let fetches =
        stack.calls_by("/cgi-bin/stable_token", UNIT).await + stack.calls_by("/cgi-bin/stable_token", APP).await;
    assert_eq!(fetches, 2);

    let status =
        stack.collection.get_access_token(pb::GetAccessTokenRequest { appid: BUREAU.into() }).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::NotFound, "ACCOUNT_NOT_SERVED"));
    let status = stack.collection.get_card_ticket(pb::GetCardTicketRequest { appid: "nope".into() }).await.unwrap_err();
    assert_eq!(violations(&status), ["appid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizations_are_listed_newest_first_in_pages() {
    let mut stack = Stack::start(Options::default()).await;
    for i in 0..5 {
        stack.create(&format!("list-{i}")).await;
    }
    let declined = stack.create("list-declined").await;
    stack.answer(&declined.auth_url, true).await;
    stack.wait_for("list-declined", pb::AuthorizationState::Declined).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = stack
            .collection
            .list_authorizations(pb::ListAuthorizationsRequest {
                unit_appid: UNIT.into(),
                state: 0,
                page_size: 4,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.authorizations.into_iter().map(|a| a.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["list-declined", "list-4", "list-3", "list-2", "list-1", "list-0"]);
    let pending = stack
        .collection
        .list_authorizations(pb::ListAuthorizationsRequest {
            state: pb::AuthorizationState::Pending as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.authorizations.len(), 5);
}
