//! Every endpoint through the real client: success and documented error paths.

use base64::Engine;
use serde_json::json;
use sha2::Digest;
use wechat::types::{OrderRef, ReimburseStatus, RejectInsertRequest, UpdateStatusRequest};
use wechat::{CallError, TokenMode, WechatError};

use crate::support::*;

fn errcode(result: Result<impl std::fmt::Debug, CallError>) -> i64 {
    match result {
        Err(CallError::Wechat(error)) => {
            assert!(error.rid().is_some_and(|rid| rid.len() == 26), "errors carry a rid: {error:?}");
            error.errcode().expect("an API error")
        }
        other => panic!("expected a WeChat error, got {other:?}"),
    }
}

#[tokio::test]
async fn seturl_mints_one_s_pappid_per_bureau() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let client = creds.client();
    let first = creds.with_access_token(BUREAU, |t| async move { client.set_url(&t).await }).await.unwrap();
    let again = creds.with_access_token(BUREAU, |t| async move { client.set_url(&t).await }).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.s_pappid.len(), 68);
    let raw = base64::engine::general_purpose::STANDARD.decode(&first.s_pappid).unwrap();
    assert!(raw.starts_with(format!("{BUREAU}_").as_bytes()) && raw.len() == 51);
    assert!(first.invoice_url.starts_with("https://mp.weixin.qq.com/bizmall/authinvoice?action=list&s_pappid="));
}

#[tokio::test]
async fn full_issue_flow_puts_the_bill_in_the_card_package() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let client = creds.client();
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;
    assert_eq!(card_id.len(), 28);

    authorized_order(&env, &creds, &s_pappid, "order-1", "oUser0000000000000000000001").await;
    let order = &OrderRef { s_pappid: s_pappid.clone(), order_id: "order-1".into() };
    let auth = creds.with_access_token(UNIT, |t| async move { client.get_auth_data(&t, order).await }).await.unwrap();
    assert!(auth.is_authorized());
    assert!(auth.auth_time > 0);

    let media = upload_pdf(&creds, "bill order-1").await;
    assert!(media.bytes().all(|b| b.is_ascii_digit()) && media.len() == 16);
    let media_ref = &media;
    let link = creds.with_access_token(BUREAU, |t| async move { client.get_pdf(&t, media_ref).await }).await.unwrap();
    let downloaded = env.http.get(&link.pdf_url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(downloaded.as_ref(), wechat::pdf::sample("bill order-1"));
    assert_eq!(link.pdf_url_expire_time, 7200);

    let request = &insert_request("order-1", &card_id, UNIT, &media, "0000000001");
    let inserted =
        creds.with_access_token(BUREAU, |t| async move { client.insert_bill(&t, request).await }).await.unwrap();
    assert_eq!(inserted.openid, "oUser0000000000000000000001");
    assert!(inserted.code.bytes().all(|b| b.is_ascii_digit()));

    let package = env.get("/sandbox/users/oUser0000000000000000000001/cards").await;
    let cards = package["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["code"], inserted.code.as_str());
    assert_eq!(cards[0]["fee"], 1234);
    assert_eq!(cards[0]["reimburse_status"], "INVOICE_REIMBURSE_INIT");
    let sha = hex::encode(sha2::Sha256::digest(wechat::pdf::sample("bill order-1")));
    assert_eq!(cards[0]["pdf_sha256"], sha.as_str());

    // Status updates follow the documented transitions; CLOSURE is final.
    let update = |status| UpdateStatusRequest {
        card_id: card_id.clone(),
        code: inserted.code.clone(),
        reimburse_status: status,
    };
    for status in [ReimburseStatus::Lock, ReimburseStatus::Init, ReimburseStatus::Closure] {
        let body = &update(status);
        creds.with_access_token(BUREAU, |t| async move { client.update_status(&t, body).await }).await.unwrap();
    }
    let reopen = &update(ReimburseStatus::Init);
    assert_eq!(
        errcode(creds.with_access_token(BUREAU, |t| async move { client.update_status(&t, reopen).await }).await),
        40078
    );
    let wrong_code = &UpdateStatusRequest { code: "999".into(), ..update(ReimburseStatus::Lock) };
    assert_eq!(
        errcode(creds.with_access_token(BUREAU, |t| async move { client.update_status(&t, wrong_code).await }).await),
        72038
    );
    let package = env.get("/sandbox/users/oUser0000000000000000000001/cards").await;
    assert!(package["cards"].as_array().unwrap().is_empty(), "a written-off bill leaves the card package");
}

#[tokio::test]
async fn insertbill_enforces_the_documented_rules() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let client = creds.client();
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;
    let media = upload_pdf(&creds, "x").await;
    let insert = |request: wechat::types::InsertBillRequest| {
        let request = std::sync::Arc::new(request);
        let creds = &creds;
        async move {
            creds
                .with_access_token(BUREAU, |t| {
                    let request = request.clone();
                    async move { client.insert_bill(&t, &request).await }
                })
                .await
        }
    };

    // Never authorized: 72038.
    assert_eq!(errcode(insert(insert_request("o-2", &card_id, UNIT, &media, "1")).await), 72038);
    // Declined: still 72038.
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-3", 100).await;
    env.post("/sandbox/authorize", json!({"auth_url": link, "decline": true})).await;
    assert_eq!(errcode(insert(insert_request("o-3", &card_id, UNIT, &media, "1")).await), 72038);
    // Rejected by the unit: 72035, for insert and getauthdata alike.
    authorized_order(&env, &creds, &s_pappid, "o-4", "oU4").await;
    let reject = &RejectInsertRequest {
        s_pappid: s_pappid.clone(),
        order_id: "o-4".into(),
        reason: "refunded".into(),
        url: None,
    };
    creds.with_access_token(UNIT, |t| async move { client.reject_insert(&t, reject).await }).await.unwrap();
    assert_eq!(errcode(insert(insert_request("o-4", &card_id, UNIT, &media, "1")).await), 72035);
    let order = &OrderRef { s_pappid: s_pappid.clone(), order_id: "o-4".into() };
    assert_eq!(
        errcode(creds.with_access_token(UNIT, |t| async move { client.get_auth_data(&t, order).await }).await),
        72035
    );
    // Authorized under another appid than the one sent: 72038.
    authorized_order(&env, &creds, &s_pappid, "o-5", "oU5").await;
    assert_eq!(errcode(insert(insert_request("o-5", &card_id, APP, &media, "1")).await), 72038);
    // Unknown media: 72040. Unknown template: 40073. Oversized billing code: 72043.
    assert_eq!(errcode(insert(insert_request("o-5", &card_id, UNIT, "123", "1")).await), 72040);
    assert_eq!(errcode(insert(insert_request("o-5", "pUNKNOWN", UNIT, &media, "1")).await), 40073);
    assert_eq!(errcode(insert(insert_request("o-5", &card_id, UNIT, &media, &"9".repeat(21))).await), 72043);
    // Success, then a duplicate billing_no + billing_code: 72042.
    insert(insert_request("o-5", &card_id, UNIT, &media, "1")).await.unwrap();
    authorized_order(&env, &creds, &s_pappid, "o-6", "oU6").await;
    assert_eq!(errcode(insert(insert_request("o-6", &card_id, UNIT, &media, "1")).await), 72042);
    // The unit's token cannot insert: only the account that called seturl can (72015).
    let request = &insert_request("o-6", &card_id, UNIT, &media, "2");
    assert_eq!(
        errcode(creds.with_access_token(UNIT, |t| async move { client.insert_bill(&t, request).await }).await),
        72015
    );
    // The media expires after 3 days.
    env.advance(3 * 86_400 + 1).await;
    assert_eq!(errcode(insert(insert_request("o-6", &card_id, UNIT, &media, "2")).await), 72040);
}

#[tokio::test]
async fn both_documented_body_forms_are_accepted_and_wrong_shapes_fail() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;
    let media = upload_pdf(&creds, "forms").await;
    let token = creds.access_token(BUREAU).await.unwrap().value;
    let url = |path: &str| format!("{}{path}?access_token={}", env.base, token.expose());
    let post = |path: &'static str, body: serde_json::Value| {
        let request = env.http.post(url(path)).json(&body);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };

    // createbillcard with the doc table's unwrapped form.
    let logo_url = demo_logo_url(&creds).await;
    let unwrapped =
        post("/nontax/createbillcard", json!({"payee": "某单位", "base_info": {"logo_url": logo_url}})).await;
    assert_eq!(unwrapped["errcode"], 0);
    let no_payee =
        post("/nontax/createbillcard", json!({"invoice_info": {"base_info": {"logo_url": "https://l"}}})).await;
    assert_eq!(no_payee["errcode"], 72031);
    assert!(no_payee["errmsg"].as_str().unwrap().starts_with("invalid params, payee is empty rid: "));

    // insertbill with the six fields directly under user_card and billing_time as a string.
    authorized_order(&env, &creds, &s_pappid, "o-7", "oU7").await;
    let flat = json!({"order_id": "o-7", "card_id": card_id, "appid": UNIT, "card_ext": {"user_card": {
        "fee": 1, "title": "t", "billing_time": "1511169724", "billing_no": "1", "billing_code": "2", "s_pdf_media_id": media}}});
    assert_eq!(post("/nontax/insertbill", flat).await["errcode"], 0);
    // The known SDK bug: an extra wrapper object → 72031 order_id is empty.
    authorized_order(&env, &creds, &s_pappid, "o-8", "oU8").await;
    let wrapped = json!({"bill": {"order_id": "o-8", "card_id": card_id, "appid": UNIT}});
    let answer = post("/nontax/insertbill", wrapped).await;
    assert_eq!(answer["errcode"], 72031);
    assert!(answer["errmsg"].as_str().unwrap().starts_with("invalid params, order_id is empty"));
    // camelCase keys are not snake_case keys.
    let camel = json!({"orderId": "o-8", "cardId": card_id, "appid": UNIT});
    assert_eq!(post("/nontax/insertbill", camel).await["errcode"], 72031);
    // s_appid instead of s_pappid.
    let ticket = creds.card_ticket(UNIT).await.unwrap().value;
    let unit_token = creds.access_token(UNIT).await.unwrap().value;
    let misspelt = env
        .http
        .post(format!("{}/nontax/getbillauthurl?access_token={}", env.base, unit_token.expose()))
        .json(&json!({"s_appid": s_pappid, "order_id": "o-9", "money": 1, "timestamp": env.now(), "source": "web", "ticket": ticket.expose()}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(misspelt["errcode"], 72031);

    // getpdf with action in the query.
    let by_query = env
        .http
        .post(format!("{}&action=get_url", url("/card/invoice/platform/getpdf")))
        .json(&json!({"s_media_id": media}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(by_query["errcode"], 0);
    assert!(by_query["pdf_url"].as_str().unwrap().contains("/sandbox/pdf/"));
}

#[tokio::test]
async fn protocol_errors_match_wechat() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let token = creds.access_token(BUREAU).await.unwrap().value;
    let seturl = format!("{}/card/invoice/seturl?access_token={}", env.base, token.expose());
    let answer = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().json::<serde_json::Value>().await.unwrap()
    };

    assert_eq!(answer(env.http.get(&seturl)).await["errcode"], 43002);
    assert!(answer(env.http.get(&seturl)).await["errmsg"].as_str().unwrap().starts_with("require POST method rid: "));
    assert_eq!(answer(env.http.post(format!("{}/cgi-bin/token", env.base))).await["errcode"], 43001);
    let bad_json =
        env.http.post(format!("{}/nontax/insertbill?access_token={}", env.base, token.expose())).body("{not json");
    assert_eq!(answer(bad_json).await["errcode"], 47001);
    assert_eq!(answer(env.http.post(format!("{}/card/invoice/seturl", env.base)).body("{}")).await["errcode"], 41001);
    let unknown = format!("{}/card/invoice/seturl?access_token={}", env.base, "A".repeat(136));
    assert_eq!(answer(env.http.post(unknown).body("{}")).await["errcode"], 40001);
    let garbled = format!("{}/card/invoice/seturl?access_token=short!", env.base);
    assert_eq!(answer(env.http.post(garbled).body("{}")).await["errcode"], 40014);
    let empty = env.http.post(format!("{}/nontax/insertbill?access_token={}", env.base, token.expose()));
    assert_eq!(answer(empty).await["errcode"], 44002);
}

#[tokio::test]
async fn token_fetch_errors() {
    let env = Env::start().await;
    let client = env.client();
    let err = client.stable_token(BUREAU, &"wrong".into(), false).await.unwrap_err();
    assert_eq!(err.errcode(), Some(40125));
    let err = client.token("wx00000000000000ff", &"x".into()).await.unwrap_err();
    assert_eq!(err.errcode(), Some(40013));
    let token = client.token(BUREAU, &secret_of(BUREAU)).await.unwrap();
    assert_eq!(token.expires_in, 7200);
    assert_eq!(token.access_token.expose().len(), 136);
    // A token's secrets never show in the error text or Debug output.
    assert!(!format!("{err} {err:?} {token:?}").contains(token.access_token.expose()));
}

#[tokio::test]
async fn setpdf_refuses_what_is_not_a_pdf_or_too_large() {
    let mut config = test_config();
    config.accounts = demo_accounts();
    config.pdf_max_bytes = 4096;
    let env = Env::start_with(config).await;
    let creds = env.credentials(TokenMode::StableToken);
    let client = creds.client();
    let upload = |bytes: Vec<u8>| {
        let bytes = bytes::Bytes::from(bytes);
        let creds = &creds;
        async move {
            creds
                .with_access_token(BUREAU, |t| {
                    let b = bytes.clone();
                    async move { client.set_pdf(&t, b).await }
                })
                .await
        }
    };
    assert_eq!(errcode(upload(b"<html>hello</html>".to_vec()).await), 72040);
    let mut truncated = wechat::pdf::sample("t");
    truncated.truncate(truncated.len() - 10);
    assert_eq!(errcode(upload(truncated).await), 72040);
    let mut big = wechat::pdf::sample("big");
    big.splice(9..9, std::iter::repeat_n(b'%', 5000));
    assert_eq!(errcode(upload(big).await), 40006);
    assert!(upload(wechat::pdf::sample("ok")).await.is_ok());
    // Not multipart at all.
    let token = creds.access_token(BUREAU).await.unwrap().value;
    let raw = env
        .http
        .post(format!("{}/card/invoice/platform/setpdf?access_token={}", env.base, token.expose()))
        .body("%PDF-1.4");
    assert_eq!(raw.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["errcode"], 47001);
}

#[tokio::test]
async fn auth_links_need_the_current_ticket_and_expire() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let client = creds.client();
    let (s_pappid, _) = bureau_setup(&env, &creds).await;
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-10", 500).await;
    assert!(link.starts_with(&format!("{}/sandbox/auth/", env.base)));

    let request = &wechat::types::GetBillAuthUrlRequest {
        s_pappid: s_pappid.clone(),
        order_id: "o-11".into(),
        money: 1,
        timestamp: env.now(),
        source: wechat::types::AuthSource::Web,
        redirect_url: Some("https://unit.example/done".into()),
        ticket: "not-the-ticket".into(),
    };
    let bad_ticket =
        creds.with_access_token(UNIT, |t| async move { client.get_bill_auth_url(&t, request).await }).await;
    assert_eq!(errcode(bad_ticket), 72031);
    let millis = &wechat::types::GetBillAuthUrlRequest {
        timestamp: env.now() * 1000,
        ticket: creds.card_ticket(UNIT).await.unwrap().value,
        ..request.clone()
    };
    assert_eq!(
        errcode(creds.with_access_token(UNIT, |t| async move { client.get_bill_auth_url(&t, millis).await }).await),
        72031
    );

    env.advance(7201).await;
    let (status, body) =
        env.control(reqwest::Method::POST, "/sandbox/authorize", Some(json!({"auth_url": link}))).await;
    assert_eq!(status, 410, "{body}");
    let order = &OrderRef { s_pappid, order_id: "o-10".into() };
    let never = creds.with_access_token(UNIT, |t| async move { client.get_auth_data(&t, order).await }).await;
    assert_eq!(errcode(never), 72038);
}

#[tokio::test]
async fn api_errors_are_typed_with_rid() {
    let env = Env::start().await;
    let client = env.client();
    let error = client.get_card_ticket(&"A".repeat(136).into()).await.unwrap_err();
    match error {
        WechatError::Api { errcode, ref errmsg, ref rid, .. } => {
            assert_eq!(errcode, 40001);
            assert_eq!(errmsg, "invalid credential, access_token is invalid or not latest");
            assert!(rid.is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_repeated_insert_is_refused_only_for_repeated_billing_numbers() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;
    let media = upload_pdf(&creds, "x").await;
    authorized_order(&env, &creds, &s_pappid, "o-1", "oU1").await;
    let bureau = creds.account(BUREAU);
    bureau.insert_bill(&insert_request("o-1", &card_id, UNIT, &media, "1")).await.unwrap();
    // The same order and numbers again: "billing numbers repeated", as WeChat documents.
    assert_eq!(errcode(bureau.insert_bill(&insert_request("o-1", &card_id, UNIT, &media, "1")).await), 72042);
    // WeChat documents no refusal of the same order under new numbers: the sandbox invents
    // none (no "invalid card status"), so a bureau that inserted twice would be caught.
    bureau.insert_bill(&insert_request("o-1", &card_id, UNIT, &media, "2")).await.unwrap();
    let cards = env.get("/sandbox/users/oU1/cards").await;
    assert_eq!(cards["cards"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn template_logos_must_come_from_the_image_upload() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let bureau = creds.account(BUREAU);
    // uploadimg takes a JPG or PNG of at most 1 MB, answers its URL (no errcode), and serves it.
    let png = bytes::Bytes::from_static(wechat_sandbox::DEMO_LOGO_PNG);
    let logo_url = bureau.upload_image(&wechat::image::LogoImage::new(png.clone()).unwrap()).await.unwrap();
    let served = env.http.get(&logo_url).send().await.unwrap();
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.unwrap(), png);
    let token = creds.access_token(BUREAU).await.unwrap().value;
    let upload = |bytes: Vec<u8>| {
        let form = reqwest::multipart::Form::new().part("media", reqwest::multipart::Part::bytes(bytes).file_name("x"));
        let request = env.http.post(format!("{}/cgi-bin/media/uploadimg?access_token={}", env.base, token.expose()));
        async move { request.multipart(form).send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    assert_eq!(upload(b"GIF89a".to_vec()).await["errcode"], 40005);
    let mut huge = wechat_sandbox::DEMO_LOGO_PNG.to_vec();
    huge.resize(1024 * 1024 + 1, 0);
    assert_eq!(upload(huge).await["errcode"], 40009);

    // createbillcard takes only a logo the image upload issued.
    let with_logo =
        |logo_url: &str| wechat::types::BillCardInfo { payee: "某单位".into(), logo_url: logo_url.into() };
    bureau.create_bill_card(&with_logo(&logo_url)).await.unwrap();
    for foreign in ["https://example.org/logo.png", "http://mmbiz.qpic.cn/mmbiz/not-from-here/0"] {
        let error = bureau.create_bill_card(&with_logo(foreign)).await.unwrap_err();
        let CallError::Wechat(WechatError::Api { errcode, ref errmsg, .. }) = error else { panic!("{error:?}") };
        assert_eq!((errcode, errmsg.as_str()), (72031, "invalid params, logo_url is invalid"), "{foreign}");
    }
}
