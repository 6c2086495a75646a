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
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// TLS files made with openssl in a temporary directory: a CA, Redis's certificate for
/// 127.0.0.1 signed by it, a client certificate signed by it, and a second CA that signed
/// nothing here (the wrong CA).
pub struct TlsFiles {
    pub dir: std::path::PathBuf,
}

impl TlsFiles {
    pub fn make() -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("herald-tls-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let run = |args: &[&str]| {
            let out =
                std::process::Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ca in ["ca", "wrong-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=herald test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (name, ext) in [
            ("redis", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        TlsFiles { dir }
    }

    /// Path of one of the files (`ca.pem`, `wrong-ca.pem`, `client.pem`, `client.key`, ...).
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
}

impl Redis {
    pub async fn start() -> Redis {
        let port = free_port();
        let mut r = Redis { child: None, port, tls: None, dir: None };
        r.launch().await;
        r
    }

    /// A Redis that keeps its data across [`Redis::restart`], as one with an AOF volume does.
    pub async fn start_persistent() -> Redis {
        let dir = std::env::temp_dir().join(format!("herald-redis-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut r = Redis { child: None, port: free_port(), tls: None, dir: Some(dir) };
        r.launch().await;
        r
    }

    /// A TLS-only Redis (`--port 0 --tls-port`) that requires a client certificate.
    pub async fn start_tls(files: &TlsFiles) -> Redis {
        let port = free_port();
        let tls = (files.path("redis.pem"), files.path("redis.key"), files.path("ca.pem"));
        let mut r = Redis { child: None, port, tls: Some(tls), dir: None };
        r.launch().await;
        r
    }

    async fn launch(&mut self) {
        if let Some((cert, key, ca)) = self.tls.clone() {
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &ca])
                .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no"])
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
        let persistence: Vec<String> = match &self.dir {
            Some(dir) => ["--dir", &dir.to_string_lossy(), "--appendonly", "yes", "--appendfsync", "always"]
                .map(str::to_owned)
                .to_vec(),
            None => ["--appendonly", "no"].map(str::to_owned).to_vec(),
        };
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
        match self.tls {
            Some(_) => format!("rediss://127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// SIGKILL: Redis goes away with all its data.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts again on the same port: empty, or with its data if persistent.
    pub async fn restart(&mut self) {
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
        let mut command = Command::new(server_binary());
        command
            .args(["--app-id", super::APP_ID, "--app-key", super::KEY, "--app-secret", super::SECRET])
            .arg("--app-client-events")
            .args(extra);
        Node::launch(command, redis, node_id).await
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

    async fn launch(mut command: Command, redis: &Redis, node_id: &str) -> Node {
        let mut child = command
            .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
            .args([
                "--cluster",
                "redis",
                "--redis-url",
                &redis.url(),
                "--node-id",
                node_id,
                "--lease-ttl",
                "3",
            ])
            // Sockets close at once on SIGTERM unless a test asks for a spread (--drain-spread).
            .env("HERALD_DRAIN_SPREAD", "0")
            // HERALD_TEST_NODE_LOG=info (or a tracing filter) shows more of what the nodes do.
            .env("HERALD_LOG", std::env::var("HERALD_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald-server");
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
        tokio::time::timeout(Duration::from_secs(40), read).await.expect("node printed its addresses");
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node { child, addr: addr.expect("ws address"), ops: ops.expect("ops address") }
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
        let redis = Redis {
            child: None,
            dir: None,
            port: url
                .rsplit(':')
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            tls: None,
        };
        let node = Node::spawn(&redis, node_id, extra).await;
        std::mem::forget(redis);
        node
    }
}

/// A Redis primary, one replica, and one sentinel (quorum 1, `down-after` 1 s) that monitors
/// them as `herald`. Every process is killed on drop.
pub struct SentinelSet {
    /// Redis processes by port (the primary first, at start).
    redis: Vec<(u16, Option<Child>)>,
    sentinel: Child,
    pub sentinel_port: u16,
    dir: std::path::PathBuf,
}

fn spawn_redis(args: &[String]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed (./scripts/test installs it)")
}

/// One redis-cli call; its output, trimmed.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        let dir = std::env::temp_dir().join(format!("herald-sentinel-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (primary, replica, sentinel_port) = (free_port(), free_port(), free_port());
        let base = |port: u16| {
            vec![
                // A replica's full sync writes an RDB file: into the temporary directory, not
                // the test's working directory.
                "--dir".to_owned(),
                dir.display().to_string(),
                "--port".to_owned(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
            ]
        };
        let p = spawn_redis(&base(primary));
        let mut replica_args = base(replica);
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), primary.to_string()]);
        let r = spawn_redis(&replica_args);
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor herald 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds herald 1000\nsentinel failover-timeout herald 5000\n\
                 sentinel parallel-syncs herald 1\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server --sentinel");
        let set =
            SentinelSet { redis: vec![(primary, Some(p)), (replica, Some(r))], sentinel, sentinel_port, dir };
        // Ready when the replica is in sync and the sentinel knows it (a failover needs it).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let link = redis_cli(replica, &["INFO", "replication"]).await;
            let replicas = redis_cli(sentinel_port, &["SENTINEL", "replicas", "herald"]).await;
            if link.contains("master_link_status:up") && replicas.contains(&replica.to_string()) {
                return set;
            }
            assert!(std::time::Instant::now() < deadline, "sentinel set not ready: {link} / {replicas}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The sentinel's URL, for `--redis-url` with `--redis-mode sentinel`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.sentinel_port)
    }

    /// The port of the primary the sentinel names now.
    pub async fn primary(&self) -> u16 {
        let out = redis_cli(self.sentinel_port, &["SENTINEL", "get-master-addr-by-name", "herald"]).await;
        out.lines().nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    /// Waits until the sentinel names a primary other than `old` whose replica link is whole.
    pub async fn wait_for_new_primary(&self, old: u16) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            let now = self.primary().await;
            if now != 0 && now != old {
                let role = redis_cli(now, &["ROLE"]).await;
                if role.starts_with("master") {
                    return now;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no new primary after 40 s (still {now})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `SENTINEL FAILOVER`: the replica is promoted, the primary demoted.
    pub async fn failover(&self) {
        let out = redis_cli(self.sentinel_port, &["SENTINEL", "FAILOVER", "herald"]).await;
        assert_eq!(out, "OK", "SENTINEL FAILOVER");
    }

    /// SIGKILL of the Redis process on `port`.
    pub async fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.redis.iter_mut().find(|(p, _)| *p == port) {
            if let Some(mut c) = child.take() {
                let _ = c.kill().await;
            }
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        let _ = self.sentinel.start_kill();
        for (_, child) in &mut self.redis {
            if let Some(c) = child.as_mut() {
                let _ = c.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
