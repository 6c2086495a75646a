//! Multi-process harness: a real `redis-server` on a free port, and `herald-server` processes
//! (the built binary) joined to it, so a node can be killed with SIGKILL like a crashed pod.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The herald-server binary: `HERALD_BIN`, else the one cargo builds next to the test binary.
pub fn server_binary() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("HERALD_BIN") {
        return bin.into();
    }
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("herald-server")
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports free now: each listener is held until all are chosen, so the kernel
/// cannot hand the same port out twice (a primary and its sentinel on one port would fail at
/// random).
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("bound address").port()).collect()
}

/// A redis-server, killed on drop: without persistence, or with an append-only file written
/// before every reply (`appendfsync always`), so a restart keeps every acknowledged write.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// TLS only (no plaintext port), requiring client certificates signed by this CA.
    tls: Option<(String, String, String)>,
    /// The data directory of a persistent Redis.
    dir: Option<std::path::PathBuf>,
    /// With `HERALD_TEST_REDIS_SHAPE=cluster`: a three-primary Redis Cluster stands in for the
    /// one Redis (`port` is its first member), so the multi-node suites run on it unchanged.
    shards: Option<crate::shards::RedisShards>,
    /// With `HERALD_TEST_REDIS_SHAPE=sentinel`: a primary and a replica behind a sentinel stand
    /// in for it (`port` is the primary's; nodes find it through the sentinel).
    sentinels: Option<SentinelSet>,
}

fn shape_is(name: &str) -> bool {
    std::env::var("HERALD_TEST_REDIS_SHAPE").is_ok_and(|s| s == name)
}

/// Whether the multi-node suites run on a Redis Cluster (`HERALD_TEST_REDIS_SHAPE=cluster`).
fn sharded() -> bool {
    shape_is("cluster")
}

/// With `HERALD_TEST_REDIS_SHAPE=tls`, every [`Redis::start`] is TLS only with client
/// certificates, signed by one CA made for the test process; nodes get the files as flags.
fn shape_tls() -> Option<&'static TlsFiles> {
    static FILES: std::sync::OnceLock<TlsFiles> = std::sync::OnceLock::new();
    std::env::var("HERALD_TEST_REDIS_SHAPE")
        .is_ok_and(|s| s == "tls")
        .then(|| FILES.get_or_init(TlsFiles::make))
}

impl Redis {
    pub async fn start() -> Redis {
        if sharded() {
            return Redis::on(crate::shards::RedisShards::start(3, 0).await);
        }
        if let Some(files) = shape_tls() {
            return Redis::start_tls(files).await;
        }
        if shape_is("sentinel") {
            let set = SentinelSet::start_without_failover().await;
            let port = set.primary().await;
            return Redis { child: None, port, tls: None, dir: None, shards: None, sentinels: Some(set) };
        }
        let port = free_port();
        let mut r = Redis { child: None, port, tls: None, dir: None, shards: None, sentinels: None };
        r.launch().await;
        r
    }

    fn on(shards: crate::shards::RedisShards) -> Redis {
        Redis {
            child: None,
            port: shards.first_port(),
            tls: None,
            dir: None,
            shards: Some(shards),
            sentinels: None,
        }
    }

    /// A Redis that keeps its data across [`Redis::restart`], as one with an AOF volume does.
    pub async fn start_persistent() -> Redis {
        if sharded() {
            return Redis::on(crate::shards::RedisShards::start_persistent(3, 0).await);
        }
        if shape_is("sentinel") {
            let set = SentinelSet::start_persistent().await;
            let port = set.primary().await;
            return Redis { child: None, port, tls: None, dir: None, shards: None, sentinels: Some(set) };
        }
        let dir = std::env::temp_dir().join(format!("herald-redis-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tls = shape_tls().map(|f| (f.path("redis.pem"), f.path("redis.key"), f.path("ca.pem")));
        let mut r =
            Redis { child: None, port: free_port(), tls, dir: Some(dir), shards: None, sentinels: None };
        r.launch().await;
        r
    }

    /// A TLS-only Redis (`--port 0 --tls-port`) that requires a client certificate.
    pub async fn start_tls(files: &TlsFiles) -> Redis {
        let port = free_port();
        let tls = (files.path("redis.pem"), files.path("redis.key"), files.path("ca.pem"));
        let mut r = Redis { child: None, port, tls: Some(tls), dir: None, shards: None, sentinels: None };
        r.launch().await;
        r
    }

    async fn launch(&mut self) {
        let persistence: Vec<String> = match &self.dir {
            Some(dir) => ["--dir", &dir.to_string_lossy(), "--appendonly", "yes", "--appendfsync", "always"]
                .map(str::to_owned)
                .to_vec(),
            None => ["--appendonly", "no"].map(str::to_owned).to_vec(),
        };
        if let Some((cert, key, ca)) = self.tls.clone() {
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &ca])
                .args(["--tls-auth-clients", "yes", "--save", ""])
                .args(&persistence)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server must be installed (./scripts/test installs it)");
            self.child = Some(child);
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("TLS redis-server did not start on port {}", self.port);
        }
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                // Fault tests stall Redis with DEBUG SLEEP (refused unless enabled).
                "--enable-debug-command",
                "local",
            ])
            .args(persistence)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (./scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").await.is_ok()
                    && s.read_exact(&mut buf).await.is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn url(&self) -> String {
        if let Some(shards) = &self.shards {
            return shards.url();
        }
        if let Some(set) = &self.sentinels {
            return set.url();
        }
        match self.tls {
            Some(_) => format!("rediss://127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// redis-cli's flags for this Redis: when it is TLS only, its CA and the client certificate
    /// [`TlsFiles`] keeps beside it (none otherwise).
    pub fn cli_flags(&self) -> Vec<String> {
        let Some((_, _, ca)) = &self.tls else { return Vec::new() };
        let beside = |name: &str| std::path::Path::new(ca).with_file_name(name).display().to_string();
        ["--tls", "--cacert", ca, "--cert", &beside("client.pem"), "--key", &beside("client.key")]
            .map(str::to_owned)
            .to_vec()
    }

    /// SIGKILL: Redis goes away with all its data.
    pub async fn kill(&mut self) {
        if let Some(shards) = &mut self.shards {
            return shards.kill_all().await;
        }
        if let Some(set) = &mut self.sentinels {
            return set.kill_all().await;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts again on the same port: empty, or with its data if persistent.
    pub async fn restart(&mut self) {
        if let Some(shards) = &mut self.shards {
            return shards.restart_all().await;
        }
        if let Some(set) = &mut self.sentinels {
            return set.restart_all().await;
        }
        self.kill().await;
        self.launch().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            if let Some(c) = self.child.as_mut() {
                let _ = c.start_kill();
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One herald-server process of the cluster.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    pub ops: SocketAddr,
}

impl Node {
    /// Starts a node with the dev app credentials of the in-process tests, a 3 s lease, and
    /// `extra` flags.
    pub async fn spawn(redis: &Redis, node_id: &str, extra: &[&str]) -> Node {
        Node::launch(Node::with_test_app(extra), redis, node_id).await
    }

    /// The server command serving the tests' app, with `extra` flags.
    fn with_test_app(extra: &[&str]) -> Command {
        let mut command = Command::new(server_binary());
        command
            .args(["--app-id", super::APP_ID, "--app-key", super::KEY, "--app-secret", super::SECRET])
            .arg("--app-client-events")
            .args(extra);
        command
    }

    /// Starts a node serving the PusherApps of `cluster` in `namespace` (`--apps kubernetes`),
    /// reaching the API server with `kubeconfig`.
    pub async fn spawn_kubernetes(
        redis: &Redis,
        node_id: &str,
        cluster: &str,
        namespace: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Node {
        let mut command = Command::new(server_binary());
        command
            .args(["--apps", "kubernetes", "--cluster-name", cluster, "--namespace", namespace])
            .args(extra)
            .env("KUBECONFIG", kubeconfig);
        Node::launch(command, redis, node_id).await
    }

    async fn launch(command: Command, redis: &Redis, node_id: &str) -> Node {
        let mut command = command;
        if redis.shards.is_some() {
            command.args(["--redis-mode", "cluster"]);
        }
        Node::launch_on(command, &redis.url(), node_id).await
    }

    async fn launch_on(mut command: Command, url: &str, node_id: &str) -> Node {
        // The tests' 3 s lease unless the test gives its own.
        if !command.as_std().get_args().any(|a| a == "--lease-ttl") {
            command.args(["--lease-ttl", "3"]);
        }
        if shape_is("sentinel") && !command.as_std().get_args().any(|a| a == "--redis-mode") {
            command.args(["--redis-mode", "sentinel", "--redis-sentinel-master", "herald"]);
        }
        if let Some(files) = shape_tls().filter(|_| url.starts_with("rediss://")) {
            command.args(files.node_flags());
        }
        let mut child = command
            .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
            .args(["--cluster", "redis", "--redis-url", url, "--node-id", node_id])
            // Sockets close at once on SIGTERM unless a test asks for a spread (--drain-spread).
            .env("HERALD_DRAIN_SPREAD", "0")
            // HERALD_TEST_NODE_LOG=info (or a tracing filter) shows more of what the nodes do.
            .env("HERALD_LOG", std::env::var("HERALD_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald-server");
        let stderr = StderrTail::relay(child.stderr.take().expect("piped stderr"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut ops) = (None, None);
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("ws://").nth(1) {
                    addr = rest.split('/').next().and_then(|a| a.parse().ok());
                }
                if let Some(rest) = line.split("http://").nth(1).filter(|_| line.contains("/healthz")) {
                    ops = rest.split('/').next().and_then(|a| a.parse().ok());
                }
                if addr.is_some() && ops.is_some() {
                    break;
                }
            }
        };
        let printed = tokio::time::timeout(Duration::from_secs(40), read).await.is_ok();
        let (Some(addr), Some(ops), true) = (addr, ops, printed) else {
            // Why it did not start: its exit status and its last lines on stderr.
            let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(status)) => format!("it ended with {status}"),
                _ => "it still runs".to_owned(),
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "node {node_id} printed no addresses ({status}); its last lines on stderr:\n{}",
                stderr.lines().join("\n")
            );
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node { child, addr, ops }
    }

    /// SIGKILL, like a crashed pod: no goodbye.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM without waiting: the node starts its graceful shutdown.
    pub async fn begin_terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
    }

    /// SIGTERM: graceful shutdown. Returns the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        self.begin_terminate().await;
        tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.ok()?.ok()?.code()
    }

    pub async fn ready(&self) -> u16 {
        match reqwest::get(format!("http://{}/readyz", self.ops)).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

/// A TCP proxy in front of Redis that a test can cut: a network partition between one node
/// and Redis while the others still reach it.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(redis: &Redis) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let upstream = redis.port;
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = rx.clone();
                if *cut.borrow() {
                    continue; // refused while partitioned
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Proxy { port, cut: std::sync::Arc::new(tx) }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

impl Node {
    /// Like [`Node::spawn`], with Redis reached through `url` (a [`Proxy`]).
    pub async fn spawn_via(url: &str, node_id: &str) -> Node {
        Node::spawn_via_with(url, node_id, &[]).await
    }

    /// Like [`Node::spawn_via`], with `extra` flags.
    pub async fn spawn_via_with(url: &str, node_id: &str, extra: &[&str]) -> Node {
        let mut command = Node::with_test_app(extra);
        // Several seed URLs: a Redis Cluster's.
        if url.contains(',') && !extra.contains(&"--redis-mode") {
            command.args(["--redis-mode", "cluster"]);
        }
        Node::launch_on(command, url, node_id).await
    }
}

/// A node's stderr, passed on to the test's stderr (shown with a failing test's output) line by
/// line, the last lines kept to say why a node did not start.
#[derive(Clone, Default)]
struct StderrTail(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl StderrTail {
    const KEPT: usize = 20;

    fn relay(stderr: tokio::process::ChildStderr) -> StderrTail {
        let tail = StderrTail::default();
        let kept = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                let mut kept = kept.0.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() == StderrTail::KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        tail
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

/// One redis-cli call; its output, trimmed.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    redis_cli_with(port, &[], args).await
}

/// One redis-cli call with `tls` flags first (`--tls --cacert … --cert … --key …`, or none).
pub async fn redis_cli_with(port: u16, tls: &[String], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(tls)
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub use crate::sentinel::SentinelSet;
pub use crate::tls_files::TlsFiles;
