//! The sandbox's pages in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/browser/auth_flow.cjs`): open an auth_url, press Authorize, see the bill in the card
//! package with a working PDF link, and open the bill in Chromium's PDF viewer. Screenshots
//! (the bill's first page among them) land in `target/screenshots/`. Needs
//! `/usr/bin/chromium` (Debian package `chromium`) and playwright-core under `.tools/node`, both
//! installed by `./run-tests`; missing, the test fails.

use std::path::Path;
use std::process::Command;

use devstack::{Addresses, DEMO_OPENID};
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_authorizes_in_chromium_and_finds_the_bill() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let node_modules = std::env::var("FISCALBILL_NODE_MODULES")
        .map(Into::into)
        .unwrap_or_else(|_| root.join(".tools/node/node_modules"));
    assert!(
        node_modules.join("playwright-core").is_dir(),
        "playwright-core missing in {}: run ./run-tests",
        node_modules.display()
    );
    let screenshots = root.join("target/screenshots");
    let _ = std::fs::remove_file(screenshots.join("4-bill-pdf.png"));

    let dir = std::env::temp_dir().join(format!("fiscalbill-browser-{}", std::process::id()));
    let stack = devstack::start(Addresses::any_free(), dir, devstack::Data::Fresh).await.unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.addresses.collection_grpc))
        .unwrap()
        .connect_lazy();
    let mut collection = CollectionServiceClient::new(channel);
    let fee = 12_345;
    let created = collection
        .create_authorization(pb::CreateAuthorizationRequest {
            unit_appid: wechat_sandbox::DEMO_UNIT.into(),
            order_id: "browser-1".into(),
            money: fee,
            source: fiscalbill_common::proto::types::Source::Web as i32,
            redirect_url: String::new(),
            bill: Some(e2e::content("browser-1", fee)),
            pdf: Default::default(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorization
        .unwrap();

    let card_package = format!("http://{}/sandbox/users/{DEMO_OPENID}", stack.addresses.sandbox);
    let script = root.join("tests/browser/auth_flow.cjs");
    let (auth_url, shots) = (created.auth_url.clone(), screenshots.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args(["--auth-url", &auth_url, "--card-package", &card_package, "--screenshots", shots.to_str().unwrap()])
            .env("NODE_PATH", &node_modules)
            .output()
            .expect("node is required")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["amount"], "¥123.45");
    assert_eq!(report["cards"], 1);
    assert!(report["pdf_bytes"].as_u64().unwrap() > 1000);
    // Chromium's PDF viewer opened the bill (target/screenshots/4-bill-pdf.png shows its page).
    assert_eq!(report["viewed_as"], "application/pdf", "{report}");
    assert!(screenshots.join("4-bill-pdf.png").metadata().unwrap().len() > 10_000);

    let authorization = collection
        .get_authorization(pb::GetAuthorizationRequest {
            unit_appid: wechat_sandbox::DEMO_UNIT.into(),
            order_id: "browser-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorization
        .unwrap();
    assert_eq!(authorization.state, pb::AuthorizationState::Issued as i32);
    for shot in ["1-authorize.png", "2-authorized.png", "3-card-package.png"] {
        let png = std::fs::read(screenshots.join(shot)).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "{shot}");
    }
    stack.stop().await;
}
