//! What a socket operation costs Redis, counted by Redis itself (`INFO commandstats`): a
//! presence subscribe and a presence unsubscribe each change the counts with one script call
//! (they were two: the member's, then the subscription's), plus the publish of `member_added` /
//! `member_removed` when the member comes or goes; a trigger to ten channels is ten publish
//! scripts (sent in one pipeline; docs/benchmarks.md measures what that buys).

use std::time::Duration;

use herald_testkit::nodes::{redis_cli, Node, Redis};
use herald_testkit::*;
use serde_json::json;

/// Script calls Redis ran so far (`EVAL` and `EVALSHA`), less the node's lease renewals (one
/// script each, every second with the tests' 3 s lease).
async fn script_calls(port: u16, node: &Node) -> u64 {
    let stats = redis_cli(port, &["INFO", "commandstats"]).await;
    let calls: u64 = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum();
    let metrics = reqwest::get(format!("http://{}/metrics", node.ops)).await.unwrap().text().await.unwrap();
    let renewals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_lease_renewals_total ")?.trim().parse().ok())
        .unwrap_or(0);
    calls - renewals
}

/// The script calls since `before`, once the operation's have all run.
async fn settle(port: u16, node: &Node, before: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    script_calls(port, node).await - before
}

#[tokio::test]
async fn a_presence_subscribe_or_unsubscribe_is_one_script_call() {
    let redis = Redis::start().await;
    let node = Node::spawn(&redis, "rt", &[]).await;
    // Warm up: the node's first write to the app lists it with its incarnation (once).
    let (mut warm, mut warm2) = (connect(node.addr).await, connect(node.addr).await);
    for c in [&mut warm, &mut warm2] {
        c.join("presence-warm", "w", json!({})).await;
    }
    for c in [&mut warm2, &mut warm] {
        c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-warm"}})).await;
    }
    let (status, _) = Api::new(node.addr).trigger(&["warm-1", "warm-2"], "e", "d").await;
    assert_eq!(status, 200);
    let port = redis.port;

    let before = script_calls(port, &node).await;
    let channels: Vec<String> = (0..10).map(|i| format!("news-{i}")).collect();
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let (status, _) = Api::new(node.addr).trigger(&names, "e", "d").await;
    assert_eq!(status, 200);
    assert_eq!(settle(port, &node, before).await, 10, "one publish script per channel");

    // Last: an unsubscribe's held member_removed is released by a script 3 s later.
    let mut ada = connect(node.addr).await;
    let mut ada2 = connect(node.addr).await;
    // Each connection is counted too (its own script), after the handshake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = script_calls(port, &node).await;
    ada.join("presence-room", "ada", json!({})).await;
    assert_eq!(settle(port, &node, before).await, 2, "a new member: one script, one member_added publish");
    let before = script_calls(port, &node).await;
    ada2.join("presence-room", "ada", json!({})).await;
    assert_eq!(settle(port, &node, before).await, 1, "a member's second socket: one script");
    let before = script_calls(port, &node).await;
    ada2.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-room"}})).await;
    assert_eq!(settle(port, &node, before).await, 1, "a member's other socket leaves: one script");
    let before = script_calls(port, &node).await;
    ada.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-room"}})).await;
    assert_eq!(
        settle(port, &node, before).await,
        2,
        "the member leaves: one script, one member_removed publish"
    );
}
