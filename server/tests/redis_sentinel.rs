//! Redis behind Sentinel: nodes find the primary through a sentinel, and follow it when a
//! failover moves it (`SENTINEL FAILOVER`, then a SIGKILL of the primary): readiness returns,
//! events cross nodes again, and presence keeps exactly its members.

use std::time::{Duration, Instant};

use herald_testkit::nodes::{Node, SentinelSet};
use herald_testkit::*;
use serde_json::json;

const SENTINEL: [&str; 4] = ["--redis-mode", "sentinel", "--redis-sentinel-master", "herald"];

async fn both_ready(n1: &Node, n2: &Node, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(40);
    while n1.ready().await != 200 || n2.ready().await != 200 {
        assert!(Instant::now() < deadline, "nodes not ready again 40 s after the failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    since.elapsed()
}

async fn crosses(api: &Api, to: &mut Client, data: &str) {
    // The first publish after a failover may meet a node still rejoining (503): retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = api.trigger(&["news"], "e", data).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "refused clearly while rejoining");
        assert!(Instant::now() < deadline, "events never crossed nodes again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(to.next().await["data"], data);
}

async fn members(api: &Api) -> Vec<String> {
    api.user_ids("presence-room").await
}

/// Two nodes through the sentinels, ada (node 1) and bob (node 2) present and a reader of
/// `news` on node 2, checked before and after a planned failover: (nodes, clients, the new
/// primary's port).
async fn through_a_failover(set: &SentinelSet, flags: &[&str]) -> ([Node; 2], [Client; 3], u16) {
    let n1 = Node::spawn_via_with(&set.url(), "s1", flags).await;
    let n2 = Node::spawn_via_with(&set.url(), "s2", flags).await;
    let mut ada = connect(n1.addr).await;
    ada.join("presence-room", "ada", json!({})).await;
    let mut bob = connect(n2.addr).await;
    bob.join("presence-room", "bob", json!({})).await;
    assert_eq!(ada.next().await["event"], "pusher_internal:member_added");
    let mut reader = connect(n2.addr).await;
    reader.subscribe("news").await;
    let api1 = Api::new(n1.addr);
    crosses(&api1, &mut reader, "before").await;
    assert_eq!(members(&api1).await, ["ada", "bob"]);

    // A planned failover.
    let first = set.primary().await;
    let started = Instant::now();
    set.failover().await;
    let second = set.wait_for_new_primary(first).await;
    let unavailable = both_ready(&n1, &n2, started).await;
    println!("SENTINEL FAILOVER: nodes ready again {unavailable:?} after it was asked");
    crosses(&api1, &mut reader, "after-failover").await;
    assert_eq!(members(&Api::new(n2.addr)).await, ["ada", "bob"], "no ghost and no loss");
    ([n1, n2], [ada, bob, reader], second)
}

#[tokio::test]
async fn nodes_follow_the_primary_through_a_failover_and_a_killed_primary() {
    let mut set = SentinelSet::start().await;
    let ([n1, n2], [mut ada, mut bob, mut reader], second) = through_a_failover(&set, &SENTINEL).await;
    let api1 = Api::new(n1.addr);

    // The primary is killed.
    let started = Instant::now();
    set.kill(second).await;
    set.wait_for_new_primary(second).await;
    let unavailable = both_ready(&n1, &n2, started).await;
    println!("primary SIGKILL: nodes ready again {unavailable:?} after the kill");
    crosses(&api1, &mut reader, "after-kill").await;
    assert_eq!(members(&api1).await, ["ada", "bob"], "no ghost and no loss");
    // Nobody left, so nobody was told otherwise.
    for c in [&mut ada, &mut bob] {
        c.assert_silent(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn sentinel_mode_needs_the_master_name_and_mixed_up_modes_are_refused_clearly() {
    let bin = herald_testkit::nodes::server_binary();
    let run = |args: &'static [&'static str]| {
        let bin = bin.clone();
        async move { tokio::process::Command::new(bin).args(args).output().await.expect("runs") }
    };
    let out =
        run(&["--cluster", "redis", "--redis-url", "redis://127.0.0.1:1", "--redis-mode", "sentinel"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --redis-sentinel-master"));
    let out = run(&[
        "--cluster",
        "redis",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--redis-mode",
        "cluster",
        "--redis-sentinel-master",
        "herald",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --redis-mode sentinel, not cluster"));
    let out =
        run(&["--cluster", "redis", "--redis-url", "redis://127.0.0.1:1", "--redis-mode", "shards"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 'standalone', 'sentinel' or 'cluster'"));
}

#[tokio::test]
async fn nodes_find_a_tls_only_primary_through_tls_sentinels_with_a_private_ca() {
    let files = herald_testkit::nodes::TlsFiles::make();
    let set = SentinelSet::start_tls(&files).await;
    let tls = files.node_flags();
    let flags: Vec<&str> = SENTINEL.into_iter().chain(tls.iter().map(String::as_str)).collect();
    // Found, joined and followed through a failover, all over TLS.
    let (_nodes, mut clients, _) = through_a_failover(&set, &flags).await;
    for c in &mut clients[..2] {
        c.assert_silent(Duration::from_millis(300)).await;
    }
}
