//! Presence member events across nodes, as a member list in a client sees them: in a join storm
//! over three nodes, and with members leaving while others join, every socket hears of each
//! member exactly once — in its `subscription_succeeded` list or in one `member_added`, never
//! both — hears no stranger leave, and ends with the channel's true member list.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald_testkit::nodes::{Node, Redis};
use herald_testkit::*;
use serde_json::{json, Value};

fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

/// One member's socket and what it heard: the users it knows, `member_added` frames for a user
/// it knew already and `member_removed` frames for one it did not know.
struct Tracker {
    user: String,
    socket: Client,
    known: HashSet<String>,
    repeated: Vec<String>,
    unknown: Vec<String>,
}

impl Tracker {
    /// Connects to `addr` and subscribes to `channel` as `user`.
    async fn join(addr: std::net::SocketAddr, channel: &str, user: String) -> Tracker {
        let mut socket = connect(addr).await;
        let data = json!({ "user_id": user, "user_info": {} }).to_string();
        let auth = channel_auth(&socket.socket_id, channel, Some(&data));
        let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": data}});
        socket.send(subscribe).await;
        Tracker { user, socket, known: HashSet::new(), repeated: Vec::new(), unknown: Vec::new() }
    }

    /// Reads member frames until it knows exactly `expected` or `until` passes.
    async fn follow(mut self, expected: HashSet<String>, until: Instant) -> Tracker {
        while self.known != expected {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(frame) = tokio::time::timeout(left, self.socket.next()).await else { break };
            let user_id = |frame: &Value| data_of(frame)["user_id"].as_str().unwrap_or_default().to_owned();
            match frame["event"].as_str() {
                Some("pusher_internal:subscription_succeeded") => {
                    let ids = data_of(&frame)["presence"]["ids"].as_array().cloned().unwrap_or_default();
                    self.known = ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect();
                }
                Some("pusher_internal:member_added") => {
                    let id = user_id(&frame);
                    if !self.known.insert(id.clone()) {
                        self.repeated.push(id);
                    }
                }
                Some("pusher_internal:member_removed") => {
                    let id = user_id(&frame);
                    if !self.known.remove(&id) {
                        self.unknown.push(id);
                    }
                }
                _ => {}
            }
        }
        self
    }
}

/// Follows every tracker at once until each knows exactly `expected` (or 20 s pass).
async fn follow_all(trackers: Vec<Tracker>, expected: &HashSet<String>) -> Vec<Tracker> {
    let until = Instant::now() + Duration::from_secs(20);
    let tasks: Vec<_> =
        trackers.into_iter().map(|t| tokio::spawn(t.follow(expected.clone(), until))).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("tracker task"));
    }
    out
}

/// Each tracker knows exactly `expected`, and heard no member twice and no stranger leave.
fn assert_told_once(trackers: &[Tracker], expected: &HashSet<String>) {
    let mut wrong = Vec::new();
    for t in trackers {
        if t.known != *expected {
            let missing: Vec<_> = expected.difference(&t.known).collect();
            let extra: Vec<_> = t.known.difference(expected).collect();
            wrong.push(format!("{} lacks {missing:?}, has extra {extra:?}", t.user));
        }
        wrong.extend(t.repeated.iter().map(|id| format!("{} heard {id} added again", t.user)));
        wrong.extend(t.unknown.iter().map(|id| format!("{} heard unknown {id} removed", t.user)));
    }
    assert!(wrong.is_empty(), "{} wrong: {:?}", wrong.len(), &wrong[..wrong.len().min(20)]);
}

async fn three_nodes(redis: &Redis) -> [Node; 3] {
    let extra = ["--app-max-presence-members", "1000"];
    [
        Node::spawn(redis, "n1", &extra).await,
        Node::spawn(redis, "n2", &extra).await,
        Node::spawn(redis, "n3", &extra).await,
    ]
}

fn users(range: std::ops::Range<usize>) -> HashSet<String> {
    range.map(|i| format!("u{i}")).collect()
}

#[tokio::test]
async fn a_join_storm_over_three_nodes_tells_each_socket_of_each_member_once() {
    let redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    // 150 members subscribe at once, spread over the nodes.
    let joins = (0..150).map(|i| Tracker::join(nodes[i % 3].addr, "presence-storm", format!("u{i}")));
    let trackers = futures_util::future::join_all(joins).await;
    let everyone = users(0..150);
    let trackers = follow_all(trackers, &everyone).await;
    assert_told_once(&trackers, &everyone);
    assert_eq!(Api::new(nodes[0].addr).user_ids("presence-storm").await.len(), 150);
}

#[tokio::test]
async fn members_leaving_while_others_join_leave_every_socket_with_the_same_true_list() {
    let redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    let joins = (0..60).map(|i| Tracker::join(nodes[i % 3].addr, "presence-churn", format!("u{i}")));
    let first = follow_all(futures_util::future::join_all(joins).await, &users(0..60)).await;
    assert_told_once(&first, &users(0..60));
    // u0..u29 close their sockets while u60..u119 join, all at once, on every node.
    let (leaving, staying): (Vec<_>, Vec<_>) =
        first.into_iter().partition(|t| t.user[1..].parse::<usize>().is_ok_and(|i| i < 30));
    let joins = (60..120).map(|i| Tracker::join(nodes[i % 3].addr, "presence-churn", format!("u{i}")));
    drop(leaving);
    let mut trackers = futures_util::future::join_all(joins).await;
    trackers.extend(staying);
    let now_here = users(30..120);
    let trackers = follow_all(trackers, &now_here).await;
    assert_told_once(&trackers, &now_here);
    let mut ids = Api::new(nodes[1].addr).user_ids("presence-churn").await;
    ids.sort();
    let mut expected: Vec<_> = now_here.into_iter().collect();
    expected.sort();
    assert_eq!(ids, expected);
}
