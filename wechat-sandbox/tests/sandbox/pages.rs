//! The human pages: the authorization page a payer opens and the card package.

use wechat::TokenMode;

use crate::support::*;

#[tokio::test]
async fn the_authorization_page_authorizes_through_its_form() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-page", 12_345).await;

    let page = env.http.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("¥123.45"), "{page}");
    assert!(page.contains("沙箱市人民医院") && page.contains("沙箱市财政局") && page.contains("o-page"));
    assert!(page.contains("id=\"authorize\"") && page.contains("id=\"decline\""));

    let form = env
        .http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=authorize&openid=oFormUser");
    let answered = form.send().await.unwrap().text().await.unwrap();
    assert!(answered.contains("Authorized"), "{answered}");
    let orders = env.get("/sandbox/orders").await;
    assert_eq!(orders["orders"][0]["answer"]["state"], "authorized");
    assert_eq!(orders["orders"][0]["answer"]["openid"], "oFormUser");

    // The bill shows in the card package page with a working PDF link.
    let client = creds.client();
    let media = upload_pdf(&creds, "page bill").await;
    let mut request = insert_request("o-page", &card_id, UNIT, &media, "5");
    request.card_ext.user_card.invoice_user_data.fee = 12_345;
    let request = &request;
    let inserted =
        creds.with_access_token(BUREAU, |t| async move { client.insert_bill(&t, request).await }).await.unwrap();
    let package =
        env.http.get(format!("{}/sandbox/users/oFormUser", env.base)).send().await.unwrap().text().await.unwrap();
    assert!(package.contains("¥123.45") && package.contains(&inserted.code) && package.contains("沙箱医院"));
    let pdf = env.http.get(format!("{}/sandbox/cards/{}/pdf", env.base, inserted.code)).send().await.unwrap();
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF-"));

    // Unknown and expired links.
    let missing = env.http.get(format!("{}/sandbox/auth/nope", env.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    env.advance(7_201).await;
    assert_eq!(env.http.get(&link).send().await.unwrap().status(), 410);
}

#[tokio::test]
async fn a_reversed_bill_stays_in_the_card_package_marked_written_off() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;
    authorized_order(&env, &creds, &s_pappid, "o-rev", "oRevUser").await;
    let media = upload_pdf(&creds, "reversed").await;
    let bureau = creds.account(BUREAU);
    let inserted = bureau.insert_bill(&insert_request("o-rev", &card_id, UNIT, &media, "7")).await.unwrap();
    let status = |status| wechat::types::UpdateStatusRequest {
        card_id: card_id.clone(),
        code: inserted.code.clone(),
        reimburse_status: status,
    };
    bureau.update_status(&status(wechat::types::ReimburseStatus::Cancel)).await.unwrap();

    let cards = env.get("/sandbox/users/oRevUser/cards").await;
    assert_eq!(cards["cards"][0]["reimburse_status"], "INVOICE_REIMBURSE_CANCEL");
    assert_eq!(cards["cards"][0]["written_off"], true);
    let page = env.http.get(format!("{}/sandbox/users/oRevUser", env.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("class=\"written-off\"") && page.contains("冲红"), "{page}");
    // Final: neither the bureau nor a reimburser moves it on.
    let error = bureau.update_status(&status(wechat::types::ReimburseStatus::Init)).await.unwrap_err();
    assert!(matches!(error, wechat::CallError::Wechat(ref e) if e.kind() == wechat::ErrorKind::InvalidCardStatus));
    let (code, _) = env
        .control(
            reqwest::Method::POST,
            &format!("/sandbox/cards/{}/status", inserted.code),
            Some(serde_json::json!({"reimburse_status": "INVOICE_REIMBURSE_LOCK"})),
        )
        .await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn the_payer_is_notified_of_an_inserted_bill() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;
    authorized_order(&env, &creds, &s_pappid, "o-note", "oNoteUser").await;
    assert!(env.get("/sandbox/users/oNoteUser/messages").await["messages"].as_array().unwrap().is_empty());
    let media = upload_pdf(&creds, "notified").await;
    let mut request = insert_request("o-note", &card_id, UNIT, &media, "8");
    request.card_ext.user_card.invoice_user_data.fee = 12_345;
    let inserted = creds.account(BUREAU).insert_bill(&request).await.unwrap();

    let messages = env.get("/sandbox/users/oNoteUser/messages").await;
    let message = &messages["messages"][0];
    assert_eq!(message["kind"], "bill_inserted");
    assert_eq!(message["from"], "沙箱市财政局");
    let text = message["text"].as_str().unwrap();
    assert!(text.contains("沙箱医院") && text.contains("¥123.45") && text.contains("44010125"), "{text}");
    let link = message["link"].as_str().unwrap();
    assert_eq!(link, format!("{}/sandbox/users/oNoteUser#card-{}", env.base, inserted.code));
    // The notification leads to the bill on the card package page.
    let page = env.http.get(link).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains(&format!("id=\"card-{}\"", inserted.code)) && page.contains("class=\"message bill_inserted\"")
    );
}

#[tokio::test]
async fn a_rejected_or_answered_order_offers_no_buttons_and_answers_tell_of_their_push() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, _) = bureau_setup(&env, &creds).await;
    // Answered without waiting: the push is there, under way or done, not null.
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-answered", 100).await;
    let answer = env.post("/sandbox/authorize", serde_json::json!({"auth_url": link})).await;
    assert_eq!(answer["push"]["id"], answer["push_id"], "{answer}");
    assert_eq!(answer["push"]["order_id"], "o-answered");
    let page = env.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 409);
    let page = page.text().await.unwrap();
    assert!(page.contains("authorized already") && !page.contains("id=\"authorize\""), "{page}");

    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-rejected", 100).await;
    let reject = wechat::types::RejectInsertRequest {
        s_pappid: s_pappid.clone(),
        order_id: "o-rejected".into(),
        reason: "refunded".into(),
        url: None,
    };
    creds.account(UNIT).reject_insert(&reject).await.unwrap();
    let page = env.http.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("rejected this order") && !page.contains("id=\"authorize\""), "{page}");
}
