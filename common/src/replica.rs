//! Which replica holds a lease. The name is stable across restarts — `[server] replica_id`, or
//! the host name and gRPC port — so that a restarted replica takes back its own in-flight work
//! at once instead of waiting for its old leases to expire, while a dead replica's work still
//! passes to the others when its leases expire. Two live replicas never share a default name
//! (they cannot listen on the same host and port); a configured one must be unique.

use std::net::SocketAddr;

/// This replica's name: the configured one, else `host:grpc_port`. With an ephemeral port (0)
/// there is nothing stable to go by: the name is then unique to this process.
pub fn replica_id(configured: Option<&str>, grpc_listen: SocketAddr) -> String {
    if let Some(id) = configured.map(str::trim).filter(|id| !id.is_empty()) {
        return id.to_owned();
    }
    let host = host_name();
    match grpc_listen.port() {
        0 => format!("{host}-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 4]>())),
        port => format!("{host}:{port}"),
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_stable_across_restarts_and_differs_by_port() {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(replica_id(None, at(50051)), replica_id(None, at(50051)));
        assert_ne!(replica_id(None, at(50051)), replica_id(None, at(50052)));
        assert_ne!(replica_id(None, at(0)), replica_id(None, at(0)));
        assert_eq!(replica_id(Some(" bureau-a "), at(50051)), "bureau-a");
        assert_eq!(replica_id(Some(""), at(50051)), replica_id(None, at(50051)));
    }
}
