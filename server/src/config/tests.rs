//! Unit tests of `config`.

use super::*;

fn cli(args: &[&str]) -> Cli {
    let mut all = vec!["herald-server"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap()
}

#[test]
fn a_flag_overrides_the_same_key_in_the_file_without_calling_it_unknown() {
    let f = file("cluster = \"local\"\nerror_dialect = \"echo\"\nredis_prefix = \"x\"\n");
    let path = f.0.display().to_string();
    let c = Config::load(&cli(&[
        "--config",
        &path,
        "--cluster",
        "redis",
        "--redis-url",
        "redis://127.0.0.1:1/0",
        "--error-dialect",
        "pusher",
        "--redis-prefix",
        "y",
    ]))
    .expect("flags override file keys");
    assert_eq!(c.settings.error_dialect, ErrorDialect::Pusher);
    match c.settings.cluster {
        ClusterMode::Redis(r) => assert_eq!(r.prefix, "y"),
        ClusterMode::Local => panic!("--cluster redis wins over the file"),
    }
}

#[test]
fn the_console_is_on_for_the_embedded_default_and_opt_in_otherwise() {
    assert!(Config::load(&cli(&[])).unwrap().settings.console);
    let app = ["--app-id", "1", "--app-key", "k", "--app-secret", "s"];
    assert!(!Config::load(&cli(&app)).unwrap().settings.console, "off in production by default");
    let forced = [&app[..], &["--console", "--console-token", "t0k"]].concat();
    let c = Config::load(&cli(&forced)).unwrap();
    assert!(c.settings.console);
    assert_eq!(c.settings.console_token.as_deref(), Some("t0k"));
}

#[test]
fn apps_from_kubernetes_need_a_cluster_and_exclude_static_apps() {
    let c =
        Config::load(&cli(&["--apps", "kubernetes", "--cluster-name", "rt", "--namespace", "chat"])).unwrap();
    assert_eq!(c.kubernetes, Some(KubernetesApps { cluster: "rt".into(), namespace: "chat".into() }));
    assert!(c.apps.is_empty() && !c.dev_app, "no development app next to Kubernetes apps");

    let errors = Config::load(&cli(&["--apps", "kubernetes", "--namespace", "chat"])).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("--cluster-name")), "{errors:?}");
    let errors = Config::load(&cli(&[
        "--apps",
        "kubernetes",
        "--cluster-name",
        "rt",
        "--namespace",
        "chat",
        "--app-id",
        "1",
        "--app-key",
        "k",
        "--app-secret",
        "s",
    ]))
    .unwrap_err();
    assert!(errors.iter().any(|e| e.contains("PusherApps only")), "{errors:?}");
    let errors = Config::load(&cli(&["--apps", "etcd"])).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("'static' or 'kubernetes'")), "{errors:?}");
}

fn file(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(text)
}

mod tempfile_path {
    /// A file in the system temp dir, removed on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn with(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("herald-config-{}.toml", rand::random::<u64>()));
            std::fs::write(&path, text).unwrap();
            TempPath(path)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn no_settings_gives_the_embedded_default_with_the_dev_app() {
    let c = Config::load(&Cli::default()).unwrap();
    assert!(c.dev_app);
    assert_eq!(c.apps.len(), 1);
    assert_eq!(c.apps[0].key, DEV_APP_KEY);
    assert_eq!(c.settings.port, 6001);
    assert_eq!(c.settings.metrics_port, 9601);
}

#[test]
fn flags_win_over_the_file() {
    let f = file("port = 7000\nmetrics_port = 7001\n[[apps]]\nid = \"5\"\nkey = \"k5\"\nsecret = \"s5\"\nclient_events = true\nmax_presence_members = 20000\n");
    let c = Config::load(&cli(&["--config", f.0.to_str().unwrap(), "--port", "7100"])).unwrap();
    assert_eq!(c.settings.port, 7100);
    assert_eq!(c.settings.metrics_port, 7001);
    assert!(!c.dev_app);
    assert!(c.apps[0].client_events);
    assert_eq!(c.apps[0].limits.max_presence_members, 20000);
}

#[test]
fn every_bad_setting_is_reported_at_once() {
    let f = file("colour = \"red\"\nactivity_timeout = \"soon\"\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsurprise = 1\n[[apps]]\nid = \"1\"\nkey = \"k2\"\nsecret = \"s\"\nconnection_quota_code = 4005\n");
    let errors = Config::load(&cli(&["--config", f.0.to_str().unwrap(), "--port", "abc", "--app-id", "9"]))
        .unwrap_err();
    let all = errors.join("\n");
    for expected in [
        "colour: unknown key",
        "activity_timeout: invalid value",
        "apps[0].secret: required",
        "apps[0].surprise: unknown key",
        "apps[1].connection_quota_code: expected 4004 or 4100",
        "--port (port): \"abc\"",
        "also needs --app-key, --app-secret",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn the_webhook_limits_come_from_the_file_and_zero_is_refused() {
    let f = file("webhook_queue_size = 5\nmax_pending_webhooks = 7\n");
    let c = Config::load(&cli(&["--config", f.0.to_str().unwrap()])).unwrap();
    assert_eq!((c.settings.webhook_queue_size, c.settings.max_pending_webhooks), (5, 7));
    let d = Config::load(&Cli::default()).unwrap();
    assert_eq!((d.settings.webhook_queue_size, d.settings.max_pending_webhooks), (10_000, 10_000));
    let f = file("webhook_queue_size = 0\nmax_pending_webhooks = 0\n");
    let all = Config::load(&cli(&["--config", f.0.to_str().unwrap()])).unwrap_err().join("\n");
    assert!(all.contains("webhook_queue_size: must be at least 1"), "{all}");
    assert!(all.contains("max_pending_webhooks: must be at least 1"), "{all}");
}

#[test]
fn duplicate_app_ids_and_keys_are_refused() {
    let f = file("[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n");
    let errors = Config::load(&cli(&[
        "--config",
        f.0.to_str().unwrap(),
        "--app-id",
        "1",
        "--app-key",
        "k",
        "--app-secret",
        "x",
    ]))
    .unwrap_err();
    assert!(errors.iter().any(|e| e.contains("app id \"1\" is defined more than once")));
    assert!(errors.iter().any(|e| e.contains("app key \"k\" is used by more than one app")));
}

#[test]
fn the_example_config_in_the_repository_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/herald.toml");
    let c = Config::load(&cli(&["--config", path])).unwrap();
    assert_eq!(c.apps.len(), 2);
    assert_eq!(c.apps[0].limits.max_presence_members, 20000);
    assert_eq!(c.apps[0].limits.max_connections, Some(10000));
}

#[test]
fn dev_auth_is_refused_for_configured_apps_unless_not_production() {
    let app = ["--app-id", "1", "--app-key", "k", "--app-secret", "s", "--dev-auth"];
    let errors = Config::load(&cli(&app)).unwrap_err();
    assert!(errors[0].contains("--not-production"), "{errors:?}");
    let mut allowed = app.to_vec();
    allowed.push("--not-production");
    assert!(Config::load(&cli(&allowed)).unwrap().settings.dev_auth);
    assert!(Config::load(&cli(&["--dev-auth"])).unwrap().settings.dev_auth, "the embedded default allows it");
}

#[test]
fn a_missing_config_file_is_an_error_not_a_silent_default() {
    let errors = Config::load(&cli(&["--config", "/nonexistent/herald.toml"])).unwrap_err();
    assert!(errors[0].contains("cannot read config file"));
}

#[test]
fn a_redis_password_is_never_shown() {
    assert_eq!(redacted_url("redis://:hunter2@redis.chat.svc:6379/0"), "redis://:***@redis.chat.svc:6379/0");
    assert_eq!(redacted_url("rediss://app:hunter2@h:6380"), "rediss://app:***@h:6380");
    assert_eq!(redacted_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
    let errors =
        Config::load(&cli(&["--cluster", "redis", "--redis-url", "http://:hunter2@h/"])).unwrap_err();
    let all = errors.join("\n");
    assert!(all.contains("redis_url must start with") && !all.contains("hunter2"), "{all}");
}

#[test]
fn durations_that_would_overflow_a_timer_are_refused() {
    let f = file("activity_timeout = 9223372036854775807\nshutdown_grace = 99999999999\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\ncache_ttl = 9223372036854775807\nwebhook_batch_ms = 9223372036854775807\n");
    let all =
        Config::load(&cli(&["--config", f.0.to_str().unwrap(), "--pong-timeout", "18446744073709551615"]))
            .unwrap_err()
            .join("\n");
    for expected in [
        "activity_timeout: must be at most 31536000 seconds",
        "pong_timeout: must be at most",
        "shutdown_grace: must be at most",
        "apps[0].cache_ttl: must be at most",
        "apps[0].webhook_batch_ms: must be at most",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    let ok = file("activity_timeout = 31536000\n");
    assert!(Config::load(&cli(&["--config", ok.0.to_str().unwrap()])).is_ok(), "one year is allowed");
}
