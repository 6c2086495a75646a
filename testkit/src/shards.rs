//! A real Redis Cluster on free ports: `redis-server --cluster-enabled yes` processes joined with
//! `redis-cli --cluster create`, each primary with its replicas. Every process is killed on drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::nodes::{free_ports, redis_cli_with, TlsFiles};

/// One Redis Cluster.
pub struct RedisShards {
    /// Every member by port: the primaries first (as created), then the replicas.
    members: Vec<(u16, Option<Child>)>,
    /// Each member's cluster bus port (`--cluster-port`; the default, port + 10000, would pass
    /// 65535 for a free port above 55535).
    bus_ports: Vec<u16>,
    /// Cluster config files, and each member's AOF when persistent.
    dir: std::path::PathBuf,
    persistent: bool,
    /// TLS only, with client certificates: the server's certificate and key, the CA, and the
    /// client's certificate and key (for redis-cli).
    tls: Option<(Vec<String>, Vec<String>)>,
}

impl RedisShards {
    /// `primaries` primaries (at least 3) with `replicas` replicas each.
    pub async fn start(primaries: usize, replicas: usize) -> RedisShards {
        RedisShards::create(primaries, replicas, false, None).await
    }

    /// Like [`RedisShards::start`], TLS only (`--port 0 --tls-port`, TLS between the members
    /// too), requiring client certificates signed by `files`' CA.
    pub async fn start_tls(primaries: usize, replicas: usize, files: &TlsFiles) -> RedisShards {
        RedisShards::create(primaries, replicas, false, Some((files.server_flags(), files.cli_flags()))).await
    }

    /// Like [`RedisShards::start`], every member keeping its data across a restart (an AOF
    /// written before every reply).
    pub async fn start_persistent(primaries: usize, replicas: usize) -> RedisShards {
        RedisShards::create(primaries, replicas, true, None).await
    }

    async fn create(
        primaries: usize,
        replicas: usize,
        persistent: bool,
        tls: Option<(Vec<String>, Vec<String>)>,
    ) -> RedisShards {
        let dir = std::env::temp_dir().join(format!("herald-shards-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let members = primaries * (1 + replicas);
        let mut ports = free_ports(2 * members);
        let bus_ports = ports.split_off(members);
        let mut shards = RedisShards {
            members: ports.iter().map(|p| (*p, None)).collect(),
            bus_ports,
            dir,
            persistent,
            tls,
        };
        for port in &ports {
            shards.launch(*port);
        }
        for port in &ports {
            shards.wait_for_pong(*port).await;
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(shards.tls_args())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        shards.wait_until_ok().await;
        for port in &ports {
            shards.wait_synced(*port).await;
        }
        shards
    }

    /// Waits until the member on `port`, if a replica, has its primary's data (a replica still
    /// in its first sync holds nothing, and a failover to it loses the dataset).
    pub async fn wait_synced(&self, port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info = self.cli(port, &["INFO", "replication"]).await;
            if info.contains("role:master") || info.contains("master_link_status:up") {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "replica {port} did not sync in 30 s: {info}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn launch(&mut self, port: u16) {
        let conf = self.dir.join(format!("nodes-{port}.conf"));
        let index = self.members.iter().position(|(p, _)| *p == port).unwrap_or_default();
        let bus_port = self.bus_ports[index].to_string();
        let aof = if self.persistent { ["--appendonly", "yes"] } else { ["--appendonly", "no"] };
        let listen: Vec<String> = match &self.tls {
            Some((server, _)) => {
                let tls = [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                ];
                tls.map(str::to_owned).into_iter().chain(server.iter().cloned()).collect()
            }
            None => vec!["--port".to_owned(), port.to_string()],
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--repl-diskless-sync-delay", "0"])
            .args(["--dir", &self.dir.display().to_string()])
            .args(["--appendfilename", &format!("appendonly-{port}.aof")])
            .args(["--appenddirname", &format!("aof-{port}")])
            .args(aof)
            .args(["--appendfsync", "always"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", &conf.display().to_string()])
            .args(["--cluster-port", &bus_port])
            .args(["--cluster-node-timeout", "2000", "--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (./scripts/test installs it)");
        if let Some(member) = self.members.iter_mut().find(|(p, _)| *p == port) {
            member.1 = Some(child);
        }
    }

    /// Seed URLs for `--redis-url` with `--redis-mode cluster`: every member.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        self.members.iter().map(|(p, _)| format!("{scheme}://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// redis-cli's TLS flags for this cluster (none for a plain one).
    fn tls_args(&self) -> Vec<String> {
        self.tls.as_ref().map(|(_, cli)| cli.clone()).unwrap_or_default()
    }

    /// One redis-cli call to a member; its output, trimmed.
    async fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli_with(port, &self.tls_args(), args).await
    }

    /// The first member's port.
    pub fn first_port(&self) -> u16 {
        self.members[0].0
    }

    /// A member that runs, to ask about the cluster.
    fn live_port(&self) -> u16 {
        self.members.iter().find(|(_, c)| c.is_some()).map_or(self.members[0].0, |(p, _)| *p)
    }

    /// Waits until every running member reports `cluster_state:ok` and agrees on the slots.
    pub async fn wait_until_ok(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            let mut ok = true;
            for (port, child) in &self.members {
                if child.is_some()
                    && !self.cli(*port, &["CLUSTER", "INFO"]).await.contains("cluster_state:ok")
                {
                    ok = false;
                }
            }
            if ok {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the Redis Cluster did not become ok in 40 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port of the primary that owns `key`'s slot now. During a failover one node's view
    /// can briefly show the old primary demoted before it hears of the new one: asked again.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let slot = self.cli(self.live_port(), &["CLUSTER", "KEYSLOT", key]).await;
        let slot: u16 = slot.parse().expect("a slot");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let nodes = self.cli(self.live_port(), &["CLUSTER", "NODES"]).await;
            match owner_of(slot, &nodes) {
                Some(port) => return port,
                None if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => panic!("no primary owns slot {slot}: {nodes}"),
            }
        }
    }

    /// The ports of a primary's replicas.
    pub async fn replicas_of(&self, primary: u16) -> Vec<u16> {
        let nodes = self.cli(primary, &["CLUSTER", "NODES"]).await;
        let id = nodes.lines().find(|l| l.contains("myself")).and_then(|l| l.split_whitespace().next());
        let id = id.expect("the primary's node id").to_owned();
        nodes
            .lines()
            .filter(|l| l.split_whitespace().nth(3) == Some(id.as_str()))
            .filter_map(|l| l.split_whitespace().nth(1)?.split('@').next()?.rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// `CLUSTER FAILOVER` on a replica: it takes over its primary's slots.
    pub async fn failover_to(&self, replica: u16) {
        self.wait_synced(replica).await;
        assert_eq!(self.cli(replica, &["CLUSTER", "FAILOVER"]).await, "OK", "CLUSTER FAILOVER");
    }

    /// Moves the slot of `key` to the primary on `to` as `redis-cli --cluster reshard` does
    /// (IMPORTING / MIGRATING, `MIGRATE` in batches of `batch` keys with a pause between them,
    /// then the new owner announced to every primary), while clients keep writing: they meet
    /// ASK and TRYAGAIN during the move and MOVED after it.
    pub async fn move_slot(&self, key: &str, to: u16, batch: usize, pause: Duration) {
        let slot = self.cli(self.live_port(), &["CLUSTER", "KEYSLOT", key]).await;
        let from = self.primary_of(key).await;
        assert_ne!(from, to, "the slot is on {to} already");
        let (from_id, to_id) =
            (self.cli(from, &["CLUSTER", "MYID"]).await, self.cli(to, &["CLUSTER", "MYID"]).await);
        assert_eq!(self.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).await, "OK");
        assert_eq!(self.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).await, "OK");
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, &batch.to_string()]).await;
            let keys: Vec<&str> = keys.lines().map(str::trim).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let to_port = to.to_string();
            args.extend([to_port.as_str(), "", "0", "5000", "REPLACE", "KEYS"]);
            args.extend(keys);
            let out = self.cli(from, &args).await;
            assert!(out == "OK" || out == "NOKEY", "MIGRATE: {out}");
            tokio::time::sleep(pause).await;
        }
        for (port, child) in &self.members {
            if child.is_some() {
                self.cli(*port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).await;
            }
        }
    }

    /// The ports of the primaries now.
    pub async fn primaries(&self) -> Vec<u16> {
        let nodes = self.cli(self.live_port(), &["CLUSTER", "NODES"]).await;
        nodes
            .lines()
            .filter(|l| {
                l.split_whitespace().nth(2).is_some_and(|f| f.contains("master") && !f.contains("fail"))
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.split('@').next()?.rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// SIGKILL of one member.
    pub async fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.members.iter_mut().find(|(p, _)| *p == port) {
            if let Some(mut c) = child.take() {
                let _ = c.kill().await;
            }
        }
    }

    /// SIGKILL of every member.
    pub async fn kill_all(&mut self) {
        let ports: Vec<u16> = self.members.iter().map(|(p, _)| *p).collect();
        for port in ports {
            self.kill(port).await;
        }
    }

    /// Starts every member again with its cluster config (and its data if persistent), and
    /// waits until the cluster is ok.
    pub async fn restart_all(&mut self) {
        self.kill_all().await;
        let ports: Vec<u16> = self.members.iter().map(|(p, _)| *p).collect();
        for port in &ports {
            self.launch(*port);
        }
        for port in &ports {
            self.wait_for_pong(*port).await;
        }
        self.wait_until_ok().await;
    }

    async fn wait_for_pong(&self, port: u16) {
        for _ in 0..100 {
            if self.cli(port, &["PING"]).await == "PONG" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    /// Starts a killed member again.
    pub async fn relaunch(&mut self, port: u16) {
        self.launch(port);
        self.wait_for_pong(port).await;
    }
}

impl Drop for RedisShards {
    fn drop(&mut self) {
        for (_, child) in &mut self.members {
            if let Some(c) = child.as_mut() {
                let _ = c.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The port of the primary `CLUSTER NODES` shows owning `slot`, if one does.
fn owner_of(slot: u16, nodes: &str) -> Option<u16> {
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A primary that failed keeps its slots until a replica takes them over.
        if fields.len() < 9 || !fields[2].contains("master") {
            continue;
        }
        let covers = fields[8..].iter().any(|range| match range.split_once('-') {
            Some((a, b)) => {
                a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
            }
            None => range.parse::<u16>().is_ok_and(|s| s == slot),
        });
        if covers {
            let port = fields[1].split('@').next().and_then(|a| a.rsplit(':').next());
            return port.and_then(|p| p.parse().ok());
        }
    }
    None
}
