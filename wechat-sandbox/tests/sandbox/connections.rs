//! Slow and silent clients cannot tie the sandbox up: unfinished headers and bodies are closed
//! within their timeouts while other clients are answered.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wechat_sandbox::SandboxConfig;

use crate::support::*;

async fn hold(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// What came back before the connection closed; None if still open after `limit`.
async fn until_closed(mut stream: TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.ok().map(|()| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn unfinished_requests_are_closed_in_time_while_others_are_answered() {
    let config = SandboxConfig {
        accounts: demo_accounts(),
        header_read_timeout_ms: 500,
        request_timeout_ms: 800,
        ..test_config()
    };
    let env = Env::start_with(config).await;
    let addr = env.sandbox.local_addr;
    let silent = hold(addr, b"").await;
    let half_header = hold(addr, b"GET /sandbox/stats HTTP/1.1\r\nHost: x\r\n").await;
    let stalled_body =
        hold(addr, b"POST /sandbox/faults HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n\r\n{").await;
    let stats = env.http.get(format!("{}/sandbox/stats", env.base)).send().await.unwrap();
    assert_eq!(stats.status(), 200, "answered meanwhile");
    assert_eq!(until_closed(silent, Duration::from_secs(5)).await.as_deref(), Some(""));
    assert!(until_closed(half_header, Duration::from_secs(5)).await.is_some(), "half a header: closed");
    let answer = until_closed(stalled_body, Duration::from_secs(5)).await.expect("a stalled body: closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}
