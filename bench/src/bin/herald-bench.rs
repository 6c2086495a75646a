//! `herald-bench SCENARIO --target 127.0.0.1:6001 --app-id .. --key .. --secret ..`: runs one
//! bounded scenario against any Pusher-compatible server and prints a table and a JSON line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_bench::client::{Target, READ_BUFFER};
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
        /// Ramp: multiply the rate by this each step until --confirm steps in a row lose a
        /// delivery or pass --max-p99-ms (or the generator runs out of its core); reports the
        /// highest sustained step.
        #[arg(long)]
        ramp: Option<f64>,
        /// Steps at most when ramping.
        #[arg(long, default_value_t = 12)]
        steps: usize,
        #[arg(long, default_value_t = 100.0)]
        max_p99_ms: f64,
        /// Failed steps in a row that mean saturation (one alone is taken as noise).
        #[arg(long, default_value_t = 2)]
        confirm: usize,
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
    /// Subscribed sockets past one process's open-files limit, held by several generator
    /// processes, then a fixed-rate fan-out to all of them (connect rate, RSS per socket,
    /// deliveries/s, latency, loss).
    Scale {
        /// Sockets over all processes.
        #[arg(long, default_value_t = 54_000)]
        sockets: usize,
        /// Generator processes (each holds sockets/processes: keep it under the files limit).
        #[arg(long, default_value_t = 4)]
        processes: usize,
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// Messages per second over all channels (each socket gets rate/channels per second).
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds between the last socket subscribed and the first message.
        #[arg(long, default_value_t = 3)]
        settle: u64,
    },
    /// One generator process of `scale` (started by it; speaks JSON lines on stdin/stdout).
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        channels: usize,
        #[arg(long)]
        messages: usize,
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
    // A holder of `scale` keeps many quiet sockets: 4 KiB each.
    let read_buffer = if matches!(cli.scenario, Scenario::Hold { .. }) { 4096 } else { READ_BUFFER };
    let target =
        Target { nodes: cli.targets, app_id: cli.app_id, key: cli.key, secret: cli.secret, read_buffer };
    let server = Pids(cli.server_pids);
    let report = match cli.scenario {
        Scenario::Connect { connections } => scenarios::connect(&target, connections, cli.concurrency).await,
        Scenario::Idle { connections } => {
            needs_pid(&server, "idle")?;
            scenarios::idle(&target, connections, cli.concurrency, &server).await
        }
        Scenario::Fanout { channels, subscribers, rate, seconds, ramp, steps, max_p99_ms, confirm } => {
            let o = Fanout {
                channels,
                subscribers,
                rate,
                duration: Duration::from_secs(seconds),
                concurrency: cli.concurrency,
                server: server.clone(),
                ramp: ramp.map(|factor| Ramp { factor, steps, max_p99_ms, confirm }),
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
        Scenario::Scale { sockets, processes, channels, rate, seconds, settle } => {
            let o = herald_bench::scale::Scale {
                sockets,
                processes,
                channels,
                rate,
                duration: Duration::from_secs(seconds),
                concurrency: cli.concurrency,
                server: server.clone(),
                settle: Duration::from_secs(settle),
            };
            herald_bench::scale::scale(&target, &o).await?
        }
        Scenario::Hold { first, count, channels, messages } => {
            let h =
                herald_bench::scale::Hold { first, count, channels, messages, concurrency: cli.concurrency };
            return herald_bench::scale::hold(&target, &h).await;
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
