//! Configuration: command-line flags, then `HERALD_*` environment variables, then a TOML file
//! (`--config`), then defaults. Everything is parsed and validated once at start; every bad
//! setting is collected and reported together, and unknown keys in the file are errors.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use herald_crds::contract::ServerFile;

use crate::apps::App;

mod app;
mod fields;
mod file;
mod redis;

use redis::cluster_mode;
pub use redis::{redacted_url, RedisMode, RedisSettings, RedisTls};

use crate::protocol::frames::ErrorDialect;
use app::{app_from_cli, app_from_table};
use fields::Fields;

/// The development app of the embedded default, used when no app is configured.
pub const DEV_APP_ID: &str = "1";
/// Key of the development app.
pub const DEV_APP_KEY: &str = "herald-dev-key";
/// Secret of the development app. Well known on purpose: it is for development only.
pub const DEV_APP_SECRET: &str = "herald-dev-secret";

/// Command line of `herald-server`. Numbers are taken as text and parsed here, so that every
/// bad value is reported at once rather than the first one only.
#[derive(Debug, Default, Parser)]
#[command(name = "herald-server", version, about = "Pusher Channels protocol 7 compatible realtime server")]
pub struct Cli {
    /// TOML file with server settings and any number of `[[apps]]`.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Port of the WebSocket and HTTP API listener [default: 6001].
    #[arg(long, env = "HERALD_PORT")]
    pub port: Option<String>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, env = "HERALD_BIND")]
    pub bind: Option<String>,
    /// Port of /metrics, /healthz and /readyz [default: 9601].
    #[arg(long, env = "HERALD_METRICS_PORT")]
    pub metrics_port: Option<String>,
    /// Seconds of client silence before the server pings; also sent to clients [default: 120].
    #[arg(long, env = "HERALD_ACTIVITY_TIMEOUT")]
    pub activity_timeout: Option<String>,
    /// Seconds to wait for the answer to a ping before closing with 4201 [default: 30].
    #[arg(long, env = "HERALD_PONG_TIMEOUT")]
    pub pong_timeout: Option<String>,
    /// How subscription failures are reported: `echo` (pusher:subscription_error, as soketi
    /// and Laravel Echo) or `pusher` (pusher:error, as hosted Pusher) [default: echo].
    #[arg(long, env = "HERALD_ERROR_DIALECT")]
    pub error_dialect: Option<String>,
    /// Serve `POST /pusher/auth` and `/pusher/user-auth` that sign anything for the first app,
    /// for frontend development without a backend. Refused unless the server runs the embedded
    /// default or `--not-production` is given.
    #[arg(long, env = "HERALD_DEV_AUTH")]
    pub dev_auth: bool,
    /// Declares this server is not a production one (allows `--dev-auth` with configured apps).
    #[arg(long, env = "HERALD_NOT_PRODUCTION")]
    pub not_production: bool,
    /// Serve the debug console at /console [default: on with the embedded default, else off].
    #[arg(long, env = "HERALD_CONSOLE")]
    pub console: bool,
    /// Open connections allowed from one IP address; 0 is unlimited [default: 0]. Leave it off
    /// behind a proxy (every client has the proxy's address) and limit there.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<String>,
    /// PEM certificate (chain) to serve `wss://` and `https://` on the public port; re-read when
    /// it changes. Needs --tls-key-file.
    #[arg(long, env = "HERALD_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "HERALD_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Token that opens the console for every app; without it, each app's secret opens its own.
    #[arg(long, env = "HERALD_CONSOLE_TOKEN", hide_env_values = true)]
    pub console_token: Option<String>,
    /// Seconds over which shutdown's 4200 closes are spread, so clients do not all reconnect to
    /// the other nodes at once [default: 5 with --cluster redis (at most half of
    /// shutdown_grace), 0 alone].
    #[arg(long, env = "HERALD_DRAIN_SPREAD")]
    pub drain_spread: Option<String>,
    /// Where apps come from: `static` (flags and config file, the default) or `kubernetes`
    /// (the PusherApps of `--cluster-name`, watched live).
    #[arg(long, env = "HERALD_APPS")]
    pub apps: Option<String>,
    /// PusherCluster whose apps to serve with `--apps kubernetes`.
    #[arg(long, env = "HERALD_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Namespace of the PusherCluster [default: $POD_NAMESPACE, else the pod's service account
    /// namespace].
    #[arg(long, env = "HERALD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Cluster backend: `local` (one process, the default) or `redis`.
    #[arg(long, env = "HERALD_CLUSTER")]
    pub cluster: Option<String>,
    /// Redis URL for `--cluster redis`, e.g. `redis://127.0.0.1:6379/0`.
    #[arg(long, env = "HERALD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's name in the cluster [default: $POD_NAME, else $HOSTNAME, else random].
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds a node's lease lives without renewal [default: 10].
    #[arg(long, env = "HERALD_LEASE_TTL")]
    pub lease_ttl: Option<String>,
    /// Prefix of every Redis key and channel [default: herald].
    #[arg(long, env = "HERALD_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// How Redis runs: `standalone` (one URL) or `sentinel` (--redis-url lists the sentinels,
    /// comma-separated) [default: standalone].
    #[arg(long, env = "HERALD_REDIS_MODE")]
    pub redis_mode: Option<String>,
    /// The master name the sentinels monitor, with --redis-mode sentinel.
    #[arg(long, env = "HERALD_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,
    /// PEM file of a private CA for a `rediss://` Redis [default: the system's roots].
    #[arg(long, env = "HERALD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate for Redis with mutual TLS (needs --redis-key-file).
    #[arg(long, env = "HERALD_REDIS_CERT_FILE")]
    pub redis_cert_file: Option<PathBuf>,
    /// PEM private key of --redis-cert-file.
    #[arg(long, env = "HERALD_REDIS_KEY_FILE")]
    pub redis_key_file: Option<PathBuf>,
    /// Id of a single app defined by flags.
    #[arg(long, env = "HERALD_APP_ID")]
    pub app_id: Option<String>,
    /// Key of the flag-defined app.
    #[arg(long, env = "HERALD_APP_KEY")]
    pub app_key: Option<String>,
    /// Secret of the flag-defined app.
    #[arg(long, env = "HERALD_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    /// Let clients of the flag-defined app send `client-` events.
    #[arg(long, env = "HERALD_APP_CLIENT_EVENTS")]
    pub app_client_events: bool,
    /// Connection quota of the flag-defined app [default: unlimited].
    #[arg(long, env = "HERALD_APP_MAX_CONNECTIONS")]
    pub app_max_connections: Option<String>,
    /// Presence member limit of the flag-defined app [default: 100].
    #[arg(long, env = "HERALD_APP_MAX_PRESENCE_MEMBERS")]
    pub app_max_presence_members: Option<String>,
    /// Close sockets of the flag-defined app that neither sign in nor join a private or
    /// presence channel within 30 s (4009).
    #[arg(long, env = "HERALD_APP_USER_AUTHENTICATION")]
    pub app_user_authentication: bool,
    /// Seconds an unauthenticated socket may stay with --app-user-authentication [default: 30].
    #[arg(long, env = "HERALD_APP_USER_AUTHENTICATION_TIMEOUT")]
    pub app_user_authentication_timeout: Option<String>,
    /// Send watchlist online / offline events to signed-in users of the flag-defined app.
    #[arg(long, env = "HERALD_APP_WATCHLIST_EVENTS")]
    pub app_watchlist_events: bool,
    /// Send `pusher:subscription_count` events on the flag-defined app's channels.
    #[arg(long, env = "HERALD_APP_SUBSCRIPTION_COUNT")]
    pub app_subscription_count: bool,
    /// Webhook URL of the flag-defined app (repeat the flag, or separate with commas).
    #[arg(long, env = "HERALD_APP_WEBHOOK_URL", value_delimiter = ',')]
    pub app_webhook_url: Vec<String>,
    /// Batch the flag-defined app's webhook events within this many milliseconds [default: 0].
    #[arg(long, env = "HERALD_APP_WEBHOOK_BATCH_MS")]
    pub app_webhook_batch_ms: Option<String>,
    /// Browser origins allowed to connect to the flag-defined app (comma-separated).
    #[arg(long, env = "HERALD_APP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub app_allowed_origins: Vec<String>,
    /// HTTP API events per second of the flag-defined app (429 past it) [default: unlimited].
    #[arg(long, env = "HERALD_APP_MAX_BACKEND_EVENTS_PER_SECOND")]
    pub app_max_backend_events_per_second: Option<String>,
    /// HTTP API read requests per second of the flag-defined app [default: unlimited].
    #[arg(long, env = "HERALD_APP_MAX_READ_REQUESTS_PER_SECOND")]
    pub app_max_read_requests_per_second: Option<String>,
    /// Client events per second per connection of the flag-defined app [default: 10].
    #[arg(long, env = "HERALD_APP_CLIENT_EVENTS_PER_SECOND")]
    pub app_client_events_per_second: Option<String>,
    /// Seconds a cache channel keeps its last event [default: 1800].
    #[arg(long, env = "HERALD_APP_CACHE_TTL")]
    pub app_cache_ttl: Option<String>,
}

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub bind: IpAddr,
    /// WebSocket + HTTP API port (0 picks a free one).
    pub port: u16,
    /// Operations port (0 picks a free one).
    pub metrics_port: u16,
    /// Client silence before the server pings; sent in `connection_established`.
    pub activity_timeout: Duration,
    /// Wait for the pong before closing with 4201.
    pub pong_timeout: Duration,
    /// Subscription error dialect.
    pub error_dialect: ErrorDialect,
    /// Frames queued for one socket before it counts as a slow consumer (closed with 4100).
    pub max_queued_messages: usize,
    /// Webhook events waiting for the sender before new ones are dropped
    /// (`herald_webhooks_dropped_total{reason="queue_full"}`).
    pub webhook_queue_size: usize,
    /// Webhook requests in flight or waiting to retry before new ones are dropped.
    pub max_pending_webhooks: usize,
    /// Largest WebSocket message a client may send; larger ones close the socket with 1009.
    pub max_message_size: usize,
    /// Largest HTTP API request body; larger ones get 413.
    pub max_request_size: usize,
    /// Time given to sockets to close on shutdown before the process exits anyway.
    pub shutdown_grace: Duration,
    /// Each socket closes with 4200 at a random moment within this time after shutdown begins.
    pub drain_spread: Duration,
    /// Which cluster backend.
    pub cluster: ClusterMode,
    /// Serve the development auth endpoint.
    pub dev_auth: bool,
    /// Serve the debug console (`/console`).
    pub console: bool,
    /// Open TCP connections allowed from one IP address; `None` is unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// Time a new TCP connection gets to send its first complete request head; on a keep-alive
    /// connection, also the time each later request head gets (and so its idle limit).
    pub handshake_timeout: Duration,
    /// Token that opens the console for every app (besides each app's own secret).
    pub console_token: Option<String>,
    /// TLS on the public port (`wss://`, `https://`); `None` serves plain `ws://`.
    pub tls: Option<TlsFiles>,
}

/// The public port's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The cluster backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClusterMode {
    /// One process, in memory.
    #[default]
    Local,
    /// Any number of processes sharing one Redis.
    Redis(RedisSettings),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 6001,
            metrics_port: 9601,
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            error_dialect: ErrorDialect::Echo,
            max_queued_messages: 1000,
            webhook_queue_size: 10_000,
            max_pending_webhooks: 10_000,
            max_message_size: 100 * 1024,
            max_request_size: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            drain_spread: Duration::ZERO,
            cluster: ClusterMode::Local,
            dev_auth: false,
            console: false,
            console_token: None,
            max_connections_per_ip: None,
            handshake_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server-wide settings.
    pub settings: Settings,
    /// Every app.
    pub apps: Vec<App>,
    /// Whether `apps` is the development app of the embedded default.
    pub dev_app: bool,
    /// With `--apps kubernetes`: whose PusherApps to serve (and `apps` is empty).
    pub kubernetes: Option<KubernetesApps>,
}

/// The PusherCluster whose apps a server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesApps {
    /// PusherCluster name.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
}

/// The namespace of `--apps kubernetes`: flag, `$POD_NAMESPACE`, else the service account's.
fn kubernetes_namespace(cli: &Cli) -> Option<String> {
    cli.namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

impl Config {
    /// The embedded default with the development app, listening on free ports of 127.0.0.1.
    /// Tests start from this.
    pub fn for_tests() -> Self {
        let mut app = App::new(DEV_APP_ID, DEV_APP_KEY, DEV_APP_SECRET);
        app.client_events = true;
        Config {
            settings: Settings {
                bind: IpAddr::from([127, 0, 0, 1]),
                port: 0,
                metrics_port: 0,
                shutdown_grace: Duration::from_secs(2),
                ..Settings::default()
            },
            apps: vec![app],
            dev_app: true,
            kubernetes: None,
        }
    }

    /// Builds the configuration from the command line (with its environment fallbacks) and
    /// the config file it names. Returns every problem found.
    pub fn load(cli: &Cli) -> Result<Config, Vec<String>> {
        match &cli.config {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Self::load_with_file(cli, Some((&path.display().to_string(), &text))),
                Err(e) => Err(vec![format!("cannot read config file {}: {e}", path.display())]),
            },
            None => Self::load_with_file(cli, None),
        }
    }

    /// Like [`Config::load`], with the config file's name and text given.
    pub fn load_with_file(cli: &Cli, file: Option<(&str, &str)>) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let mut table = match file {
            Some((name, text)) => match text.parse::<toml::Table>() {
                Ok(table) => table,
                Err(e) => {
                    errors.push(format!("{name}: {}", e.message()));
                    toml::Table::new()
                }
            },
            None => toml::Table::new(),
        };
        let file_apps = table.remove("apps");
        let mut file = file::read(&mut errors, table);
        let d = Settings::default();
        let mut s = Settings {
            bind: setting(&mut errors, "bind", cli.bind.as_deref(), file.bind, d.bind),
            port: setting(&mut errors, "port", cli.port.as_deref(), file.port, d.port),
            metrics_port: setting(
                &mut errors,
                "metrics_port",
                cli.metrics_port.as_deref(),
                file.metrics_port,
                d.metrics_port,
            ),
            activity_timeout: Duration::from_secs(setting(
                &mut errors,
                "activity_timeout",
                cli.activity_timeout.as_deref(),
                file.activity_timeout,
                d.activity_timeout.as_secs(),
            )),
            pong_timeout: Duration::from_secs(setting(
                &mut errors,
                "pong_timeout",
                cli.pong_timeout.as_deref(),
                file.pong_timeout,
                d.pong_timeout.as_secs(),
            )),
            error_dialect: d.error_dialect,
            max_queued_messages: file.max_queued_messages.unwrap_or(d.max_queued_messages),
            webhook_queue_size: file.webhook_queue_size.unwrap_or(d.webhook_queue_size),
            max_pending_webhooks: file.max_pending_webhooks.unwrap_or(d.max_pending_webhooks),
            max_message_size: file.max_message_size.unwrap_or(d.max_message_size),
            max_request_size: file.max_request_size.unwrap_or(d.max_request_size),
            shutdown_grace: Duration::from_secs(file.shutdown_grace.unwrap_or(d.shutdown_grace.as_secs())),
            drain_spread: Duration::ZERO,
            dev_auth: false,
            cluster: ClusterMode::Local,
            console: false,
            console_token: cli.console_token.clone().filter(|t| !t.is_empty()),
            max_connections_per_ip: Some(setting(
                &mut errors,
                "max_connections_per_ip",
                cli.max_connections_per_ip.as_deref(),
                file.max_connections_per_ip,
                0usize,
            ))
            .filter(|n| *n > 0),
            handshake_timeout: Duration::from_secs(
                file.handshake_timeout.unwrap_or(d.handshake_timeout.as_secs()),
            ),
            tls: None,
        };
        for (name, value) in [
            ("activity_timeout", s.activity_timeout),
            ("pong_timeout", s.pong_timeout),
            ("shutdown_grace", s.shutdown_grace),
            ("handshake_timeout", s.handshake_timeout),
        ] {
            check_timer(&mut errors, name, value);
        }
        if s.handshake_timeout.is_zero() {
            errors.push("handshake_timeout: must be at least 1 second".into());
        }
        let file_console = file.console;
        let cert = cli.tls_cert_file.clone().or(file.tls_cert_file.take().map(PathBuf::from));
        let key = cli.tls_key_file.clone().or(file.tls_key_file.take().map(PathBuf::from));
        s.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                errors.push("--tls-cert-file and --tls-key-file go together".into());
                None
            }
        };
        s.cluster = cluster_mode(&mut errors, cli, &mut file);
        s.drain_spread = drain_spread(&mut errors, cli, &file, &s);
        let dialect: Option<String> = cli.error_dialect.clone().or(file.error_dialect.take());
        match dialect.as_deref() {
            None | Some("echo") => {}
            Some("pusher") => s.error_dialect = ErrorDialect::Pusher,
            Some(other) => errors.push(format!("error_dialect: expected 'echo' or 'pusher', got {other:?}")),
        }
        if s.activity_timeout.is_zero() {
            errors.push("activity_timeout: must be at least 1 second".into());
        }
        if s.pong_timeout.is_zero() {
            errors.push("pong_timeout: must be at least 1 second".into());
        }
        if s.max_queued_messages == 0 {
            errors.push("max_queued_messages: must be at least 1".into());
        }
        if s.webhook_queue_size == 0 {
            errors.push("webhook_queue_size: must be at least 1".into());
        }
        if s.max_pending_webhooks == 0 {
            errors.push("max_pending_webhooks: must be at least 1".into());
        }
        if s.port != 0 && s.port == s.metrics_port {
            errors.push(format!("port and metrics_port are both {}; they must differ", s.port));
        }

        let mut apps = Vec::new();
        let file_apps = match file_apps {
            None => Vec::new(),
            Some(toml::Value::Array(apps)) => apps,
            Some(other) => {
                errors.push(format!("apps: invalid value {other}: expected an array of tables"));
                Vec::new()
            }
        };
        for (i, value) in file_apps.into_iter().enumerate() {
            let path = format!("apps[{i}]");
            match value {
                toml::Value::Table(table) => {
                    if let Some(app) = app_from_table(&mut errors, Fields::new(table, &path)) {
                        apps.push(app);
                    }
                }
                _ => errors.push(format!("{path}: expected a table")),
            }
        }
        if let Some(app) = app_from_cli(&mut errors, cli) {
            apps.push(app);
        }
        for (i, app) in apps.iter().enumerate() {
            if apps[..i].iter().any(|a| a.id == app.id) {
                errors.push(format!("app id {:?} is defined more than once", app.id));
            }
            if apps[..i].iter().any(|a| a.key == app.key) {
                errors.push(format!("app key {:?} is used by more than one app", app.key));
            }
        }
        let kubernetes = match cli.apps.as_deref() {
            None | Some("static") => None,
            Some("kubernetes") => {
                if !apps.is_empty() {
                    errors.push(
                        "--apps kubernetes serves PusherApps only: remove [[apps]] and --app-* flags".into(),
                    );
                }
                let cluster = cli.cluster_name.clone().filter(|c| !c.is_empty());
                let namespace = kubernetes_namespace(cli);
                if cluster.is_none() {
                    errors.push("--apps kubernetes needs --cluster-name (HERALD_CLUSTER_NAME)".into());
                }
                if namespace.is_none() {
                    errors.push(
                        "--apps kubernetes needs --namespace (HERALD_NAMESPACE or POD_NAMESPACE)".into(),
                    );
                }
                cluster.zip(namespace).map(|(cluster, namespace)| KubernetesApps { cluster, namespace })
            }
            Some(other) => {
                errors.push(format!("--apps: expected 'static' or 'kubernetes', got {other:?}"));
                None
            }
        };
        let dev_app = apps.is_empty() && cli.apps.as_deref() != Some("kubernetes");
        s.dev_auth = cli.dev_auth;
        // The console shows traffic and triggers events: on by default only for the embedded
        // development default.
        s.console = cli.console || file_console.unwrap_or(dev_app);
        if cli.dev_auth && !dev_app && !cli.not_production {
            errors.push(
                "--dev-auth signs anything for anyone: it is refused with configured apps unless \
                 --not-production says this server is not a production one"
                    .into(),
            );
        }
        if dev_app {
            let mut app = App::new(DEV_APP_ID, DEV_APP_KEY, DEV_APP_SECRET);
            app.client_events = true;
            apps.push(app);
        }
        if errors.is_empty() {
            Ok(Config { settings: s, apps, dev_app, kubernetes })
        } else {
            Err(errors)
        }
    }
}

/// Default drain spread with other nodes to take the clients.
const DRAIN_SPREAD: Duration = Duration::from_secs(5);

/// The longest any duration setting may be: one year. Longer ones would overflow the clock
/// arithmetic of timers (a deadline of `now + u64::MAX seconds` panics), so they are refused.
pub const MAX_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The drain spread: given, or 5 s (at most half the grace) when other nodes take the clients.
fn drain_spread(errors: &mut Vec<String>, cli: &Cli, file: &ServerFile, s: &Settings) -> Duration {
    let default = match s.cluster {
        ClusterMode::Redis(_) => DRAIN_SPREAD.min(s.shutdown_grace / 2),
        ClusterMode::Local => Duration::ZERO,
    };
    let spread =
        setting(errors, "drain_spread", cli.drain_spread.as_deref(), file.drain_spread, default.as_secs());
    let spread = Duration::from_secs(spread);
    if spread > s.shutdown_grace {
        errors.push(format!(
            "drain_spread: must be at most shutdown_grace ({} seconds)",
            s.shutdown_grace.as_secs()
        ));
    }
    spread
}

/// Records an error when a duration setting is over [`MAX_TIMER`].
fn check_timer(errors: &mut Vec<String>, name: &str, value: Duration) {
    if value > MAX_TIMER {
        errors.push(format!("{name}: must be at most {} seconds (one year)", MAX_TIMER.as_secs()));
    }
}

/// Flag (or environment) value if given, else file value, else default.
fn setting<T: FromStr>(
    errors: &mut Vec<String>,
    name: &str,
    flag: Option<&str>,
    file: Option<T>,
    default: T,
) -> T
where
    T::Err: std::fmt::Display,
{
    match flag {
        Some(raw) => match raw.trim().parse() {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("--{} ({name}): {raw:?}: {e}", name.replace('_', "-")));
                default
            }
        },
        None => file.unwrap_or(default),
    }
}

#[cfg(test)]
mod tests;
