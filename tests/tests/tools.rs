//! The tools and languages our users bring: grpcurl with reflection only, a Python client
//! generated with grpcio-tools (examples/python) and a Node.js client on @grpc/grpc-js
//! (examples/node). `./run-tests` installs them (a virtualenv and node_modules under `.tools`);
//! a missing tool fails the test.

use std::path::Path;
use std::process::Command;

use devstack::{Addresses, DevStack};

async fn dev_stack(name: &str) -> DevStack {
    let dir = std::env::temp_dir().join(format!("fiscalbill-{name}-{}", std::process::id()));
    devstack::start(Addresses::any_free(), dir, devstack::Data::Fresh).await.unwrap()
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is required (see this file's header): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{program} {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Runs grpcurl off the async runtime.
async fn grpcurl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || run("grpcurl", &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_walk_through_with_reflection_only() {
    let stack = dev_stack("grpcurl").await;
    let collection = stack.addresses.collection_grpc.to_string();
    let collection = collection.as_str();

    let listed = grpcurl(&["-plaintext", collection, "list"]).await;
    assert!(listed.lines().any(|l| l == "fiscalbill.collection.v1.CollectionService"), "{listed}");
    assert!(listed.lines().any(|l| l == "grpc.health.v1.Health"), "{listed}");
    let described =
        grpcurl(&["-plaintext", collection, "describe", "fiscalbill.collection.v1.CollectionService"]).await;
    assert!(
        described.contains("rpc CreateAuthorization ( .fiscalbill.collection.v1.CreateAuthorizationRequest )"),
        "{described}"
    );
    let message = grpcurl(&["-plaintext", collection, "describe", "fiscalbill.type.v1.BillContent"]).await;
    assert!(message.contains("int64 fee = 1;"), "{message}");
    let health = grpcurl(&["-plaintext", "-d", r#"{"service":""}"#, collection, "grpc.health.v1.Health/Check"]).await;
    assert!(health.contains("SERVING"), "{health}");

    let create = r#"{"unit_appid":"wxc0000000000000c1","order_id":"grpcurl-1","money":"1500","source":"SOURCE_WEB",
        "bill":{"fee":"1500","payer_title":"张三","billing_no":"44010125","billing_code":"0000000001",
        "billing_time":"2026-01-01T08:00:00Z","items":[{"name":"门诊挂号费","quantity":"1","unit":"次","unit_price":"1500","amount":"1500"}]}}"#;
    let created = grpcurl(&[
        "-plaintext",
        "-d",
        create,
        collection,
        "fiscalbill.collection.v1.CollectionService/CreateAuthorization",
    ])
    .await;
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["authorization"]["state"], "AUTHORIZATION_STATE_PENDING");
    let auth_url = created["authorization"]["authUrl"].as_str().unwrap();

    // A watch on the order, as a business system would hold one (grpcurl prints each message
    // as it arrives; -max-time ends it).
    let mut watching = Command::new("grpcurl")
        .args([
            "-plaintext",
            "-max-time",
            "8",
            "-d",
            r#"{"unit_appid":"wxc0000000000000c1","order_ids":["grpcurl-1"]}"#,
            collection,
            "fiscalbill.collection.v1.CollectionService/WatchAuthorizations",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The watch is in place once it has printed its first message.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = watching.stdout.take().unwrap();
    let reader = {
        let printed = printed.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut chunk) {
                printed.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    };
    for _ in 0..100 {
        if String::from_utf8_lossy(&printed.lock().unwrap()).contains('}') {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The payer authorizes in the sandbox.
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/sandbox/authorize", stack.addresses.sandbox))
        .json(&serde_json::json!({"auth_url": auth_url, "wait": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["authorized"], true);

    let get = r#"{"unit_appid":"wxc0000000000000c1","order_id":"grpcurl-1"}"#;
    let mut state = String::new();
    for _ in 0..200 {
        let got = grpcurl(&[
            "-plaintext",
            "-d",
            get,
            collection,
            "fiscalbill.collection.v1.CollectionService/GetAuthorization",
        ])
        .await;
        let got: serde_json::Value = serde_json::from_str(&got).unwrap();
        state = got["authorization"]["state"].as_str().unwrap().to_owned();
        if state == "AUTHORIZATION_STATE_ISSUED" {
            assert!(got["authorization"]["cardCode"].as_str().is_some_and(|c| !c.is_empty()));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state, "AUTHORIZATION_STATE_ISSUED");
    tokio::task::spawn_blocking(move || {
        watching.wait().unwrap();
        reader.join().unwrap();
    })
    .await
    .unwrap();
    let watched = String::from_utf8_lossy(&printed.lock().unwrap()).into_owned();
    let messages: Vec<serde_json::Value> =
        serde_json::Deserializer::from_str(&watched).into_iter().map(Result::unwrap).collect();
    assert!(messages[0].get("change").is_none() && messages[0]["resumeToken"].is_string(), "{watched}");
    let states: Vec<&str> = messages[1..].iter().map(|m| m["change"]["state"].as_str().unwrap()).collect();
    assert_eq!(states.first(), Some(&"AUTHORIZATION_STATE_AUTHORIZED"), "{watched}");
    assert_eq!(states.last(), Some(&"AUTHORIZATION_STATE_ISSUED"), "{watched}");

    // An invalid request prints its google.rpc details.
    let invalid = [
        "-plaintext",
        "-d",
        r#"{"unit_appid":"nope","money":"0"}"#,
        collection,
        "fiscalbill.collection.v1.CollectionService/CreateAuthorization",
    ]
    .map(str::to_owned);
    let output =
        tokio::task::spawn_blocking(move || Command::new("grpcurl").args(&invalid).output().unwrap()).await.unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("Code: InvalidArgument")
            && error.contains("google.rpc.BadRequest")
            && error.contains("\"field\":\"unit_appid\""),
        "{error}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_python_client_runs_the_whole_flow() {
    let stack = dev_stack("python").await;
    let collection = stack.addresses.collection_grpc.to_string();
    let sandbox = format!("http://{}", stack.addresses.sandbox);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/flow.py");
    let output = tokio::task::spawn_blocking(move || {
        run(
            "python3",
            &[script.to_str().unwrap(), "--collection", &collection, "--sandbox", &sandbox, "--order-id", "python-1"],
        )
    })
    .await
    .unwrap();
    assert!(output.contains("bill issued: card_id"), "{output}");
    assert!(output.contains("invalid request: INVALID_ARGUMENT, reason INVALID_ARGUMENT"), "{output}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_runs_the_whole_flow() {
    let stack = dev_stack("node").await;
    let collection = stack.addresses.collection_grpc.to_string();
    let sandbox = format!("http://{}", stack.addresses.sandbox);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let node_modules = std::env::var("FISCALBILL_NODE_MODULES")
        .map(Into::into)
        .unwrap_or_else(|_| root.join(".tools/node/node_modules"));
    let script = root.join("examples/node/flow.cjs");
    let output = tokio::task::spawn_blocking(move || {
        let output = Command::new("node")
            .env("NODE_PATH", &node_modules)
            .args([
                script.to_str().unwrap(),
                "--collection",
                &collection,
                "--sandbox",
                &sandbox,
                "--order-id",
                "node-1",
            ])
            .output()
            .unwrap_or_else(|e| panic!("node: {e} (install Node.js)"));
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "node failed ({} from {}): {text}", output.status, node_modules.display());
        text
    })
    .await
    .unwrap();
    assert!(output.contains("bill issued: card_id"), "{output}");
    assert!(
        output.contains("invalid request: INVALID_ARGUMENT, reason INVALID_ARGUMENT, fields unit_appid"),
        "{output}"
    );
    stack.stop().await;
}
