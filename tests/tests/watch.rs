//! WatchAuthorizations: a business system learns each change of its orders' states as it
//! commits, resumes a broken stream after the last token it received without missing or
//! repeating anything, and on PostgreSQL sees the changes every replica makes.

use std::collections::HashMap;
use std::time::Duration;

use e2e::*;
use fiscalbill_common::auth::BearerKey;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use pb::AuthorizationState as State;
use tonic::Streaming;

fn watch_request(resume_token: &str) -> pb::WatchAuthorizationsRequest {
    pb::WatchAuthorizationsRequest {
        unit_appid: UNIT.into(),
        order_ids: vec![],
        states: vec![],
        resume_token: resume_token.into(),
    }
}

async fn watch(
    client: &mut CollectionClient,
    request: pb::WatchAuthorizationsRequest,
) -> Streaming<pb::WatchAuthorizationsResponse> {
    client.watch_authorizations(request).await.unwrap().into_inner()
}

/// The next message; a stream that says nothing for 20 s fails the test.
async fn next(
    stream: &mut Streaming<pb::WatchAuthorizationsResponse>,
) -> Result<pb::WatchAuthorizationsResponse, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a message within 20 s")
        .map(|message| message.expect("the stream goes on"))
}

/// The first message: no change, the token of where the stream starts.
async fn started(stream: &mut Streaming<pb::WatchAuthorizationsResponse>) -> String {
    let first = next(stream).await.unwrap();
    assert_eq!(first.change, None, "the first message carries no change");
    assert!(!first.resume_token.is_empty());
    first.resume_token
}

/// Changes until `order_id` reaches `state`; returns all of them (every order's) with tokens.
async fn changes_until(
    stream: &mut Streaming<pb::WatchAuthorizationsResponse>,
    order_id: &str,
    state: State,
) -> Vec<(pb::AuthorizationChange, String)> {
    let mut seen = Vec::new();
    loop {
        let message = next(stream).await.unwrap();
        let change = message.change.expect("a change after the first message");
        let done = change.order_id == order_id && change.state == state as i32;
        seen.push((change, message.resume_token));
        if done {
            return seen;
        }
    }
}

fn states_of(changes: &[(pb::AuthorizationChange, String)], order_id: &str) -> Vec<State> {
    changes
        .iter()
        .filter(|(change, _)| change.order_id == order_id)
        .map(|(change, _)| State::try_from(change.state).unwrap())
        .collect()
}

async fn each_change_streams_and_resumes(options: Options) {
    let mut stack = Stack::start(options).await;
    let mut stream = watch(&mut stack.collection.clone(), watch_request("")).await;
    let start = started(&mut stream).await;

    let first = stack.create("watch-1").await;
    stack.answer(&first.auth_url, false).await;
    let changes = changes_until(&mut stream, "watch-1", State::Issued).await;
    let states = states_of(&changes, "watch-1");
    assert_eq!(states[..2], [State::Pending, State::Authorized], "{states:?}");
    assert_eq!(states.last(), Some(&State::Issued));
    assert!(states.len() <= 4, "pending, authorized, (issuing,) issued: {states:?}");
    let issued = stack.authorization("watch-1").await;
    let (last, _) = changes.last().unwrap();
    assert_eq!((last.card_id.as_str(), last.card_code.as_str()), (issued.card_id.as_str(), issued.card_code.as_str()));
    assert_eq!(last.change_time, issued.update_time);

    // A stream broken after AUTHORIZED, resumed with that message's token, brings exactly
    // what followed it.
    let after_authorized = changes.iter().position(|(c, _)| c.state == State::Authorized as i32).unwrap();
    drop(stream);
    let mut resumed = watch(&mut stack.collection.clone(), watch_request(&changes[after_authorized].1)).await;
    assert_eq!(started(&mut resumed).await, changes[after_authorized].1);
    let rest = changes_until(&mut resumed, "watch-1", State::Issued).await;
    assert_eq!(rest, changes[after_authorized + 1..]);

    // Filters: one order, one state, from the very start.
    let second = stack.create("watch-2").await;
    stack.answer(&second.auth_url, false).await;
    stack.wait_for("watch-2", State::Issued).await;
    let filtered = pb::WatchAuthorizationsRequest {
        order_ids: vec!["watch-2".into()],
        states: vec![State::Issued as i32],
        ..watch_request(&start)
    };
    let mut only = watch(&mut stack.collection.clone(), filtered).await;
    started(&mut only).await;
    let message = next(&mut only).await.unwrap();
    let change = message.change.unwrap();
    assert_eq!((change.order_id.as_str(), change.state), ("watch-2", State::Issued as i32));
    // Nothing else comes: a change made now (a third order) is not one of its kind.
    stack.create("watch-3").await;
    assert!(tokio::time::timeout(Duration::from_secs(1), only.message()).await.is_err(), "nothing else matches");

    // A stopping service ends its streams with UNAVAILABLE, which a caller resumes elsewhere.
    stack.stop_collection(false).await;
    let status = next(&mut only).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::Unavailable, "SHUTTING_DOWN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_streamed_once_and_a_stream_resumes_after_its_token() {
    each_change_streams_and_resumes(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_streamed_once_and_a_stream_resumes_after_its_token_on_postgres() {
    each_change_streams_and_resumes(Options { postgres: true, ..Options::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_watches_are_refused_with_field_violations() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.collection.clone();
    let refuse = |request: pb::WatchAuthorizationsRequest| {
        let mut client = client.clone();
        async move { client.watch_authorizations(request).await.map(|_| ()).unwrap_err() }
    };
    let forged = refuse(watch_request("bm90LWEtdG9rZW4")).await;
    assert_eq!((forged.code(), reason(&forged).as_str()), (tonic::Code::InvalidArgument, "INVALID_RESUME_TOKEN"));
    assert_eq!(violations(&forged), ["resume_token"]);
    let bad = refuse(pb::WatchAuthorizationsRequest {
        unit_appid: "not-an-appid".into(),
        order_ids: vec!["has space".into()],
        states: vec![State::Unspecified as i32, 99],
        resume_token: String::new(),
    })
    .await;
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&bad), ["unit_appid", "order_ids[0]", "states[0]", "states[1]"]);
    let elsewhere =
        refuse(pb::WatchAuthorizationsRequest { unit_appid: "wx0123456789abcdef".into(), ..watch_request("") }).await;
    assert_eq!((elsewhere.code(), reason(&elsewhere).as_str()), (tonic::Code::FailedPrecondition, "UNIT_NOT_SERVED"));
    // A token from a page of ListAuthorizations is not a resume token.
    for i in 0..2 {
        stack.collection.clone().create_authorization(order_request(&format!("page-{i}"))).await.unwrap();
    }
    let page = stack
        .collection
        .clone()
        .list_authorizations(pb::ListAuthorizationsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let wrong = refuse(watch_request(&page.next_page_token)).await;
    assert_eq!(reason(&wrong), "INVALID_RESUME_TOKEN");
}

/// On PostgreSQL, with two collection replicas creating orders at once, a watch on one of them
/// gets every order's change exactly once, and a stream resumed on the other replica goes on
/// where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_replica_sees_every_change_of_every_replica_once() {
    const ORDERS: usize = 60;
    let stack = Stack::start(Options { postgres: true, ..Options::default() }).await;
    let replica = stack.collection_replica(stack.bureau_grpc).await;
    let mut on_replica =
        CollectionServiceClient::with_interceptor(channel(replica.grpc, false, false), BearerKey::default());
    let mut stream = watch(&mut on_replica, watch_request("")).await;
    started(&mut stream).await;

    let clients = [stack.collection.clone(), on_replica.clone()];
    let creations: Vec<_> = (0..ORDERS)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            tokio::spawn(async move { client.create_authorization(order_request(&format!("many-{i}"))).await.unwrap() })
        })
        .collect();
    for creation in creations {
        creation.await.unwrap();
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut token = String::new();
    while seen.len() < ORDERS / 2 {
        let message = next(&mut stream).await.unwrap();
        *seen.entry(message.change.unwrap().order_id).or_default() += 1;
        token = message.resume_token;
    }
    // Broken halfway; resumed on the other replica.
    drop(stream);
    let mut resumed = watch(&mut stack.collection.clone(), watch_request(&token)).await;
    assert_eq!(started(&mut resumed).await, token);
    while seen.len() < ORDERS {
        let message = next(&mut resumed).await.unwrap();
        *seen.entry(message.change.unwrap().order_id).or_default() += 1;
    }
    assert!(seen.values().all(|&count| count == 1), "each creation once: {seen:?}");
    assert!(tokio::time::timeout(Duration::from_millis(1500), resumed.message()).await.is_err(), "and nothing more");
    replica.stop().await;
}

/// Changes older than `watch_retention_hours` are deleted: a token from before the deleted part
/// is refused (OUT_OF_RANGE RESUME_TOKEN_EXPIRED) rather than skipping what was deleted, and a
/// stream that fell behind it ends the same way. The deletion is played here by moving the
/// log's "deleted up to" mark, as a week of pruning would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_older_than_the_kept_changes_is_refused_and_a_stream_behind_them_ends() {
    let stack = Stack::start(Options::default()).await;
    let mut stream = watch(&mut stack.collection.clone(), watch_request("")).await;
    let old_token = started(&mut stream).await;
    stack.collection.clone().create_authorization(order_request("kept-1")).await.unwrap();
    let created = next(&mut stream).await.unwrap();
    assert_eq!(created.change.unwrap().order_id, "kept-1");

    // A week of pruning marks everything deleted up to the next change, past this stream's position.
    let db = fiscalbill_common::db::Db::connect(stack.collection_database(), "collection").await.unwrap();
    sqlx::query("UPDATE authorization_change_pruned SET seq = (SELECT MAX(seq) FROM authorization_change) + 1")
        .execute(&mut *db.write().await.unwrap())
        .await
        .unwrap();
    db.close().await;
    for token in [&old_token, &created.resume_token] {
        let status = stack.collection.clone().watch_authorizations(watch_request(token)).await.unwrap_err();
        assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::OutOfRange, "RESUME_TOKEN_EXPIRED"));
    }
    // The open stream learns it at its next read instead of going on with a gap.
    stack.collection.clone().create_authorization(order_request("kept-2")).await.unwrap();
    let status = next(&mut stream).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::OutOfRange, "RESUME_TOKEN_EXPIRED"));
    // Watching from now works.
    let mut fresh = watch(&mut stack.collection.clone(), watch_request("")).await;
    started(&mut fresh).await;
    stack.collection.clone().create_authorization(order_request("kept-3")).await.unwrap();
    assert_eq!(next(&mut fresh).await.unwrap().change.unwrap().order_id, "kept-3");
}
