//! `herald-baseline --port 7001`: the fan-out floor (see `herald_bench::baseline`).

use clap::Parser;

/// The least work a Pusher fan-out can do: the floor Herald is measured against.
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 7001)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald_bench::baseline::run(([127, 0, 0, 1], args.port).into()).await?;
    Ok(())
}
