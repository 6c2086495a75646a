//! `herald-bench SCENARIO --target 127.0.0.1:6001 --app-id .. --key .. --secret ..`: runs one
//! bounded scenario against any Pusher-compatible server and prints a table and a JSON line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_bench::client::Target;
use herald_bench::scenarios::{self, Fanout};

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
    /// The server's pid, to read its RSS and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
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
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Join storm on one presence channel.
    Presence {
        #[arg(long, default_value_t = 1000)]
        members: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target { nodes: cli.targets, app_id: cli.app_id, key: cli.key, secret: cli.secret };
    let report = match cli.scenario {
        Scenario::Connect { connections } => scenarios::connect(&target, connections, cli.concurrency).await,
        Scenario::Idle { connections } => {
            let pid = cli.server_pid.ok_or_else(|| anyhow::anyhow!("idle needs --server-pid"))?;
            scenarios::idle(&target, connections, cli.concurrency, pid).await
        }
        Scenario::Fanout { channels, subscribers, rate, seconds } => {
            let o = Fanout {
                channels,
                subscribers,
                rate,
                duration: Duration::from_secs(seconds),
                concurrency: cli.concurrency,
                server_pid: cli.server_pid,
            };
            scenarios::fanout(&target, &o).await
        }
        Scenario::Presence { members } => {
            scenarios::presence(&target, members, cli.concurrency, cli.server_pid).await
        }
    };
    report.print();
    Ok(())
}
