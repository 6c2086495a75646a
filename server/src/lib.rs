//! herald-server: a Pusher Channels (protocol 7) compatible realtime server.
//!
//! # Layout
//!
//! Modules stand in layers; each imports only from the layers below it (no import cycle).
//!
//! | layer | module | owns |
//! | --- | --- | --- |
//! | wiring | [`server`] | builds the state and the rules, serves both listeners, graceful shutdown |
//! | edges | [`connection`] | one task per socket: read loop, writer, heartbeat, rate limits, subscriptions |
//! | | [`http_api`] | the signed Pusher HTTP API |
//! | | [`console`] | the debug console: page, live state, log stream, trigger form |
//! | | [`dev_auth`] | the development auth endpoint (`--dev-auth`) |
//! | | [`ops`] | the operations port: `/metrics`, `/healthz`, `/readyz` |
//! | | [`http_server`] | the public port's HTTP/1 serve loop (upgrades, per-request head deadline) |
//! | | [`listener`] | per-IP connection limit and request-head deadline below HTTP |
//! | | [`tls`] | TLS on the public port: certificate files, re-read when they change |
//! | handle | [`state`] | [`state::ServerState`]: what the edges share (settings, state, rules) |
//! | rules | [`announce`] | a [`cluster::Transition`] → frame, webhook, subscription count; the only place |
//! | | [`publish`] | the one publish path of server events (HTTP API and console), no HTTP types |
//! | state | [`cluster`] | small traits by concern ([`cluster::FanOut`], [`cluster::ChannelState`], [`cluster::Users`], [`cluster::Cache`], [`cluster::Health`]); [`cluster::LocalCluster`] and [`cluster::RedisCluster`] |
//! | | [`channels`] | this node's registry: local subscribers and presence members per channel |
//! | | [`apps`] | [`apps::App`] and the [`apps::AppStore`] trait: [`apps::StaticApps`], [`apps::kubernetes::KubeApps`] |
//! | | [`webhooks`] | webhook events: debounce, batching, signed delivery with retries, bounded queue |
//! | | [`subscription_count`] | when a subscription count is sent (throttle for large channels) |
//! | leaves | [`config`] | flags > `HERALD_*` env > TOML file, validated once; every error reported |
//! | | [`protocol`] | wire types, close codes, channel-name rules; [`protocol::frames`] builds server frames |
//! | | [`signing`] | HMAC-SHA256 for channel auth, user auth, API requests, webhooks; constant-time compare |
//! | | [`ratelimit`] | one-second windows for per-connection and per-app rate limits |
//! | | [`outbox`] | a socket's bounded outbound queue and close signal |
//! | | [`metrics`] | the Prometheus registry (`herald_*`) |
//! | | [`console_log`] | the console's event log, written by any layer |

pub mod announce;
pub mod apps;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod console;
pub mod console_log;
pub mod dev_auth;
pub mod http_api;
pub mod http_server;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod protocol;
pub mod publish;
pub mod ratelimit;
pub mod server;
pub mod signing;
pub mod state;
pub mod subscription_count;
pub mod tls;
pub mod webhooks;

pub use config::Config;
pub use server::Server;
