//! `cargo run -- demo`: one full flow on a fresh stack (free ports, a temporary data
//! directory), narrated step by step.

use std::time::{Duration, Instant};

use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use fiscalbill_common::proto::types as types_pb;
use wechat_sandbox::DEMO_UNIT;

use crate::{Addresses, DEMO_OPENID};

fn step(number: u32, text: &str) {
    println!("\n[{number}] {text}");
}

pub async fn run() -> Result<(), String> {
    let data_dir = std::env::temp_dir().join(format!("fiscalbill-demo-{}", std::process::id()));
    let started = Instant::now();
    step(1, "Starting the WeChat sandbox, bureau-svc and collection-svc on free ports");
    let stack =
        crate::start(Addresses::any_free(), data_dir.clone(), crate::Data::Fresh).await.map_err(|e| e.to_string())?;
    let outcome = flow(&stack).await;
    stack.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome?;
    println!(
        "\nDone in {:.1} s; the demo's stack is stopped. `cargo run` starts one that stays up (its card package: \
         http://127.0.0.1:8900/sandbox/users/{DEMO_OPENID}).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn flow(stack: &crate::DevStack) -> Result<(), String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.addresses.collection_grpc))
        .map_err(|e| e.to_string())?
        .connect_lazy();
    let mut collection = CollectionServiceClient::new(channel);
    let http = reqwest::Client::new();
    let sandbox = format!("http://{}", stack.addresses.sandbox);
    let order_id = format!("demo-{}", std::process::id());

    step(2, "The hospital's business system asks collection-svc for an authorization link (CreateAuthorization)");
    let fee = 12_800;
    let request = pb::CreateAuthorizationRequest {
        unit_appid: DEMO_UNIT.to_owned(),
        order_id: order_id.clone(),
        money: fee,
        source: types_pb::Source::Web as i32,
        redirect_url: String::new(),
        bill: Some(types_pb::BillContent {
            fee,
            payer_title: "张三".to_owned(),
            billing_no: "44010125".to_owned(),
            billing_code: format!("{:010}", std::process::id()),
            billing_time: Some(prost_types::Timestamp { seconds: wechat::clock::unix_now(), nanos: 0 }),
            items: vec![
                types_pb::BillItem {
                    name: "门诊挂号费".into(),
                    quantity: "1".into(),
                    unit: "次".into(),
                    unit_price: 800,
                    amount: 800,
                },
                types_pb::BillItem {
                    name: "CT 检查费".into(),
                    quantity: "1".into(),
                    unit: "项".into(),
                    unit_price: 12_000,
                    amount: 12_000,
                },
            ],
            remarks: "演示".to_owned(),
        }),
        pdf: Default::default(),
        request_id: String::new(),
    };
    let authorization = collection
        .create_authorization(request)
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner()
        .authorization
        .unwrap_or_default();
    println!(
        "    order {order_id}: {} yuan, state {:?}",
        fee as f64 / 100.0,
        pb::AuthorizationState::try_from(authorization.state).unwrap_or_default()
    );
    println!("    auth_url: {}", authorization.auth_url);

    step(3, "The payer opens the link in WeChat and presses Authorize (the sandbox's page)");
    let answer: serde_json::Value = http
        .post(format!("{sandbox}/sandbox/authorize"))
        .json(&serde_json::json!({"auth_url": authorization.auth_url, "openid": DEMO_OPENID, "wait": true}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;

    step(4, "WeChat pushes user_authorize_invoice (safe mode, encrypted) to collection-svc");
    let attempt = &answer["push"]["attempts"][0];
    println!(
        "    collection-svc answered {} ({:?}) in {} ms",
        attempt["outcome"].as_str().unwrap_or_default(),
        attempt["response_body"].as_str().unwrap_or_default(),
        attempt["elapsed_ms"]
    );

    step(5, "collection-svc hands the bill to bureau-svc (IssueBill), which uploads the PDF and inserts it");
    let issued = wait_issued(&mut collection, &order_id).await?;
    println!("    state ISSUED, card_id {}, card code {}", issued.card_id, issued.card_code);

    step(6, "The bill is in the payer's WeChat card package");
    let cards: serde_json::Value = http
        .get(format!("{sandbox}/sandbox/users/{DEMO_OPENID}/cards"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let card = cards["cards"]
        .as_array()
        .and_then(|cards| cards.iter().find(|c| c["order_id"] == order_id.as_str()))
        .ok_or("the bill is not in the card package")?;
    println!(
        "    {} fen for {}, status {}, PDF sha256 {}",
        card["fee"],
        card["title"].as_str().unwrap_or_default(),
        card["reimburse_status"].as_str().unwrap_or_default(),
        card["pdf_sha256"].as_str().unwrap_or_default()
    );
    let messages: serde_json::Value = http
        .get(format!("{sandbox}/sandbox/users/{DEMO_OPENID}/messages"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    println!("    WeChat notified the payer: {}", messages["messages"][0]["text"].as_str().unwrap_or_default());
    Ok(())
}

async fn wait_issued(
    collection: &mut CollectionServiceClient<tonic::transport::Channel>,
    order_id: &str,
) -> Result<pb::Authorization, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let authorization = collection
            .get_authorization(pb::GetAuthorizationRequest {
                unit_appid: DEMO_UNIT.to_owned(),
                order_id: order_id.to_owned(),
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner()
            .authorization
            .unwrap_or_default();
        match pb::AuthorizationState::try_from(authorization.state) {
            Ok(pb::AuthorizationState::Issued) => return Ok(authorization),
            Ok(pb::AuthorizationState::IssueFailed) => {
                return Err(format!("the bureau could not issue: {:?}", authorization.failure));
            }
            _ if Instant::now() > deadline => return Err("the bill was not issued within 30 s".to_owned()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
