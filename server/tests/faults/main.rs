//! Faults that once lost or falsified what clients and webhook receivers see, each reproduced
//! with real herald-server processes on a real Redis.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use herald_testkit::nodes::{Node, Redis};
use herald_testkit::*;
use serde_json::json;

mod windows;
use windows::names;

#[tokio::test]
async fn two_live_nodes_with_one_node_id_still_deliver_to_each_other() {
    // Two hosts with the same name (or a restarted node whose old lease is still live): each
    // runs as its own incarnation; neither takes the other's messages for its own.
    let redis = Redis::start().await;
    let n1 = Node::spawn(&redis, "twin", &[]).await;
    let n2 = Node::spawn(&redis, "twin", &[]).await;
    let mut a = connect(n1.addr).await;
    let mut b = connect(n2.addr).await;
    a.subscribe("news").await;
    b.subscribe("news").await;
    let (status, _) = Api::new(n2.addr)
        .post(&format!("/apps/{APP_ID}/events"), json!({"name":"e","data":"from-2","channel":"news"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.next().await["data"], "from-2", "a node dropped its twin's event as its own");
    assert_eq!(b.next().await["data"], "from-2");
    let (status, _) = Api::new(n1.addr)
        .post(&format!("/apps/{APP_ID}/events"), json!({"name":"e","data":"from-1","channel":"news"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(b.next().await["data"], "from-1");
    assert_eq!(a.next().await["data"], "from-1");
    a.assert_silent(Duration::from_millis(300)).await;
    b.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_event_redis_did_not_take_is_answered_503_never_200() {
    let mut redis = Redis::start().await;
    let n1 = Node::spawn(&redis, "n1", &[]).await;
    let n2 = Node::spawn(&redis, "n2", &[]).await;
    let mut far = connect(n2.addr).await;
    far.subscribe("orders").await;
    let api = Api::new(n1.addr);
    assert_eq!(api.trigger(&["orders"], "placed", "1").await.0, 200);
    assert_eq!(far.next().await["data"], "1");

    // Redis dies; n1 has not noticed yet when the backend triggers through it.
    redis.kill().await;
    let (status, body) = api.trigger(&["orders"], "placed", "2").await;
    assert_eq!(status, 503, "an event the other node never got must not be acknowledged: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("retry")), "{body}");
    far.assert_silent(Duration::from_millis(300)).await;

    // Redis is back: the retry goes through and reaches the other node.
    redis.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = api.trigger(&["orders"], "placed", "2").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "refused clearly while Redis is back but not yet rejoined");
        assert!(std::time::Instant::now() < deadline, "the cluster accepts events again after Redis returns");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(far.next().await["data"], "2");
}

/// Opens `sockets` connections to `node`, each subscribed to `per_socket` channels `bulk-N`.
async fn bulk_subscribers(node: &Node, sockets: usize, per_socket: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for s in 0..sockets {
        let mut c = connect(node.addr).await;
        for i in 0..per_socket {
            let channel = format!("bulk-{}", s * per_socket + i);
            c.send(json!({"event":"pusher:subscribe","data":{"channel":channel}})).await;
        }
        for _ in 0..per_socket {
            assert_eq!(c.next().await["event"], "pusher_internal:subscription_succeeded");
        }
        clients.push(c);
    }
    clients
}

async fn scard(redis: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("SCARD").arg(key).query_async(redis).await.expect("SCARD")
}

/// n1's state for the clean-up tests: 3,000 channels and the presence member `ada` in
/// `presence-x`, so that its clean-up takes a while.
async fn a_big_node(n1: &Node) -> (Vec<Client>, Client) {
    let bulk = bulk_subscribers(n1, 3, 1000).await;
    let mut ada = connect(n1.addr).await;
    ada.join("presence-x", "ada", json!({})).await;
    (bulk, ada)
}

/// Returns once the channel count drops below `held`: someone is cleaning up.
async fn wait_until_cleanup_starts(poll: &mut redis::aio::MultiplexedConnection, key: &str, held: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while scard(poll, key).await == held {
        assert!(std::time::Instant::now() < deadline, "nobody started cleaning up after n1");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (up to 40 s) until none of n1's channels and no ghost member in `presence-x` is left.
async fn assert_cleaned_up(api: &Api, poll: &mut redis::aio::MultiplexedConnection, key: &str, after: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let channels = scard(poll, key).await;
        let (status, users) = api.get(&format!("/apps/{APP_ID}/channels/presence-x/users"), &[]).await;
        if channels == 0 && status == 200 && users["users"].as_array().is_some_and(|u| u.is_empty()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{channels} of n1's channels and users {users} still there {after}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_cleanup_cut_short_by_a_redis_stall_is_finished_by_another_claim() {
    let redis = Redis::start().await;
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut poll = client.get_multiplexed_async_connection().await.expect("redis");
    let n1 = Node::spawn(&redis, "n1", &[]).await;
    let n2 = Node::spawn(&redis, "n2", &[]).await;
    // n1 holds 3,000 channels and a presence member: its clean-up takes a while.
    let (_bulk, _ada) = a_big_node(&n1).await;
    let channels_key = format!("herald:{{{APP_ID}}}:channels");
    let held = scard(&mut poll, &channels_key).await;
    assert_eq!(held, 3001);

    // A connection kept ready to stall Redis the moment the clean-up starts.
    let mut staller = tokio::net::TcpStream::connect(("127.0.0.1", redis.port)).await.expect("redis");
    let mut n1 = n1;
    n1.kill9().await;
    // The moment n2 starts taking n1's channels away, Redis stalls for 2 s: longer than any
    // Redis call may take, so n2's clean-up fails half-way.
    wait_until_cleanup_starts(&mut poll, &channels_key, held).await;
    staller.write_all(b"DEBUG SLEEP 2\r\n").await.expect("DEBUG SLEEP");
    let mut reply = [0u8; 5];
    staller.read_exact(&mut reply).await.expect("DEBUG SLEEP answered");
    assert_eq!(&reply, b"+OK\r\n", "Redis refused DEBUG SLEEP");
    let left_after_stall = scard(&mut poll, &channels_key).await;
    assert!(left_after_stall > 0, "the stall came too late to cut the clean-up short");

    // Another claim finishes it: no occupied channel and no ghost member stay behind.
    let api = Api::new(n2.addr);
    assert_cleaned_up(&api, &mut poll, &channels_key, "long after the stall").await;
}

#[tokio::test]
async fn two_nodes_killed_within_a_second_are_both_cleaned_up() {
    let redis = Redis::start().await;
    let mut n1 = Node::spawn(&redis, "n1", &[]).await;
    let mut n2 = Node::spawn(&redis, "n2", &[]).await;
    let n3 = Node::spawn(&redis, "n3", &[]).await;
    let mut watcher = connect(n3.addr).await;
    watcher.join("presence-room", "watcher", json!({})).await;
    let mut ada = connect(n1.addr).await;
    ada.join("presence-room", "ada", json!({})).await;
    let mut bob = connect(n2.addr).await;
    bob.join("presence-room", "bob", json!({})).await;
    let mut seen_added = 0;
    while seen_added < 2 {
        if watcher.next().await["event"] == "pusher_internal:member_added" {
            seen_added += 1;
        }
    }
    n1.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    n2.kill9().await;
    let mut removed = Vec::new();
    while removed.len() < 2 {
        let frame =
            tokio::time::timeout(Duration::from_secs(20), watcher.next()).await.expect("member_removed");
        if frame["event"] == "pusher_internal:member_removed" {
            let data: serde_json::Value =
                serde_json::from_str(frame["data"].as_str().unwrap_or("{}")).unwrap();
            removed.push(data["user_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    removed.sort();
    assert_eq!(removed, ["ada", "bob"]);
    let (_, users) =
        Api::new(n3.addr).get(&format!("/apps/{APP_ID}/channels/presence-room/users"), &[]).await;
    assert_eq!(users["users"], json!([{ "id": "watcher" }]));
    watcher.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_node_cut_off_from_redis_fires_no_webhooks_from_its_local_view() {
    let hooks = Receiver::start(Vec::new()).await;
    let redis = Redis::start().await;
    let proxy = herald_testkit::nodes::Proxy::start(&redis).await;
    let webhook = ["--app-webhook-url", hooks.url.as_str()];
    let n2 = Node::spawn(&redis, "n2", &webhook).await;
    let n1 = Node::spawn_via_with(&proxy.url(), "n1", &webhook).await;
    let mut bob = connect(n2.addr).await;
    bob.subscribe("private-shared").await;
    hooks.wait_for(Duration::from_secs(5), |e| names(e) == ["channel_occupied:private-shared"]).await;

    proxy.cut();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while n1.ready().await == 200 {
        assert!(std::time::Instant::now() < deadline, "n1 noticed it is cut off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // n1 sees a channel go from 0 to 1 subscriber locally, and another come and go: neither is
    // news for the cluster (private-shared was occupied on n2 all along).
    let mut ada = connect(n1.addr).await;
    ada.subscribe("private-shared").await;
    let mut eve = connect(n1.addr).await;
    eve.subscribe("private-lonely").await;
    drop(eve);
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while n1.ready().await != 200 {
        assert!(std::time::Instant::now() < deadline, "n1 rejoined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(names(&hooks.events()), ["channel_occupied:private-shared"], "false news from a local view");
    drop(ada);
}

#[tokio::test]
async fn a_webhook_being_retried_when_its_node_dies_is_finished_by_another_node_with_the_same_id() {
    // The receiver fails the first two attempts; the node retrying is killed; the node that
    // cleans up after it finishes the delivery, with the same X-Herald-Webhook-Id.
    let hooks = Receiver::start(vec![500, 500]).await;
    let redis = Redis::start().await;
    let webhook = ["--app-webhook-url", hooks.url.as_str()];
    let mut n1 = Node::spawn(&redis, "n1", &webhook).await;
    let _n2 = Node::spawn(&redis, "n2", &webhook).await;
    let mut c = connect(n1.addr).await;
    c.subscribe("orders").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hooks.hooks().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "two failed attempts from n1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n1.kill9().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hooks.hooks().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "nobody finished the delivery: {:?}", hooks.hooks());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = hooks.hooks();
    let occupied: Vec<_> = got.iter().filter(|h| h.body.contains("channel_occupied")).collect();
    assert!(occupied.len() >= 3, "{got:?}");
    assert!(
        occupied.iter().all(|h| h.id == occupied[0].id && h.body == occupied[0].body),
        "the same request: {got:?}"
    );
    assert!(!occupied[0].id.is_empty());
    // Delivered (the third attempt got 200): nothing more follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = hooks.hooks().iter().filter(|h| h.body.contains("channel_occupied")).count();
    assert_eq!(again, occupied.len(), "no repeat after the delivery succeeded");
}

#[tokio::test]
async fn a_cleanup_whose_claimer_is_killed_half_way_is_finished_by_another_node() {
    let redis = Redis::start().await;
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut poll = client.get_multiplexed_async_connection().await.expect("redis");
    let mut n1 = Node::spawn(&redis, "n1", &[]).await;
    let mut n2 = Node::spawn(&redis, "n2", &[]).await;
    let (_bulk, _ada) = a_big_node(&n1).await;
    let channels_key = format!("herald:{{{APP_ID}}}:channels");
    let held = scard(&mut poll, &channels_key).await;
    assert_eq!(held, 3001);

    n1.kill9().await;
    // n2, the only other node, claims n1's clean-up; it is killed as soon as it has started.
    wait_until_cleanup_starts(&mut poll, &channels_key, held).await;
    n2.kill9().await;
    let left = scard(&mut poll, &channels_key).await;
    assert!(left > 0, "the kill came too late to cut the clean-up short");

    // A node started afterwards finds both dead incarnations and finishes both clean-ups.
    let n3 = Node::spawn(&redis, "n3", &[]).await;
    let api = Api::new(n3.addr);
    assert_cleaned_up(&api, &mut poll, &channels_key, "after the claimer died").await;
}

#[tokio::test]
async fn events_published_while_a_nodes_pubsub_connection_is_down_still_reach_its_sockets() {
    // `CLIENT KILL TYPE pubsub` (a proxy or Redis dropping the subscriber connection) while a
    // backend triggers through another node: the node reconnects by itself, and makes up for
    // what was published in between from the bus log. Before, those events were lost.
    let redis = Redis::start().await;
    let n1 = Node::spawn(&redis, "n1", &[]).await;
    let n2 = Node::spawn(&redis, "n2", &[]).await;
    let mut far = connect(n2.addr).await;
    far.subscribe("ticker").await;
    // Four backends trigger as fast as they can while the pub/sub connections are killed.
    let streams: Vec<_> = (0..4)
        .map(|s| {
            let api = Api::new(n1.addr);
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..150 {
                    let data = format!("{s}-{i}");
                    let (status, body) = api.trigger(&["ticker"], "tick", &data).await;
                    assert_eq!(status, 200, "{body}");
                    accepted.push(data);
                }
                accepted
            })
        })
        .collect();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        herald_testkit::nodes::redis_cli(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    }
    let mut accepted = Vec::new();
    for stream in streams {
        accepted.extend(stream.await.expect("trigger task"));
    }
    let mut got = Vec::new();
    while got.len() < accepted.len() {
        match tokio::time::timeout(Duration::from_secs(3), far.next()).await {
            Ok(frame) => got.push(frame["data"].as_str().unwrap_or_default().to_owned()),
            Err(_) => break,
        }
    }
    let mut missing: Vec<&String> = accepted.iter().filter(|e| !got.contains(e)).collect();
    missing.truncate(10);
    assert!(
        missing.is_empty(),
        "{} of {} events lost, e.g. {missing:?}",
        accepted.len() - got.len(),
        accepted.len()
    );
    got.sort();
    got.dedup();
    assert_eq!(got.len(), accepted.len(), "every event once");
    far.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_node_idle_through_a_redis_restart_is_not_ready_until_it_republished() {
    // Redis restarted empty between two lease renewals of a node with no socket or API traffic
    // in between: the node stayed ready while Redis had forgotten its members, and the HTTP API
    // undercounted until its next renewal (a third of its lease). Its dropped pub/sub
    // connection now makes it check at once.
    let mut redis = Redis::start().await;
    // Long leases: renewals alone would notice the restart only 20 seconds later.
    let n1 = Node::spawn(&redis, "n1", &["--lease-ttl", "60"]).await;
    let n2 = Node::spawn(&redis, "n2", &["--lease-ttl", "60"]).await;
    let mut alice = connect(n1.addr).await;
    let mut bob = connect(n2.addr).await;
    alice.join("presence-r", "alice", json!({})).await;
    bob.join("presence-r", "bob", json!({})).await;
    assert_eq!(alice.next().await["event"], "pusher_internal:member_added");

    redis.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (n1.ready().await, n2.ready().await) != (200, 200) {
        assert!(std::time::Instant::now() < deadline, "both nodes ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, info) = Api::new(n1.addr)
        .get(&format!("/apps/{APP_ID}/channels/presence-r"), &[("info", "user_count,subscription_count")])
        .await;
    assert_eq!(
        info,
        json!({"occupied":true,"user_count":2,"subscription_count":2}),
        "ready with its state in Redis"
    );
    // Nothing changed for the clients: no member left or came back.
    alice.assert_silent(Duration::from_millis(300)).await;
    bob.assert_silent(Duration::from_millis(300)).await;
    assert_eq!(Api::new(n2.addr).trigger(&["presence-r"], "after", "x").await.0, 200);
    assert_eq!(alice.next().await["event"], "after");
    assert_eq!(bob.next().await["event"], "after");
}
