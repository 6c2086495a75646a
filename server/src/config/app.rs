//! Apps from the command line (one) and from `[[apps]]` tables of the file (any number), with
//! their validation.

use std::time::Duration;

use super::fields::Fields;
use super::{setting, Cli};
use crate::apps::{App, Limits, QuotaCode, WebhookKind, WebhookTarget};

pub(super) fn app_from_cli(errors: &mut Vec<String>, cli: &Cli) -> Option<App> {
    let given = [("--app-id", &cli.app_id), ("--app-key", &cli.app_key), ("--app-secret", &cli.app_secret)];
    if given.iter().all(|(_, v)| v.is_none()) {
        let app_flags = [
            ("--app-client-events", cli.app_client_events),
            ("--app-user-authentication", cli.app_user_authentication),
            ("--app-watchlist-events", cli.app_watchlist_events),
            ("--app-subscription-count", cli.app_subscription_count),
            ("--app-webhook-url", !cli.app_webhook_url.is_empty()),
            ("--app-allowed-origins", !cli.app_allowed_origins.is_empty()),
            ("--app-max-connections", cli.app_max_connections.is_some()),
            ("--app-max-presence-members", cli.app_max_presence_members.is_some()),
            ("--app-max-backend-events-per-second", cli.app_max_backend_events_per_second.is_some()),
            ("--app-max-read-requests-per-second", cli.app_max_read_requests_per_second.is_some()),
            ("--app-client-events-per-second", cli.app_client_events_per_second.is_some()),
            ("--app-webhook-batch-ms", cli.app_webhook_batch_ms.is_some()),
            ("--app-cache-ttl", cli.app_cache_ttl.is_some()),
            ("--app-user-authentication-timeout", cli.app_user_authentication_timeout.is_some()),
        ];
        for (flag, set) in app_flags {
            if set {
                errors.push(format!("{flag} needs --app-id, --app-key and --app-secret"));
            }
        }
        return None;
    }
    let missing: Vec<&str> = given.iter().filter(|(_, v)| v.is_none()).map(|(f, _)| *f).collect();
    if !missing.is_empty() {
        errors.push(format!("an app defined by flags also needs {}", missing.join(", ")));
        return None;
    }
    let mut app = App::new(
        cli.app_id.clone().unwrap_or_default(),
        cli.app_key.clone().unwrap_or_default(),
        cli.app_secret.clone().unwrap_or_default(),
    );
    app.client_events = cli.app_client_events;
    app.user_authentication = cli.app_user_authentication;
    app.watchlist_events = cli.app_watchlist_events;
    app.subscription_count = cli.app_subscription_count;
    app.allowed_origins = cli.app_allowed_origins.clone();
    app.webhooks = cli
        .app_webhook_url
        .iter()
        .map(|url| WebhookTarget {
            url: url.clone(),
            event_types: Vec::new(),
            channel_prefix: None,
            channel_suffix: None,
        })
        .collect();
    let mut number =
        |name: &str, raw: &Option<String>| raw.as_deref().map(|r| setting(errors, name, Some(r), None, 0u64));
    let max_connections = number("app_max_connections", &cli.app_max_connections);
    let max_members = number("app_max_presence_members", &cli.app_max_presence_members);
    let backend = number("app_max_backend_events_per_second", &cli.app_max_backend_events_per_second);
    let reads = number("app_max_read_requests_per_second", &cli.app_max_read_requests_per_second);
    let client_rate = number("app_client_events_per_second", &cli.app_client_events_per_second);
    let batch_ms = number("app_webhook_batch_ms", &cli.app_webhook_batch_ms);
    let cache_ttl = number("app_cache_ttl", &cli.app_cache_ttl);
    let auth_timeout = number("app_user_authentication_timeout", &cli.app_user_authentication_timeout);
    let l = &mut app.limits;
    l.max_connections = max_connections.or(l.max_connections);
    l.max_presence_members = max_members.map_or(l.max_presence_members, |v| v as usize);
    l.max_backend_events_per_second = backend.map(saturate_u32);
    l.max_read_requests_per_second = reads.map(saturate_u32);
    l.client_events_per_second = client_rate.map_or(l.client_events_per_second, saturate_u32);
    if let Some(ms) = batch_ms {
        app.webhook_batch_window = Duration::from_millis(ms);
    }
    if let Some(secs) = cache_ttl {
        app.cache_ttl = Duration::from_secs(secs);
    }
    if let Some(secs) = auth_timeout {
        app.user_authentication_timeout = Duration::from_secs(secs);
    }
    validate_app(errors, "flags", &app);
    Some(app)
}

fn saturate_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn webhook_from_table(mut t: Fields) -> (Option<WebhookTarget>, Vec<String>) {
    let url: Option<String> = t.take("url");
    let event_types: Vec<WebhookKind> = t.take("event_types").unwrap_or_default();
    let channel_prefix = t.take("channel_prefix");
    let channel_suffix = t.take("channel_suffix");
    if url.is_none() {
        let msg = format!("{}.url: required", t.path);
        t.errors.push(msg);
    }
    let errors = t.finish();
    let target = url.map(|url| WebhookTarget { url, event_types, channel_prefix, channel_suffix });
    (target, errors)
}

pub(super) fn app_from_table(errors: &mut Vec<String>, mut t: Fields) -> Option<App> {
    let before = errors.len();
    let id: Option<String> = t.take("id");
    let key: Option<String> = t.take("key");
    let secret: Option<String> = t.take("secret");
    for (name, v) in [("id", &id), ("key", &key), ("secret", &secret)] {
        if v.is_none() {
            let msg = format!("{}.{name}: required", t.path);
            t.errors.push(msg);
        }
    }
    let mut app = App::new(id.unwrap_or_default(), key.unwrap_or_default(), secret.unwrap_or_default());
    let d = App::new("", "", "");
    app.enabled = t.take("enabled").unwrap_or(true);
    app.client_events = t.take("client_events").unwrap_or(false);
    app.user_authentication = t.take("user_authentication").unwrap_or(false);
    app.user_authentication_timeout =
        t.take("user_authentication_timeout").map_or(d.user_authentication_timeout, Duration::from_secs);
    app.watchlist_events = t.take("watchlist_events").unwrap_or(false);
    app.subscription_count = t.take("subscription_count").unwrap_or(false);
    app.cache_ttl = t.take("cache_ttl").map_or(d.cache_ttl, Duration::from_secs);
    app.allowed_origins = t.take("allowed_origins").unwrap_or_default();
    app.webhook_batch_window =
        t.take("webhook_batch_ms").map_or(d.webhook_batch_window, Duration::from_millis);
    let hooks: Vec<toml::Value> = t.take("webhooks").unwrap_or_default();
    for (i, hook) in hooks.into_iter().enumerate() {
        let path = format!("{}.webhooks[{i}]", t.path);
        match hook {
            toml::Value::Table(table) => {
                let (target, errs) = webhook_from_table(Fields::new(table, &path));
                t.errors.extend(errs);
                app.webhooks.extend(target);
            }
            _ => t.errors.push(format!("{path}: expected a table")),
        }
    }
    let d = Limits::default();
    let l = &mut app.limits;
    l.max_connections = t.take("max_connections");
    l.connection_quota_code = match t.take::<u16>("connection_quota_code") {
        None | Some(4004) => QuotaCode::Quota4004,
        Some(4100) => QuotaCode::Capacity4100,
        Some(other) => {
            t.errors.push(format!("{}.connection_quota_code: expected 4004 or 4100, got {other}", t.path));
            QuotaCode::Quota4004
        }
    };
    l.max_presence_members = t.take("max_presence_members").unwrap_or(d.max_presence_members);
    l.max_presence_member_size = t.take("max_presence_member_size").unwrap_or(d.max_presence_member_size);
    l.max_user_id_length = t.take("max_user_id_length").unwrap_or(d.max_user_id_length);
    l.max_event_data_size = t.take("max_event_data_size").unwrap_or(d.max_event_data_size);
    l.max_event_name_length = t.take("max_event_name_length").unwrap_or(d.max_event_name_length);
    l.max_channel_name_length = t.take("max_channel_name_length").unwrap_or(d.max_channel_name_length);
    l.max_channels_per_event = t.take("max_channels_per_event").unwrap_or(d.max_channels_per_event);
    l.max_batch_size = t.take("max_batch_size").unwrap_or(d.max_batch_size);
    l.client_events_per_second = t.take("client_events_per_second").unwrap_or(d.client_events_per_second);
    l.max_subscriptions_per_connection =
        t.take("max_subscriptions_per_connection").unwrap_or(d.max_subscriptions_per_connection);
    l.subscription_changes_per_second =
        t.take("subscription_changes_per_second").unwrap_or(d.subscription_changes_per_second);
    l.max_watchlist_size = t.take("max_watchlist_size").unwrap_or(d.max_watchlist_size);
    l.max_backend_events_per_second = t.take("max_backend_events_per_second");
    l.max_read_requests_per_second = t.take("max_read_requests_per_second");
    let path = t.path.clone();
    errors.extend(t.finish());
    validate_app(errors, &path, &app);
    (errors.len() == before).then_some(app)
}

fn validate_app(errors: &mut Vec<String>, path: &str, app: &App) {
    for (name, value) in [
        ("user_authentication_timeout", app.user_authentication_timeout),
        ("cache_ttl", app.cache_ttl),
        ("webhook_batch_ms", app.webhook_batch_window),
    ] {
        super::check_timer(errors, &format!("{path}.{name}"), value);
    }
    let ok_chars = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if app.id.is_empty() || !ok_chars(&app.id) {
        errors.push(format!("{path}: app id {:?} must be non-empty and use only A-Z a-z 0-9 - _ .", app.id));
    }
    if app.key.is_empty() || !ok_chars(&app.key) {
        errors
            .push(format!("{path}: app key {:?} must be non-empty and use only A-Z a-z 0-9 - _ .", app.key));
    }
    for hook in &app.webhooks {
        if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
            errors.push(format!("{path}: webhook url {:?} must start with http:// or https://", hook.url));
        }
    }
    if app.user_authentication_timeout.is_zero() {
        errors.push(format!("{path}.user_authentication_timeout: must be at least 1 second"));
    }
    if app.secret.is_empty() {
        errors.push(format!("{path}: app secret must not be empty"));
    }
    let l = &app.limits;
    for (name, value) in [
        ("max_presence_members", l.max_presence_members),
        ("max_presence_member_size", l.max_presence_member_size),
        ("max_user_id_length", l.max_user_id_length),
        ("max_event_data_size", l.max_event_data_size),
        ("max_event_name_length", l.max_event_name_length),
        ("max_channel_name_length", l.max_channel_name_length),
        ("max_channels_per_event", l.max_channels_per_event),
        ("max_batch_size", l.max_batch_size),
        ("max_subscriptions_per_connection", l.max_subscriptions_per_connection),
    ] {
        if value == 0 {
            errors.push(format!("{path}.{name}: must be at least 1"));
        }
    }
}
