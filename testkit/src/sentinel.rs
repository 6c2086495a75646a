//! A Redis primary with a replica behind one sentinel, plain or TLS only, for the Sentinel
//! tests.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::nodes::{free_ports, redis_cli_with, TlsFiles};

/// A Redis primary, one replica, and one sentinel (quorum 1, `down-after` 1 s) that monitors
/// them as `herald`. Every process is killed on drop.
pub struct SentinelSet {
    /// Redis processes by port (the primary first, at start), with their arguments.
    redis: Vec<(u16, Option<Child>, Vec<String>)>,
    sentinel: Child,
    pub sentinel_port: u16,
    dir: std::path::PathBuf,
    /// redis-cli's TLS flags when every process is TLS only (none otherwise).
    tls_args: Vec<String>,
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

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        SentinelSet::launch(None, true, false).await
    }

    /// Like [`SentinelSet::start`], ready as soon as the sentinel names the primary and it
    /// answers, without waiting for the sentinel to learn the replica (which it does on its
    /// next `INFO`, up to 10 s later): for tests that fail nothing over.
    pub async fn start_without_failover() -> SentinelSet {
        SentinelSet::launch(None, false, false).await
    }

    /// Like [`SentinelSet::start_without_failover`], each Redis keeping its data on disk (an
    /// append-only file synced on every write) so a restart comes back with it, and a sentinel
    /// slow to call the primary down (5 s), so neither a whole-set restart nor a stall of a
    /// second fails over: for the chaos test, whose faults are restarts and stalls.
    pub async fn start_persistent() -> SentinelSet {
        SentinelSet::launch(None, false, true).await
    }

    /// Like [`SentinelSet::start`], every process TLS only (the sentinel too, and replication
    /// over TLS), requiring client certificates signed by `files`' CA.
    pub async fn start_tls(files: &TlsFiles) -> SentinelSet {
        SentinelSet::launch(Some(files), true, false).await
    }

    async fn launch(files: Option<&TlsFiles>, failover: bool, persistent: bool) -> SentinelSet {
        // `--port 0 --tls-port P`, the certificates, and TLS for replication and clients.
        let listen = |port: u16| -> Vec<String> {
            let tls = ["--port", "0", "--tls-port", &port.to_string(), "--tls-replication", "yes"]
                .map(str::to_owned);
            match files {
                Some(f) => tls.into_iter().chain(f.server_flags()).collect(),
                None => vec!["--port".to_owned(), port.to_string()],
            }
        };
        let tls_args = files.map(TlsFiles::cli_flags).unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("herald-sentinel-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let [primary, replica, sentinel_port] = free_ports(3)[..] else { unreachable!("three ports") };
        let base = |port: u16| {
            vec![
                // A replica's full sync writes an RDB file: into the temporary directory, not
                // the test's working directory.
                "--dir".to_owned(),
                dir.display().to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
            ]
            .into_iter()
            .chain(match persistent {
                true => [
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--appenddirname",
                    &format!("aof-{port}"),
                    "--dbfilename",
                    &format!("dump-{port}.rdb"),
                ]
                .map(str::to_owned)
                .to_vec(),
                false => vec!["--appendonly".into(), "no".into()],
            })
            .chain(listen(port))
            .collect::<Vec<String>>()
        };
        let primary_args = base(primary);
        let p = spawn_redis(&primary_args);
        let mut replica_args = base(replica);
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), primary.to_string()]);
        let r = spawn_redis(&replica_args);
        let conf = dir.join("sentinel.conf");
        let listen_conf = match files {
            Some(f) => format!(
                "port 0\ntls-port {sentinel_port}\ntls-replication yes\ntls-auth-clients yes\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                f.path("redis.pem"),
                f.path("redis.key"),
                f.path("ca.pem")
            ),
            None => format!("port {sentinel_port}\n"),
        };
        std::fs::write(
            &conf,
            format!(
                "{listen_conf}bind 127.0.0.1\ndir {}\nsentinel monitor herald 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds herald {}\nsentinel failover-timeout herald 5000\n\
                 sentinel parallel-syncs herald 1\n",
                dir.display(),
                if persistent { 5000 } else { 1000 }
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
        let redis = vec![(primary, Some(p), primary_args), (replica, Some(r), replica_args)];
        let set = SentinelSet { redis, sentinel, sentinel_port, dir, tls_args };
        // Ready when the replica is in sync and the sentinel knows it (a failover needs it).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let link = set.cli(replica, &["INFO", "replication"]).await;
            let replicas = set.cli(sentinel_port, &["SENTINEL", "replicas", "herald"]).await;
            if !failover && set.primary().await == primary && set.cli(primary, &["PING"]).await == "PONG" {
                return set;
            }
            if link.contains("master_link_status:up") && replicas.contains(&replica.to_string()) {
                return set;
            }
            assert!(std::time::Instant::now() < deadline, "sentinel set not ready: {link} / {replicas}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli_with(port, &self.tls_args, args).await
    }

    /// The sentinel's URL, for `--redis-url` with `--redis-mode sentinel`.
    pub fn url(&self) -> String {
        let scheme = if self.tls_args.is_empty() { "redis" } else { "rediss" };
        format!("{scheme}://127.0.0.1:{}/0", self.sentinel_port)
    }

    /// The port of the primary the sentinel names now.
    pub async fn primary(&self) -> u16 {
        let out = self.cli(self.sentinel_port, &["SENTINEL", "get-master-addr-by-name", "herald"]).await;
        out.lines().nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    /// Waits until the sentinel names a primary other than `old` whose replica link is whole.
    pub async fn wait_for_new_primary(&self, old: u16) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            let now = self.primary().await;
            if now != 0 && now != old {
                let role = self.cli(now, &["ROLE"]).await;
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
        let out = self.cli(self.sentinel_port, &["SENTINEL", "FAILOVER", "herald"]).await;
        assert_eq!(out, "OK", "SENTINEL FAILOVER");
    }

    /// SIGKILL of the Redis process on `port`.
    pub async fn kill(&mut self, port: u16) {
        if let Some((_, child, _)) = self.redis.iter_mut().find(|(p, _, _)| *p == port) {
            if let Some(mut c) = child.take() {
                let _ = c.kill().await;
            }
        }
    }

    /// SIGKILL of the primary and the replica (the sentinel stays): Redis is gone.
    pub async fn kill_all(&mut self) {
        let ports: Vec<u16> = self.redis.iter().map(|(p, _, _)| *p).collect();
        for port in ports {
            self.kill(port).await;
        }
    }

    /// Starts the primary and the replica again, empty, as they were first started; waits
    /// until the primary answers.
    pub async fn restart_all(&mut self) {
        self.kill_all().await;
        for (_, child, args) in &mut self.redis {
            *child = Some(spawn_redis(args));
        }
        let primary = self.redis[0].0;
        for _ in 0..100 {
            if self.cli(primary, &["PING"]).await == "PONG" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the sentinel set's primary did not start again on {primary}");
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        let _ = self.sentinel.start_kill();
        for (_, child, _) in &mut self.redis {
            if let Some(c) = child.as_mut() {
                let _ = c.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
