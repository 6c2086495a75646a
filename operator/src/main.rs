//! `herald-operator`: runs the controllers, or prints the CRDs (`herald-operator crd`).

use std::io::IsTerminal as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use herald_operator::leader::Election;
use herald_operator::run::{check, parse_namespaces, run, Settings};

#[derive(Parser)]
#[command(
    name = "herald-operator",
    version,
    about = "Kubernetes operator for Herald (PusherCluster, PusherApp)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Namespaces to watch, comma-separated; all when empty.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// herald-server image for clusters that name none.
    #[arg(long, env = "HERALD_SERVER_IMAGE", default_value = concat!("ghcr.io/herald-dev/herald-server:", env!("CARGO_PKG_VERSION")))]
    server_image: String,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "HERALD_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Seconds between refreshes of each PusherApp's status.connections and status.channels.
    #[arg(long, env = "HERALD_OPERATOR_USAGE_REFRESH", default_value_t = 30)]
    usage_refresh: u64,
    /// Reconcile only while holding the Lease `herald-operator` in $POD_NAMESPACE (for 2+ replicas).
    #[arg(long, env = "HERALD_OPERATOR_LEADER_ELECTION")]
    leader_election: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Run the controllers (the default).
    Run,
    /// Check the client, the CRDs and the operator's rights; exit 0 when all hold.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        print!("{}", herald_crds::crds_yaml().context("rendering the CRDs")?);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn")),
        )
        // Colour only on a terminal: container logs (kubectl logs, collectors) get plain text.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let namespaces = parse_namespaces(Some(&cli.watch_namespace));
    if let Some(Command::Check) = cli.command {
        check(&namespaces).await?;
        println!("herald-operator: Kubernetes API reachable, CRDs installed, PusherClusters and PusherApps readable");
        return Ok(());
    }
    let leader_election = if cli.leader_election {
        let namespace = std::env::var("POD_NAMESPACE").context("--leader-election needs POD_NAMESPACE")?;
        let identity = std::env::var("POD_NAME").context("--leader-election needs POD_NAME")?;
        Some(Election { namespace, name: "herald-operator".into(), identity })
    } else {
        None
    };
    run(Settings {
        namespaces,
        server_image: cli.server_image,
        metrics_addr: cli.metrics_addr,
        usage_refresh: std::time::Duration::from_secs(cli.usage_refresh.max(1)),
        leader_election,
    })
    .await?;
    Ok(())
}
