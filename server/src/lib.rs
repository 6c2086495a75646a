//! herald-server: a Pusher Channels (protocol 7) compatible realtime server.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | flags > `HERALD_*` env > TOML file, validated once; every error reported |
//! | [`protocol`] | wire types, close codes, channel-name rules; [`protocol::frames`] builds server frames |
//! | [`signing`] | HMAC-SHA256 for channel auth, user auth, API requests, webhooks; constant-time compare |
//! | [`apps`] | [`apps::App`] (credentials, switches, limits) and the [`apps::AppStore`] trait |
//! | [`outbox`] | a socket's bounded outbound queue and close signal |
//! | [`channels`] | this node's registry: local subscribers and presence members per channel |
//! | [`cluster`] | the [`cluster::Cluster`] trait (what crosses nodes) and [`cluster::LocalCluster`] |
//! | [`connection`] | one task per socket: read loop, writer, heartbeat, rate limits, subscriptions |
//! | [`http_api`] | the signed Pusher HTTP API |
//! | [`dev_auth`] | the development auth endpoint (`--dev-auth`) |
//! | [`console`] | the debug console: page, live state, event log stream, trigger form |
//! | [`webhooks`] | webhook events: debounce, batching, signed delivery with retries, bounded queue |
//! | [`subscription_count`] | throttled `pusher_internal:subscription_count` |
//! | [`ratelimit`] | one-second windows for per-connection and per-app rate limits |
//! | [`listener`] | per-IP connection limit and request-head deadline below HTTP |
//! | [`metrics`] | Prometheus metrics and the operations port (`/metrics`, `/healthz`, `/readyz`) |
//! | [`server`] | wiring of the above, listeners and graceful shutdown |

pub mod apps;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod console;
pub mod dev_auth;
pub mod http_api;
pub mod http_server;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod ratelimit;
pub mod server;
pub mod signing;
pub mod subscription_count;
pub mod webhooks;

pub use config::Config;
pub use server::Server;
