//! The load balancer a deployment puts in front of several collection-svc replicas, so that
//! WeChat's pushes (one callback URL per account) reach all of them: each new TCP connection
//! goes to the next replica in turn, or to the one after it when that one does not answer.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Listens on a free local port and forwards to `targets`; runs until the process ends.
pub async fn start(targets: Vec<SocketAddr>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let Ok((inbound, _)) = listener.accept().await else { continue };
            let first = next;
            next = next.wrapping_add(1);
            tokio::spawn(forward(inbound, targets.clone(), first));
        }
    });
    Ok(address)
}

async fn forward(mut inbound: TcpStream, targets: Vec<SocketAddr>, first: usize) {
    for i in 0..targets.len() {
        let Ok(mut outbound) = TcpStream::connect(targets[(first + i) % targets.len()]).await else { continue };
        let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A server that answers each connection with its name.
    async fn named_server(name: u8) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(&[name]).await;
            }
        });
        address
    }

    async fn answer(balancer: std::net::SocketAddr) -> u8 {
        let mut stream = TcpStream::connect(balancer).await.unwrap();
        let mut name = [0u8];
        stream.read_exact(&mut name).await.unwrap();
        name[0]
    }

    #[tokio::test]
    async fn connections_go_to_each_target_in_turn_and_skip_one_that_is_down() {
        let down = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let (a, b) = (named_server(b'a').await, named_server(b'b').await);
        let balancer = super::start(vec![a, down, b]).await.unwrap();
        let mut answers = Vec::new();
        for _ in 0..6 {
            answers.push(answer(balancer).await);
        }
        // a; the dead one's turn goes to the next, b; b; then again.
        assert_eq!(answers, b"abbabb");
    }
}
