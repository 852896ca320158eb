//! The development stack: `cargo run -- demo` and what `cargo run` writes for scripts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_a_full_flow() {
    devstack::demo::run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_describes_itself_for_scripts() {
    let data_dir = std::env::temp_dir().join(format!("fiscalbill-devstack-test-{}", std::process::id()));
    let stack =
        devstack::start(devstack::Addresses::any_free(), data_dir.clone(), devstack::Data::Fresh).await.unwrap();
    let addresses = stack.addresses.clone();
    assert!(addresses.collection_http.port() != 0 && addresses.bureau_grpc.port() != 0, "the bound ports");
    let s_pappid = stack.s_pappid().await.unwrap();
    let description = stack.description(&s_pappid);
    assert_eq!(description["collection"]["grpc"], addresses.collection_grpc.to_string());
    assert_eq!(description["bureau"]["grpc"], addresses.bureau_grpc.to_string());
    assert_eq!(description["sandbox"]["url"], format!("http://{}", addresses.sandbox));
    assert_eq!(description["s_pappid"].as_str().unwrap().len(), 68);
    let unit = description["accounts"].as_array().unwrap().iter().find(|a| a["appid"] == "wxc0000000000000c1").unwrap();
    assert_eq!(
        unit["callback_url"],
        format!("http://{}/wechat/callback/wxc0000000000000c1", addresses.collection_http)
    );
    assert_eq!(unit["push_mode"], "safe");
    assert!(unit["encoding_aes_key"].as_str().unwrap().len() == 43);
    stack.stop().await;
    assert!(data_dir.join("bureau.db").exists() && data_dir.join("collection.db").exists());
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_keeps_its_data_across_restarts_unless_fresh() {
    use fiscalbill_common::proto::collection as pb;
    let data_dir = std::env::temp_dir().join(format!("fiscalbill-devstack-keep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let start = |data| devstack::start(devstack::Addresses::any_free(), data_dir.clone(), data);
    let get = |stack: &devstack::DevStack| {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.addresses.collection_grpc))
            .unwrap()
            .connect_lazy();
        pb::collection_service_client::CollectionServiceClient::new(channel)
    };
    let http = reqwest::Client::new();
    let cards = |stack: &devstack::DevStack| {
        let url = format!("http://{}/sandbox/users/{}/cards", stack.addresses.sandbox, devstack::DEMO_OPENID);
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().json::<serde_json::Value>().await.unwrap()["cards"].clone() }
    };

    // A first run issues one bill.
    let stack = start(devstack::Data::Keep).await.unwrap();
    assert!(!stack.resumed);
    let mut collection = get(&stack);
    let request = pb::CreateAuthorizationRequest {
        unit_appid: wechat_sandbox::DEMO_UNIT.into(),
        order_id: "kept-1".into(),
        money: 100,
        source: fiscalbill_common::proto::types::Source::Web as i32,
        bill: Some(e2e::content("kept-1", 100)),
        ..Default::default()
    };
    let created = collection.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
    let answer = http
        .post(format!("http://{}/sandbox/authorize", stack.addresses.sandbox))
        .json(&serde_json::json!({"auth_url": created.auth_url, "openid": devstack::DEMO_OPENID, "wait": true}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let issued =
        e2e::wait_for_state(&mut collection, wechat_sandbox::DEMO_UNIT, "kept-1", pb::AuthorizationState::Issued).await;
    stack.stop().await;

    // The next run goes on: the authorization, the card in the package, and the tokens.
    let stack = start(devstack::Data::Keep).await.unwrap();
    assert!(stack.resumed);
    let mut collection = get(&stack);
    let request =
        pb::GetAuthorizationRequest { unit_appid: wechat_sandbox::DEMO_UNIT.into(), order_id: "kept-1".into() };
    let again = collection.get_authorization(request.clone()).await.unwrap().into_inner().authorization.unwrap();
    assert_eq!((again.state, again.card_code.as_str()), (issued.state, issued.card_code.as_str()));
    let kept = cards(&stack).await;
    assert_eq!(kept.as_array().unwrap().len(), 1, "{kept}");
    assert_eq!(kept[0]["code"], issued.card_code.as_str());
    // The unit's token and ticket of the first run are still good at WeChat (the sandbox kept
    // them) and in collection-svc's database: a new link needs neither fetched again.
    let request2 = pb::CreateAuthorizationRequest {
        unit_appid: wechat_sandbox::DEMO_UNIT.into(),
        order_id: "kept-2".into(),
        money: 100,
        source: fiscalbill_common::proto::types::Source::Web as i32,
        bill: Some(e2e::content("kept-2", 100)),
        ..Default::default()
    };
    collection.create_authorization(request2).await.unwrap();
    let stats: serde_json::Value = http
        .get(format!("http://{}/sandbox/stats", stack.addresses.sandbox))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let calls = |path: &str| stats["calls"].as_array().unwrap().iter().filter(|row| row["endpoint"] == path).count();
    assert_eq!(
        (calls("/nontax/getbillauthurl"), calls("/cgi-bin/stable_token"), calls("/cgi-bin/ticket/getticket")),
        (1, 0, 0),
        "{stats}"
    );
    stack.stop().await;

    // --fresh starts empty.
    let stack = start(devstack::Data::Fresh).await.unwrap();
    assert!(!stack.resumed);
    let status = get(&stack).get_authorization(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(cards(&stack).await.as_array().unwrap().is_empty());
    stack.stop().await;
    let _ = std::fs::remove_dir_all(data_dir);
}
