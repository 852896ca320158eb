//! Both services as processes of their own (the `fiscalbill-service` binary), beside a sandbox
//! in the test's process: for tests that kill a service with SIGKILL, or that need each service
//! to own its process (its global telemetry, its service.name).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};
use wechat_sandbox::RunningSandbox;

use crate::{AES_KEY, BUREAU, Options, TOKEN, UNIT, sandbox_accounts, secret};

/// One service process, started and stopped at will on its configuration file.
pub struct ServiceProcess {
    binary: PathBuf,
    role: &'static str,
    config: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    pub fn start(&mut self) {
        let child = Command::new(&self.binary)
            .args([self.role, self.config.to_str().unwrap()])
            .spawn()
            .expect("the service process starts");
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as an operator stops it: the service drains and flushes, then exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            assert!(status.success(), "kill -TERM {}", child.id());
            let exit = child.wait().unwrap();
            assert!(exit.success(), "{} exited with {exit} after SIGTERM", self.role);
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A sandbox and the configurations of both services (SQLite in `dir`, quick retries, no
/// client auth), their processes not started yet.
pub struct ProcessStack {
    pub sandbox: RunningSandbox,
    /// The sandbox's base URL.
    pub base: String,
    pub collection_grpc: SocketAddr,
    pub bureau_grpc: SocketAddr,
    pub bureau: ServiceProcess,
    pub collection: ServiceProcess,
}

impl ProcessStack {
    /// `binary`: the `fiscalbill-service` program (`env!("CARGO_BIN_EXE_fiscalbill-service")`).
    /// `adjust` may change the configurations (bureau, collection) before they are written.
    pub async fn new(binary: &str, dir: &Path, adjust: impl FnOnce(&mut Value, &mut Value)) -> ProcessStack {
        std::fs::create_dir_all(dir).unwrap();
        let options = Options::default();
        let sandbox = wechat_sandbox::start(wechat_sandbox::SandboxConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            accounts: sandbox_accounts(&options),
            push_timeout_ms: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
        let base = sandbox.base_url().to_owned();
        // Fixed ports: each service keeps its own across restarts.
        let devstack::Addresses {
            bureau_grpc,
            bureau_http,
            bureau_admin,
            collection_grpc,
            collection_http,
            collection_admin,
            ..
        } = devstack::Addresses::ephemeral();
        let mut unit =
            serde_json::to_value(sandbox_accounts(&options).into_iter().find(|a| a.appid == UNIT).unwrap()).unwrap();
        unit["callback_url"] = json!(format!("http://{collection_http}/wechat/callback/{UNIT}"));
        let http = reqwest::Client::new();
        http.post(format!("{base}/sandbox/accounts")).json(&unit).send().await.unwrap().error_for_status().unwrap();

        let server = |grpc: SocketAddr, http: SocketAddr, admin: SocketAddr| json!({"grpc_listen": grpc, "http_listen": http, "admin_listen": admin, "shutdown_grace_ms": 1000});
        let wechat = json!({"base_url": base, "timeout_ms": 1000, "resend_backoff_ms": 10});
        let (certificate, key) = devstack::dev_signing_files(dir);
        let mut bureau = json!({
            "signing": {"certificate": {"file": certificate}, "key": {"file": key}},
            "server": server(bureau_grpc, bureau_http, bureau_admin),
            "database": {"url": format!("sqlite://{}", dir.join("bureau.db").display())},
            "wechat": wechat,
            "account": {"appid": BUREAU, "secret": secret(BUREAU).expose(), "name": "沙箱市财政局"},
            "issuing": {"retry_base_ms": 20, "retry_max_ms": 300, "poll_interval_ms": 20, "lease_secs": 2, "workers": 32},
            "units": [{"appid": UNIT, "payee": "沙箱市人民医院", "logo_file": devstack::demo_logo_file(dir)}],
            "auth": {"enabled": false},
        });
        let mut collection = json!({
            "server": server(collection_grpc, collection_http, collection_admin),
            "database": {"url": format!("sqlite://{}", dir.join("collection.db").display())},
            "wechat": wechat,
            "bureau": {"endpoint": format!("http://{bureau_grpc}"), "issue_deadline_ms": 2000, "connect_timeout_ms": 300},
            "units": [{"appid": UNIT, "secret": secret(UNIT).expose(), "callback_token": TOKEN, "encoding_aes_key": AES_KEY}],
            "authorization": {"reconcile_after_secs": 1, "reconcile_interval_secs": 1},
            "dispatch": {"workers": 32, "poll_interval_ms": 20, "retry_base_ms": 50, "retry_max_ms": 500, "progress_poll_ms": 50, "lease_secs": 2},
            "auth": {"enabled": false},
        });
        adjust(&mut bureau, &mut collection);
        let process = |role: &'static str, config: Value| ServiceProcess {
            binary: binary.into(),
            role,
            config: write(dir, &format!("{role}.json"), &config),
            child: None,
        };
        ProcessStack {
            sandbox,
            base,
            collection_grpc,
            bureau_grpc,
            bureau: process("bureau", bureau),
            collection: process("collection", collection),
        }
    }

    /// Waits until both services report SERVING (at most `limit`).
    pub async fn wait_serving(&self, limit: Duration) {
        for addr in [self.bureau_grpc, self.collection_grpc] {
            fiscalbill_common::server::wait_until_serving(addr, limit).await.unwrap();
        }
    }
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}
