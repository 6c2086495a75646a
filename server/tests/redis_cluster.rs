//! Redis Cluster: three nodes on a three-primary cluster (one replica each) the test creates.
//! Under a steady stream of events, the primary that owns the app's state fails over (`CLUSTER
//! FAILOVER`), then is killed, then the app's slot is moved to another primary: readiness
//! returns, every event the HTTP API accepted reaches a socket on another node exactly once and
//! in order, and presence keeps exactly its members with no spurious member event.
//! (The multi-node and behaviour suites also run whole on a Redis Cluster: `scripts/test`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::nodes::Node;
use herald_testkit::shards::RedisShards;
use herald_testkit::*;
use serde_json::json;

const CLUSTER: [&str; 2] = ["--redis-mode", "cluster"];

/// The key whose slot holds the test app's state (every `{app}` key).
fn app_slot_key() -> String {
    format!("herald:{{{APP_ID}}}:channels")
}

async fn all_ready(nodes: &[&Node], since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(40);
    for node in nodes {
        while node.ready().await != 200 {
            assert!(Instant::now() < deadline, "nodes not ready again 40 s after the change");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    since.elapsed()
}

async fn members(api: &Api) -> Vec<String> {
    api.user_ids("presence-room").await
}

/// Triggers `tick-N` on `news` every 20 ms through node 1 until stopped; records what the API
/// accepted (200) and counts what it refused clearly (503 while a node rejoins).
struct Traffic {
    accepted: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(api: Api) -> Traffic {
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused: Arc<Mutex<usize>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, r, s) = (Arc::clone(&accepted), Arc::clone(&refused), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                let data = format!("tick-{n}");
                n += 1;
                match api.trigger(&["news"], "e", &data).await.0 {
                    200 => a.lock().unwrap().push(data),
                    503 => *r.lock().unwrap() += 1,
                    other => panic!("the API answered {other}: only 200 or a clear 503 are allowed"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Traffic { accepted, refused, stop, task }
    }

    /// Stops, then checks the reader got every accepted event once, in order.
    async fn stop_and_check(self, reader: &mut Client, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("publisher");
        let accepted = self.accepted.lock().unwrap().clone();
        assert!(accepted.len() > 20, "{what}: too little traffic got through ({})", accepted.len());
        let mut got = Vec::new();
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_secs(3), futures_util::StreamExt::next(&mut reader.ws)).await
        {
            let Ok(frame) = serde_json::from_str::<serde_json::Value>(frame.to_text().unwrap_or_default())
            else {
                continue;
            };
            assert_eq!(frame["event"], "e", "{what}: {frame}");
            got.push(frame["data"].as_str().unwrap_or_default().to_owned());
        }
        let missing: Vec<&String> = accepted.iter().filter(|a| !got.contains(a)).collect();
        assert!(missing.is_empty(), "{what}: accepted but never delivered: {missing:?}");
        assert_eq!(got, accepted, "{what}: every accepted event, once, in order");
        println!(
            "{what}: {} events delivered, {} refused with 503",
            accepted.len(),
            *self.refused.lock().unwrap()
        );
    }
}

#[tokio::test]
async fn three_nodes_ride_out_a_failover_a_killed_primary_and_a_slot_move_under_traffic() {
    let mut shards = RedisShards::start(3, 1).await;
    let url = shards.url();
    // The default lease: longer than a primary's failover (node timeout plus election, about
    // 5 s here), as a lease must be — a shorter one lapses on every node while the primary
    // holding the leases is away, and they rejoin.
    let flags = [CLUSTER[0], CLUSTER[1], "--lease-ttl", "10"];
    let n1 = Node::spawn_via_with(&url, "c1", &flags).await;
    let n2 = Node::spawn_via_with(&url, "c2", &flags).await;
    let n3 = Node::spawn_via_with(&url, "c3", &flags).await;
    let nodes = [&n1, &n2, &n3];
    let mut present = Vec::new();
    for (node, user) in nodes.iter().zip(["ada", "bob", "cyd"]) {
        let mut c = connect(node.addr).await;
        c.join("presence-room", user, json!({})).await;
        present.push(c);
    }
    // Everyone has seen everyone join; from here on nobody leaves.
    for c in &mut present {
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(500), futures_util::StreamExt::next(&mut c.ws)).await
        {
        }
    }
    let mut reader = connect(n3.addr).await;
    reader.subscribe("news").await;
    let api1 = Api::new(n1.addr);
    assert_eq!(members(&api1).await, ["ada", "bob", "cyd"]);

    // A planned failover of the primary holding the app's state.
    let traffic = Traffic::start(Api::new(n1.addr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = shards.primary_of(&app_slot_key()).await;
    let replica = shards.replicas_of(first).await[0];
    let started = Instant::now();
    shards.failover_to(replica).await;
    while shards.primary_of(&app_slot_key()).await != replica {
        assert!(started.elapsed() < Duration::from_secs(30), "CLUSTER FAILOVER did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window = all_ready(&nodes, started).await;
    println!("CLUSTER FAILOVER: every node ready {window:?} after it was asked");
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.stop_and_check(&mut reader, "failover").await;
    assert_eq!(members(&Api::new(n2.addr)).await, ["ada", "bob", "cyd"], "no ghost and no loss");

    // The new primary is killed: its replica (the old primary) takes over after the node
    // timeout, once it has the new primary's data.
    shards.wait_synced(first).await;
    let traffic = Traffic::start(Api::new(n1.addr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    shards.kill(replica).await;
    while shards.primary_of(&app_slot_key()).await == replica {
        assert!(started.elapsed() < Duration::from_secs(40), "no replica took over the killed primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let window = all_ready(&nodes, started).await;
    println!("primary SIGKILL: every node ready {window:?} after the kill");
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.stop_and_check(&mut reader, "killed primary").await;
    assert_eq!(members(&Api::new(n3.addr)).await, ["ada", "bob", "cyd"], "no ghost and no loss");

    // The app's slot moves to another primary, key by key, while events flow.
    let traffic = Traffic::start(Api::new(n1.addr));
    let owner = shards.primary_of(&app_slot_key()).await;
    let to = shards.primaries().await.into_iter().find(|p| *p != owner).expect("another primary");
    let started = Instant::now();
    shards.move_slot(&app_slot_key(), to, 3, Duration::from_millis(100)).await;
    assert_eq!(shards.primary_of(&app_slot_key()).await, to);
    let window = all_ready(&nodes, started).await;
    println!("slot move: every node ready {window:?} after it began");
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.stop_and_check(&mut reader, "slot move").await;
    assert_eq!(members(&api1).await, ["ada", "bob", "cyd"], "no ghost and no loss");

    // Nobody left, so nobody was told otherwise.
    for c in &mut present {
        c.assert_silent(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_node_killed_on_a_redis_cluster_is_cleaned_up_slot_by_slot() {
    let shards = RedisShards::start(3, 0).await;
    let url = shards.url();
    let mut n1 = Node::spawn_via_with(&url, "k1", &CLUSTER).await;
    let n2 = Node::spawn_via_with(&url, "k2", &CLUSTER).await;
    let mut ada = connect(n1.addr).await;
    ada.join("presence-room", "ada", json!({})).await;
    // Channels of the app in many bus buckets, held only by the node about to die.
    for i in 0..12 {
        ada.subscribe(&format!("private-c{i}")).await;
    }
    let mut bob = connect(n2.addr).await;
    bob.join("presence-room", "bob", json!({})).await;
    let api = Api::new(n2.addr);
    let (_, channels) = api.get(&format!("/apps/{APP_ID}/channels"), &[]).await;
    assert_eq!(channels["channels"].as_object().map(|c| c.len()), Some(13), "{channels}");

    n1.kill9().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, channels) = api.get(&format!("/apps/{APP_ID}/channels"), &[]).await;
        let left: Vec<&String> =
            channels["channels"].as_object().map(|c| c.keys().collect()).unwrap_or_default();
        if left == ["presence-room"] && members(&api).await == ["bob"] {
            break;
        }
        assert!(Instant::now() < deadline, "the dead node's channels and member are still there: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let removed = bob.next().await;
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    let data: serde_json::Value = serde_json::from_str(removed["data"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(data["user_id"], "ada");
    bob.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn nodes_on_a_tls_only_redis_cluster_with_client_certificates_act_as_one_server() {
    let files = herald_testkit::nodes::TlsFiles::make();
    let shards = RedisShards::start_tls(3, 0, &files).await;
    let tls = files.node_flags();
    let flags: Vec<&str> = CLUSTER.into_iter().chain(tls.iter().map(String::as_str)).collect();
    let n1 = Node::spawn_via_with(&shards.url(), "tls-c1", &flags).await;
    let n2 = Node::spawn_via_with(&shards.url(), "tls-c2", &flags).await;
    let mut a = connect(n1.addr).await;
    a.subscribe("news").await;
    let mut b = connect(n2.addr).await;
    b.join("presence-room", "bob", json!({})).await;
    let mut ada = connect(n1.addr).await;
    let joined = ada.join("presence-room", "ada", json!({})).await;
    let data: serde_json::Value = serde_json::from_str(joined["data"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(data["presence"]["count"], 2, "presence is shared through the TLS cluster: {joined}");
    let (status, _) = Api::new(n2.addr).trigger(&["news"], "e", "over-tls").await;
    assert_eq!(status, 200);
    assert_eq!(a.next().await["data"], "over-tls");
    assert_eq!(n1.ready().await, 200);

    // A node given the wrong CA refuses to start and says why.
    let output = tokio::process::Command::new(herald_testkit::nodes::server_binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--cluster", "redis"])
        .args(["--redis-mode", "cluster", "--redis-url", &shards.url()])
        .args(["--redis-ca-file", &files.path("wrong-ca.pem")])
        .args(["--redis-cert-file", &files.path("client.pem"), "--redis-key-file", &files.path("client.key")])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output).await.expect("exits").expect("runs");
    assert!(!output.status.success(), "started against a Redis Cluster whose certificate it cannot trust");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the error names the certificate problem: {stderr}"
    );
}
