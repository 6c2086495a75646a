//! `herald-server`: parses the command line, sets up logging, runs the server until SIGTERM or
//! SIGINT, and exits 0 after a graceful drain.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use herald_server::config::{Cli, Config};
use herald_server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("herald-server: invalid configuration:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        // Colour only on a terminal: container logs (kubectl logs, collectors) get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = Server::bind(&config).await.context("cannot listen")?;
    let addr = server.local_addr()?;
    let ops = server.ops_addr()?;
    print_banner(&config, addr, ops);
    if config.settings.dev_auth {
        tracing::warn!(
            "DEV AUTH IS ON: /pusher/auth and /pusher/user-auth sign any channel and any user for anyone. \
             Never expose this server."
        );
    }
    let token = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: closing sockets with 4200");
        token.cancel();
    });
    server.run().await.context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_banner(config: &Config, addr: SocketAddr, ops: SocketAddr) {
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let port = addr.port();
    let tls = config.settings.tls.is_some();
    let (ws, http, force_tls) = if tls { ("wss", "https", "true") } else { ("ws", "http", "false") };
    // Written in one piece: a reader that starts on the first lines (a test harness, a log
    // shipper) must not see the banner half printed.
    let mut banner = String::new();
    macro_rules! out {
        () => {{
            banner.push('\n');
        }};
        ($($t:tt)*) => {{
            let _ = writeln!(banner, $($t)*);
        }};
    }
    out!("Herald {} — Pusher Channels protocol 7 server", env!("CARGO_PKG_VERSION"));
    out!(
        "  WebSocket + HTTP API : {ws}://{host}:{port}/app/<key>   {http}://{host}:{port}/apps/<app_id>/..."
    );
    out!("  Health and metrics   : http://{host}:{}/healthz  /readyz  /metrics", ops.port());
    if config.dev_app {
        let app = &config.apps[0];
        out!();
        out!("  Development app (no app configured; use --app-id/--app-key/--app-secret or --config):");
        out!("    app_id = {}", app.id);
        out!("    key    = {}", app.key);
        out!("    secret = {}", app.secret);
        out!();
        out!("  Connect with pusher-js:");
        if tls {
            out!(
                "    const pusher = new Pusher(\"{}\", {{ cluster: \"herald\", wsHost: \"{host}\", wssPort: {port}, forceTLS: true, enabledTransports: [\"ws\"] }});",
                app.key
            );
        } else {
            out!(
                "    const pusher = new Pusher(\"{}\", {{ cluster: \"herald\", wsHost: \"{host}\", wsPort: {port}, forceTLS: false, enabledTransports: [\"ws\"] }});",
                app.key
            );
        }
        out!("  Trigger with the Node server SDK (npm i pusher):");
        out!(
            "    const pusher = new Pusher({{ appId: \"{}\", key: \"{}\", secret: \"{}\", host: \"{host}\", port: \"{port}\", useTLS: {force_tls} }});",
            app.id, app.key, app.secret
        );
    }
    if config.settings.console {
        out!();
        if config.dev_app {
            let app = &config.apps[0];
            out!(
                "  Debug console        : {http}://{host}:{port}/console#app={}&token={}",
                app.id,
                app.secret
            );
        } else {
            out!("  Debug console        : {http}://{host}:{port}/console (open it with an app id and its secret, or the console token)");
        }
    }
    if config.settings.dev_auth {
        out!();
        out!("  Development auth endpoint (--dev-auth; signs anything, never expose it):");
        out!("    channelAuthorization: {{ endpoint: \"http://{host}:{port}/pusher/auth\" }},");
        out!("    userAuthentication: {{ endpoint: \"http://{host}:{port}/pusher/user-auth\" }}");
        out!("    (optional params: user_id, user_info; encrypted channels use the master key");
        out!("     base64 {})", base64_dev_key());
    }
    if let Some(k) = &config.kubernetes {
        out!("  Apps: the PusherApps of PusherCluster {}/{} (watched live)", k.namespace, k.cluster);
    } else if !config.dev_app {
        out!(
            "  Apps: {}",
            config.apps.iter().map(|a| format!("{} (key {})", a.id, a.key)).collect::<Vec<_>>().join(", ")
        );
    }
    print!("{banner}");
}

fn base64_dev_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(herald_server::dev_auth::DEV_ENCRYPTION_MASTER_KEY)
}

/// `HERALD_LOG` (default `info`). The Redis client's own log is off unless asked for
/// (`redis=debug`): while Redis is away it repeats every reconnect attempt, and Herald reports
/// the outage itself, once (a warning, `herald_redis_errors_total`, `/readyz`).
fn log_filter() -> EnvFilter {
    let asked = std::env::var("HERALD_LOG").ok().filter(|f| !f.trim().is_empty());
    let filter = asked.clone().unwrap_or_else(|| "info".to_owned());
    let quiet = if filter.contains("redis=") { filter } else { format!("{filter},redis=off") };
    EnvFilter::try_new(&quiet).unwrap_or_else(|e| {
        eprintln!("herald-server: HERALD_LOG {asked:?} is not a valid filter ({e}); logging at info");
        EnvFilter::new("info,redis=off")
    })
}
