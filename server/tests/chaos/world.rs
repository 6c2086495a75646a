//! The chaos run's world: Redis, three nodes, a webhook receiver, and the actors (observers,
//! presence users, a backend, a talking client), each recording what it did and saw.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use herald_testkit::nodes::{redis_cli_with, Node, Redis};
use herald_testkit::{channel_auth, now, signed_query, Receiver, APP_ID, KEY, SECRET};

use crate::oracle::{Fact, Observed, Report, Run, Said, Triggered};

/// Presence users churning through the run.
const USERS: usize = 6;
/// Observers per node.
const OBSERVERS: usize = 2;

pub enum Fault {
    /// SIGKILL node `i` (1 or 2; node 0 stays up), restart it after the pause.
    KillNode(usize, Duration),
    /// SIGKILL Redis and start it again on its data.
    RestartRedis,
    /// `CLIENT KILL TYPE pubsub`: every node's subscriber connection drops.
    KillPubSub,
    /// `DEBUG SLEEP`: Redis answers nothing for a while.
    StallRedis(Duration),
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The nodes' WebSocket addresses by index; `None` while a node is down.
#[derive(Clone, Default)]
struct Addrs(Arc<Mutex<Vec<Option<SocketAddr>>>>);

impl Addrs {
    /// A live node at random: its index and address.
    fn pick(&self, rng: &mut impl Rng) -> Option<(usize, SocketAddr)> {
        let live: Vec<(usize, SocketAddr)> =
            self.0.lock().unwrap().iter().enumerate().filter_map(|(i, a)| a.map(|a| (i, a))).collect();
        (!live.is_empty()).then(|| live[rng.random_range(0..live.len())])
    }
    fn set(&self, i: usize, addr: Option<SocketAddr>) {
        self.0.lock().unwrap()[i] = addr;
    }
}

/// Connects as pusher-js does; `None` when the node is gone.
async fn open(addr: SocketAddr) -> Option<(Ws, String)> {
    let url = format!("ws://{addr}/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false");
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(url))
        .await
        .ok()?
        .ok()?;
    let first = recv(&mut ws, Duration::from_secs(3)).await?;
    let data: Value = serde_json::from_str(first["data"].as_str()?).ok()?;
    Some((ws, data["socket_id"].as_str()?.to_owned()))
}

/// The next frame; `None` on close, error or silence.
async fn recv(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

async fn send(ws: &mut Ws, v: Value) -> bool {
    ws.send(Message::Text(v.to_string().into())).await.is_ok()
}

async fn subscribe(ws: &mut Ws, socket_id: &str, channel: &str, user: Option<&str>) -> bool {
    let data = user.map(|u| json!({"user_id": u, "user_info": {"name": u}}).to_string());
    let auth = channel_auth(socket_id, channel, data.as_deref());
    let mut body = json!({"channel": channel, "auth": auth});
    if let Some(d) = data {
        body["channel_data"] = d.into();
    }
    if !send(ws, json!({"event": "pusher:subscribe", "data": body})).await {
        return false;
    }
    loop {
        match recv(ws, Duration::from_secs(5)).await {
            Some(f) if f["event"] == "pusher_internal:subscription_succeeded" && f["channel"] == channel => {
                return true
            }
            Some(_) => continue,
            None => return false,
        }
    }
}

pub struct World {
    redis: tokio::sync::Mutex<Redis>,
    redis_port: u16,
    /// redis-cli's TLS flags when Redis is TLS only.
    redis_flags: Vec<String>,
    url: String,
    nodes: Arc<tokio::sync::Mutex<Vec<Option<Node>>>>,
    addrs: Addrs,
    hooks: Receiver,
    /// Ends the users, the backend and the talker.
    stop: CancellationToken,
    /// Ends the observers, after everything settled.
    stop_watching: CancellationToken,
    restarts: Mutex<Vec<JoinHandle<()>>>,
    observers: Vec<JoinHandle<Observed>>,
    users: Vec<JoinHandle<Vec<Run>>>,
    backend: JoinHandle<Vec<Triggered>>,
    talker: JoinHandle<Vec<Said>>,
    facts: Arc<Mutex<Vec<Fact>>>,
    seed: u64,
    t0: Instant,
}

fn webhook_flags(url: &str) -> Vec<String> {
    vec!["--app-webhook-url".into(), url.into()]
}

async fn spawn_node(url: &str, i: usize, hooks: &str) -> Node {
    let flags = webhook_flags(hooks);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Node::spawn_via_with(url, &format!("n{i}"), &flags).await
}

impl World {
    pub async fn start(seed: u64) -> World {
        let redis = Redis::start_persistent().await;
        let (url, redis_port, redis_flags) = (redis.url(), redis.port, redis.cli_flags());
        let hooks = Receiver::start(vec![]).await;
        let addrs = Addrs::default();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let node = spawn_node(&url, i, &hooks.url).await;
            addrs.0.lock().unwrap().push(Some(node.addr));
            nodes.push(Some(node));
        }
        let stop = CancellationToken::new();
        let stop_watching = CancellationToken::new();
        let mut observers = Vec::new();
        for node in &nodes {
            let addr = node.as_ref().map(|n| n.addr).expect("started");
            for _ in 0..OBSERVERS {
                let (ws, socket_id) = open(addr).await.expect("observer connects");
                observers.push(tokio::spawn(observe(ws, socket_id, stop_watching.clone())));
            }
        }
        // Let the observers subscribe before anything happens.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        let users = (0..USERS)
            .map(|u| {
                tokio::spawn(churn(format!("user-{u}"), seed ^ (u as u64 + 1), addrs.clone(), stop.clone()))
            })
            .collect();
        let backend = tokio::spawn(trigger(seed, addrs.clone(), stop.clone()));
        let talker_addr = nodes[0].as_ref().map(|n| n.addr).expect("started");
        let talker = tokio::spawn(talk(talker_addr, stop.clone()));
        World {
            redis: tokio::sync::Mutex::new(redis),
            redis_port,
            redis_flags,
            url,
            nodes: Arc::new(tokio::sync::Mutex::new(nodes)),
            addrs,
            hooks,
            stop,
            stop_watching,
            restarts: Mutex::new(Vec::new()),
            observers,
            users,
            backend,
            talker,
            facts: Arc::default(),
            seed,
            t0,
        }
    }

    fn record(&self, fact: Fact) {
        self.facts.lock().unwrap().push(fact);
    }

    pub async fn inject(&self, fault: Fault) {
        let at = Instant::now();
        match fault {
            Fault::KillNode(i, down_for) => {
                let mut nodes = self.nodes.lock().await;
                let Some(mut node) = nodes[i].take() else { return };
                self.addrs.set(i, None);
                node.kill9().await;
                drop(nodes);
                self.record(Fact::NodeKilled { at, node: i, down_for });
                let (url, hooks, nodes, addrs) =
                    (self.url.clone(), self.hooks.url.clone(), self.nodes.clone(), self.addrs.clone());
                let restart = tokio::spawn(async move {
                    tokio::time::sleep(down_for).await;
                    // A start that fails (Redis restarting right then) is tried again.
                    for _ in 0..20 {
                        let (url, hooks) = (url.clone(), hooks.clone());
                        if let Ok(node) = tokio::spawn(async move { spawn_node(&url, i, &hooks).await }).await
                        {
                            addrs.set(i, Some(node.addr));
                            nodes.lock().await[i] = Some(node);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                });
                self.restarts.lock().unwrap().push(restart);
            }
            Fault::RestartRedis => {
                self.redis.lock().await.restart().await;
                self.record(Fact::RedisRestarted { at, back: Instant::now() });
            }
            Fault::KillPubSub => {
                redis_cli_with(self.redis_port, &self.redis_flags, &["CLIENT", "KILL", "TYPE", "pubsub"])
                    .await;
                self.record(Fact::PubSubKilled { at });
            }
            Fault::StallRedis(d) => {
                let (port, flags) = (self.redis_port, self.redis_flags.clone());
                let secs = format!("{:.3}", d.as_secs_f64());
                tokio::spawn(async move { redis_cli_with(port, &flags, &["DEBUG", "SLEEP", &secs]).await });
                self.record(Fact::RedisStalled { at, for_: d });
            }
        }
    }

    /// Stops the actors, lets leases, windows and webhooks settle, and gathers what everyone saw.
    pub async fn finish(self) -> Report {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.stop.cancel();
        let restarts: Vec<JoinHandle<()>> = std::mem::take(&mut *self.restarts.lock().unwrap());
        for r in restarts {
            let _ = r.await;
        }
        let mut runs = Vec::new();
        for u in self.users {
            runs.extend(u.await.expect("user task"));
        }
        let triggered = self.backend.await.expect("backend task");
        let said = self.talker.await.expect("talker task");
        // Leases (3 s) and their clean-up bound, the 3 s window, then quiet for 3 s.
        let settle_from = Instant::now();
        let mut quiet_since = (Instant::now(), self.hooks.hooks().len());
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let n = self.hooks.hooks().len();
            if n != quiet_since.1 {
                quiet_since = (Instant::now(), n);
            }
            let settled = settle_from.elapsed() > Duration::from_secs(10)
                && quiet_since.0.elapsed() > Duration::from_secs(3);
            if settled || settle_from.elapsed() > Duration::from_secs(40) {
                break;
            }
        }
        let anchor = self.nodes.lock().await[0].as_ref().map(|n| n.addr).expect("node 0 is never killed");
        let mut ghosts = ghosts(anchor).await;
        ghosts.online = redis_cli_with(
            self.redis_port,
            &self.redis_flags,
            &["-c", "HLEN", &format!("herald:{{{APP_ID}}}:users")],
        )
        .await;
        self.stop_watching.cancel();
        let mut observed = Vec::new();
        for o in self.observers {
            observed.push(o.await.expect("observer task"));
        }
        let open_observers = observed.iter().filter(|o| !o.closed).count();
        let facts = self.facts.lock().unwrap().clone();
        Report {
            seed: self.seed,
            t0: self.t0,
            facts,
            runs,
            triggered,
            said,
            observed,
            hooks: self.hooks.hooks(),
            ghosts: ghosts.check(open_observers),
        }
    }
}

/// What the anchor node's HTTP API says is left after the run.
struct Leftovers {
    channels: Vec<String>,
    lobby_users: Vec<String>,
    feed_subscriptions: Option<u64>,
    /// How many users Redis counts as signed in.
    online: String,
}

impl Leftovers {
    fn check(self, open_observers: usize) -> Vec<String> {
        let mut problems = Vec::new();
        for ch in self.channels.iter().filter(|c| *c != "feed" && *c != "private-chat") {
            problems.push(format!("ghost channel still occupied: {ch}"));
        }
        for u in &self.lobby_users {
            problems.push(format!("ghost member of presence-lobby: {u}"));
        }
        if self.online != "0" {
            problems.push(format!("{} users still online in Redis after everyone left", self.online));
        }
        if self.feed_subscriptions != Some(open_observers as u64) {
            problems.push(format!(
                "feed's subscription_count is {:?} with {open_observers} observers connected",
                self.feed_subscriptions
            ));
        }
        problems
    }
}

async fn ghosts(addr: SocketAddr) -> Leftovers {
    let http = reqwest::Client::new();
    let get = |path: String, extra: Vec<(&'static str, &'static str)>| {
        let http = http.clone();
        async move {
            let q = signed_query("GET", &path, &extra, "", now(), SECRET);
            let r = http.get(format!("http://{addr}{path}?{q}")).send().await.expect("anchor answers");
            r.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    let channels = get(format!("/apps/{APP_ID}/channels"), vec![]).await;
    let users = get(format!("/apps/{APP_ID}/channels/presence-lobby/users"), vec![]).await;
    let feed = get(format!("/apps/{APP_ID}/channels/feed"), vec![("info", "subscription_count")]).await;
    Leftovers {
        channels: channels["channels"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default(),
        lobby_users: users["users"]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        feed_subscriptions: feed["subscription_count"].as_u64(),
        online: String::new(),
    }
}

/// Subscribes to `feed` and `private-chat` and records every event until told to stop.
async fn observe(mut ws: Ws, socket_id: String, stop: CancellationToken) -> Observed {
    let mut seen = Observed::default();
    let ok = subscribe(&mut ws, &socket_id, "feed", None).await
        && subscribe(&mut ws, &socket_id, "private-chat", None).await;
    seen.closed = !ok;
    while !seen.closed {
        let frame = tokio::select! {
            _ = stop.cancelled() => break,
            f = recv(&mut ws, Duration::from_secs(3600)) => f,
        };
        match frame {
            None => seen.closed = true,
            Some(f) if f["event"] == "tick" => {
                seen.feed.push(f["data"].as_str().unwrap_or_default().to_owned())
            }
            Some(f) if f["event"] == "client-note" => {
                seen.chat.push(f["data"].as_str().unwrap_or_default().to_owned())
            }
            Some(_) => {}
        }
    }
    seen
}

/// A presence user: joins `presence-lobby` and its own `room-{user}` on a node, stays a while,
/// then flaps (back within half a second, on another node) or leaves for 6–8 s. A socket its
/// node's death closes comes back at once elsewhere.
async fn churn(user: String, seed: u64, addrs: Addrs, stop: CancellationToken) -> Vec<Run> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut runs = Vec::new();
    let room = format!("room-{user}");
    while !stop.is_cancelled() {
        let Some((_, addr)) = addrs.pick(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let start = Instant::now();
        let mut joined = false;
        let mut conn = open(addr).await;
        if let Some((ws, socket_id)) = conn.as_mut() {
            let user_data = json!({"id": user}).to_string();
            let auth = herald_server::signing::token(
                KEY,
                SECRET,
                &herald_server::signing::user_string(socket_id, &user_data),
            );
            joined = send(ws, json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}))
                .await
                && subscribe(ws, socket_id, "presence-lobby", Some(&user)).await
                && subscribe(ws, socket_id, &room, None).await;
        }
        let stay = Duration::from_millis(rng.random_range(1000..4000));
        let mut killed = !joined;
        if let Some((ws, _)) = conn.as_mut().filter(|_| joined) {
            let until = tokio::time::Instant::now() + stay;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(until) => break,
                    f = recv(ws, Duration::from_secs(3600)) => if f.is_none() { killed = true; break },
                }
            }
        }
        if let Some((mut ws, _)) = conn {
            let _ = ws.close(None).await;
        }
        runs.push(Run { user: user.clone(), start, end: Instant::now(), killed });
        if stop.is_cancelled() {
            break;
        }
        let away = if killed || rng.random_bool(0.5) {
            Duration::from_millis(rng.random_range(50..500))
        } else {
            Duration::from_millis(rng.random_range(6000..8000))
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(away) => {}
        }
    }
    runs
}

/// The backend: triggers `tick` on `feed` through a random live node every 20 ms.
async fn trigger(seed: u64, addrs: Addrs, stop: CancellationToken) -> Vec<Triggered> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.rotate_left(17));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("client");
    let path = format!("/apps/{APP_ID}/events");
    let mut out = Vec::new();
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some((_, addr)) = addrs.pick(&mut rng) else { continue };
        seq += 1;
        let body = json!({"name": "tick", "channels": ["feed"], "data": seq.to_string()}).to_string();
        let q = signed_query("POST", &path, &[], &body, now(), SECRET);
        let status = match http
            .post(format!("http://{addr}{path}?{q}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        out.push(Triggered { seq: seq.to_string(), status });
    }
    out
}

/// A client on node 0 sending a client event on `private-chat` every 200 ms (half the limit).
async fn talk(addr: SocketAddr, stop: CancellationToken) -> Vec<Said> {
    let mut out = Vec::new();
    let Some((mut ws, socket_id)) = open(addr).await else { return out };
    if !subscribe(&mut ws, &socket_id, "private-chat", None).await {
        return out;
    }
    let mut seq = 0u64;
    let mut every = tokio::time::interval(Duration::from_millis(200));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
            f = recv(&mut ws, Duration::from_secs(3600)) => match f {
                Some(f) if f["event"] == "pusher:error" => panic!("the talker was refused: {f}"),
                Some(_) => continue,
                None => break,
            },
        }
        seq += 1;
        let data = format!("c{seq}");
        let at = Instant::now();
        if !send(&mut ws, json!({"event":"client-note","channel":"private-chat","data":data})).await {
            break;
        }
        out.push(Said { data, at });
    }
    out
}
