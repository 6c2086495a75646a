//! `herald-bench SCENARIO --target 127.0.0.1:6001 --app-id .. --key .. --secret ..`: runs one
//! bounded scenario against any Pusher-compatible server and prints a table and a JSON line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_bench::client::Target;
use herald_bench::fanout::{Fanout, Ramp};
use herald_bench::scenarios;
use herald_bench::slow::Slow;
use herald_bench::stats::Pids;

#[derive(Parser)]
#[command(name = "herald-bench", about = "Load generator for any Pusher-compatible server")]
struct Cli {
    /// Server address (repeat for several nodes of one cluster; clients are spread over them).
    #[arg(long = "target", required = true)]
    targets: Vec<SocketAddr>,
    #[arg(long, default_value = "1")]
    app_id: String,
    #[arg(long, default_value = "herald-dev-key")]
    key: String,
    #[arg(long, default_value = "herald-dev-secret")]
    secret: String,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// The server's pid, to read its RSS and CPU time (repeat for the nodes of a cluster and
    /// its Redis: the figures are summed).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Connection storm.
    Connect {
        #[arg(long, default_value_t = 5000)]
        connections: usize,
    },
    /// Idle subscribed connections: server bytes per connection (needs --server-pid).
    Idle {
        #[arg(long, default_value_t = 5000)]
        connections: usize,
    },
    /// Fixed-rate publishing to subscribers: deliveries/s, latency, loss.
    Fanout {
        #[arg(long, default_value_t = 1)]
        channels: usize,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Messages per second over all channels.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Seconds of publishing (each step's, when ramping).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Ramp: multiply the rate by this each step until a step loses a delivery or its p99
        /// passes --max-p99-ms; reports the highest sustained step.
        #[arg(long)]
        ramp: Option<f64>,
        /// Steps at most when ramping.
        #[arg(long, default_value_t = 12)]
        steps: usize,
        #[arg(long, default_value_t = 100.0)]
        max_p99_ms: f64,
    },
    /// The HTTP API: back-to-back `POST /events` from `--concurrency` backends.
    Api {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// Bytes of event data.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Events per request: 1 sends `POST /events`, more `POST /batch_events` (Pusher: ≤ 10).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Join storm on one presence channel.
    Presence {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Seconds to wait, after the joins, for every member_added (N(N-1)/2 of them).
        #[arg(long, default_value_t = 30)]
        wait_seconds: u64,
    },
    /// Stalled readers under a busy publisher: they must be disconnected (4100), the readers
    /// must lose nothing, and the server's RSS must stay under the bound (needs --server-pid;
    /// exits with 1 when any of that fails).
    Slow {
        #[arg(long, default_value_t = 100)]
        stalled: usize,
        #[arg(long, default_value_t = 10)]
        readers: usize,
        /// Messages per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Bytes of event data per message.
        #[arg(long, default_value_t = 8000)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Fail when the server's RSS grows by more than this (MiB).
        #[arg(long, default_value_t = 64.0)]
        max_growth_mib: f64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target { nodes: cli.targets, app_id: cli.app_id, key: cli.key, secret: cli.secret };
    let server = Pids(cli.server_pids);
    let report = match cli.scenario {
        Scenario::Connect { connections } => scenarios::connect(&target, connections, cli.concurrency).await,
        Scenario::Idle { connections } => {
            needs_pid(&server, "idle")?;
            scenarios::idle(&target, connections, cli.concurrency, &server).await
        }
        Scenario::Fanout { channels, subscribers, rate, seconds, ramp, steps, max_p99_ms } => {
            let o = Fanout {
                channels,
                subscribers,
                rate,
                duration: Duration::from_secs(seconds),
                concurrency: cli.concurrency,
                server: server.clone(),
                ramp: ramp.map(|factor| Ramp { factor, steps, max_p99_ms }),
            };
            herald_bench::fanout::fanout(&target, &o).await
        }
        Scenario::Slow { stalled, readers, rate, size, seconds, max_growth_mib } => {
            needs_pid(&server, "slow")?;
            let o = Slow {
                stalled,
                readers,
                rate,
                size,
                duration: Duration::from_secs(seconds),
                concurrency: cli.concurrency,
                server: server.clone(),
                max_growth_mib,
            };
            herald_bench::slow::slow(&target, &o).await
        }
        Scenario::Api { seconds, channels, size, batch } => {
            let o = herald_bench::api::Api {
                batch,
                concurrency: cli.concurrency,
                duration: Duration::from_secs(seconds),
                channels,
                size,
                server: server.clone(),
            };
            herald_bench::api::api(&target, &o).await
        }
        Scenario::Presence { members, wait_seconds } => {
            let wait = Duration::from_secs(wait_seconds);
            scenarios::presence(&target, members, cli.concurrency, &server, wait).await
        }
    };
    report.print();
    if report.failed {
        std::process::exit(1);
    }
    Ok(())
}

fn needs_pid(server: &Pids, scenario: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!server.0.is_empty(), "{scenario} needs --server-pid");
    Ok(())
}
