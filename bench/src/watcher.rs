//! How the benchmark's business system learns that a bill is issued: one WatchAuthorizations
//! stream for the unit, as a real business system would hold, resumed after its last token
//! whenever it breaks (the services restart during a run); or GetAuthorization polling
//! (`--poll-ms`), to show the difference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The final answer for an order: Ok once ISSUED, Err with the failure once ISSUE_FAILED.
pub type Outcome = Result<(), String>;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>;

pub struct IssuedWatch {
    waiters: Waiters,
    follower: JoinHandle<()>,
}

impl IssuedWatch {
    /// Opens the stream; returns once the watch is in place.
    pub async fn start(client: CollectionServiceClient<Channel>, unit_appid: &str) -> Result<Self, String> {
        let waiters = Waiters::default();
        let mut follower =
            Follower { client, unit_appid: unit_appid.to_owned(), token: String::new(), waiters: waiters.clone() };
        let stream = follower.open().await.map_err(|status| format!("WatchAuthorizations: {status}"))?;
        let follower = tokio::spawn(follower.run(stream));
        Ok(Self { waiters, follower })
    }

    /// The outcome of `order_id`, to be awaited once its payer has authorized.
    pub fn expect(&self, order_id: &str) -> oneshot::Receiver<Outcome> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().unwrap().insert(order_id.to_owned(), sender);
        receiver
    }

    /// Stops expecting `order_id` (its flow gave up).
    pub fn forget(&self, order_id: &str) {
        self.waiters.lock().unwrap().remove(order_id);
    }
}

impl Drop for IssuedWatch {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

struct Follower {
    client: CollectionServiceClient<Channel>,
    unit_appid: String,
    /// Where the stream stands: a broken stream resumes after it.
    token: String,
    waiters: Waiters,
}

impl Follower {
    /// A stream after `token`, once its first message (the watch is in place) has come.
    async fn open(&mut self) -> Result<tonic::Streaming<pb::WatchAuthorizationsResponse>, tonic::Status> {
        let request = pb::WatchAuthorizationsRequest {
            unit_appid: self.unit_appid.clone(),
            order_ids: vec![],
            states: vec![pb::AuthorizationState::Issued as i32, pb::AuthorizationState::IssueFailed as i32],
            resume_token: self.token.clone(),
        };
        let mut stream = self.client.watch_authorizations(request).await?.into_inner();
        let first = stream.message().await?.ok_or_else(|| tonic::Status::unavailable("the stream ended at once"))?;
        self.token = first.resume_token;
        Ok(stream)
    }

    async fn run(mut self, mut stream: tonic::Streaming<pb::WatchAuthorizationsResponse>) {
        loop {
            while let Ok(Some(message)) = stream.message().await {
                self.token = message.resume_token;
                if let Some(change) = message.change {
                    self.deliver(change);
                }
            }
            // Broken (a service restarting): resume after the last token.
            stream = loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(stream) = self.open().await {
                    break stream;
                }
            };
        }
    }

    fn deliver(&self, change: pb::AuthorizationChange) {
        let Some(waiter) = self.waiters.lock().unwrap().remove(&change.order_id) else {
            return;
        };
        let outcome = if change.state == pb::AuthorizationState::Issued as i32 {
            Ok(())
        } else {
            Err(format!("{} failed: {:?}", change.order_id, change.failure))
        };
        let _ = waiter.send(outcome);
    }
}
