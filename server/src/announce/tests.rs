//! The transition → effects rules, with the embedded backend and in-memory outboxes: no I/O.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::apps::{App, StaticApps, WebhookTarget};
use crate::channels::{Member, Registry};
use crate::cluster::{Announcement, Cluster, Origin, Transition, Window};
use crate::metrics::Metrics;
use crate::outbox::{Inbox, Outbox};
use crate::webhooks::{Recorded, WebhookEvent, Webhooks};

struct Fixture {
    announcer: Announcer,
    registry: Registry,
    hooks: Recorded,
    app: Arc<App>,
}

fn fixture(subscription_count: bool) -> Fixture {
    let metrics = Metrics::new();
    let registry = Registry::new(&metrics);
    let cluster = Cluster::local(registry.clone());
    let (webhooks, hooks): (Webhooks, Recorded) = Webhooks::recording(&metrics);
    let mut app = App::new("1", "key", "secret");
    app.subscription_count = subscription_count;
    app.webhooks = vec![WebhookTarget {
        url: "http://127.0.0.1:9/hooks".into(),
        event_types: Vec::new(),
        channel_prefix: None,
        channel_suffix: None,
    }];
    let apps = Arc::new(StaticApps::new([app.clone()]));
    let announcer = Announcer::new(&cluster, webhooks, apps);
    Fixture { announcer, registry, hooks, app: Arc::new(app) }
}

fn subscriber(registry: &Registry, channel: &str, socket_id: &str) -> Inbox {
    let (outbox, inbox) = Outbox::new(socket_id.into(), 16);
    registry.add("1", channel, outbox, None, 100).unwrap();
    inbox
}

fn frames(inbox: &mut Inbox) -> Vec<String> {
    std::iter::from_fn(|| inbox.try_recv()).map(|f: Utf8Bytes| f.to_string()).collect()
}

fn member(id: &str) -> Member {
    Member { user_id: id.into(), user_info: None }
}

#[tokio::test]
async fn a_socket_joining_a_presence_channel_tells_the_others_but_not_itself() {
    let mut f = fixture(false);
    let mut other = subscriber(&f.registry, "presence-a", "1.1");
    let mut joiner = subscriber(&f.registry, "presence-a", "1.2");
    let transitions = vec![
        Transition::Occupied { channel: "presence-a".into(), webhook: true },
        Transition::MemberAdded { channel: "presence-a".into(), member: member("u"), webhook: true, seq: 0 },
        Transition::SubscriptionCount { channel: "presence-a".into(), count: 2 },
    ];
    f.announcer.announce(&f.app, &Origin::Socket("1.2".into()), transitions).await;
    let heard = frames(&mut other);
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].contains("pusher_internal:member_added") && heard[0].contains(r#"\"u\""#), "{heard:?}");
    assert!(frames(&mut joiner).is_empty(), "the joining socket does not hear its own member_added");
    assert_eq!(
        f.hooks.drain(),
        vec![
            ("1".to_owned(), WebhookEvent::ChannelOccupied { channel: "presence-a".into() }),
            ("1".to_owned(), WebhookEvent::MemberAdded { channel: "presence-a".into(), user_id: "u".into() }),
        ],
        "no subscription_count on presence channels, and none when the app does not enable it"
    );
}

#[tokio::test]
async fn a_member_removed_reaches_every_remaining_subscriber_with_its_webhook() {
    let mut f = fixture(false);
    let mut a = subscriber(&f.registry, "presence-a", "1.1");
    let transitions = vec![Transition::MemberRemoved {
        channel: "presence-a".into(),
        user_id: "u".into(),
        window: Window::Local,
        seq: 0,
    }];
    f.announcer.announce(&f.app, &Origin::Socket("1.1".into()), transitions).await;
    let heard = frames(&mut a);
    assert!(heard.len() == 1 && heard[0].contains("pusher_internal:member_removed"), "{heard:?}");
    assert_eq!(
        f.hooks.drain(),
        vec![(
            "1".to_owned(),
            WebhookEvent::MemberRemoved { channel: "presence-a".into(), user_id: "u".into() }
        )]
    );
}

#[tokio::test]
async fn subscription_counts_go_to_non_presence_channels_of_apps_that_enable_them() {
    let mut f = fixture(true);
    let mut a = subscriber(&f.registry, "private-a", "1.1");
    let transitions = vec![
        Transition::Vacated { channel: "other".into(), window: Window::Local },
        Transition::SubscriptionCount { channel: "private-a".into(), count: 1 },
        Transition::SubscriptionCount { channel: "presence-b".into(), count: 1 },
    ];
    f.announcer.announce(&f.app, &Origin::Socket("1.9".into()), transitions).await;
    let heard = frames(&mut a);
    assert!(heard.len() == 1 && heard[0].contains("pusher_internal:subscription_count"), "{heard:?}");
    assert_eq!(
        f.hooks.drain(),
        vec![
            ("1".to_owned(), WebhookEvent::ChannelVacated { channel: "other".into() }),
            (
                "1".to_owned(),
                WebhookEvent::SubscriptionCount { channel: "private-a".into(), subscription_count: 1 }
            ),
        ]
    );
}

#[tokio::test]
async fn a_user_going_online_and_offline_reaches_its_watchers() {
    let f = fixture(false);
    let (watcher, mut inbox) = Outbox::new("1.5".into(), 16);
    f.registry.watch("1", &["u".into()], &watcher);
    let origin = Origin::Socket("1.1".into());
    f.announcer.announce(&f.app, &origin, vec![Transition::UserOnline { user_id: "u".into() }]).await;
    f.announcer.announce(&f.app, &origin, vec![Transition::UserOffline { user_id: "u".into() }]).await;
    let heard = frames(&mut inbox);
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert!(heard[0].contains("online") && heard[1].contains("offline"), "{heard:?}");
}

#[tokio::test]
async fn a_rejoining_node_announces_only_to_the_other_nodes() {
    let mut f = fixture(false);
    let mut local = subscriber(&f.registry, "presence-a", "1.1");
    let transitions = vec![
        Transition::MemberAdded { channel: "presence-a".into(), member: member("u"), webhook: true, seq: 0 },
        Transition::Occupied { channel: "presence-a".into(), webhook: true },
    ];
    f.announcer.announce(&f.app, &Origin::Rejoin, transitions).await;
    assert!(frames(&mut local).is_empty(), "this node's sockets never saw the member go");
    assert_eq!(f.hooks.drain().len(), 2, "the webhooks still go out");
}

#[tokio::test]
async fn backend_transitions_are_announced_in_order_and_a_flush_waits_for_them() {
    let mut f = fixture(false);
    let mut a = subscriber(&f.registry, "presence-a", "1.1");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(f.announcer.clone().run_backend(rx));
    let removed = |u: &str| Transition::MemberRemoved {
        channel: "presence-a".into(),
        user_id: u.into(),
        window: Window::Local,
        seq: 0,
    };
    tx.send(Announcement::Transitions {
        app_id: "1".into(),
        origin: Origin::Cleanup,
        transitions: vec![removed("x"), removed("y")],
    })
    .unwrap();
    tx.send(Announcement::Transitions {
        app_id: "gone".into(),
        origin: Origin::Cleanup,
        transitions: vec![Transition::Vacated { channel: "c".into(), window: Window::Local }],
    })
    .unwrap();
    let (done, flushed) = tokio::sync::oneshot::channel();
    tx.send(Announcement::Flush(done)).unwrap();
    flushed.await.unwrap();
    let heard = frames(&mut a);
    assert!(heard.len() == 2 && heard[0].contains(r#"\"x\""#) && heard[1].contains(r#"\"y\""#), "{heard:?}");
    let hooks = f.hooks.drain();
    assert_eq!(hooks.len(), 2, "an app that no longer exists gets no webhooks: {hooks:?}");
    drop(tx);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_returned_member_or_channel_sends_no_webhook_and_a_held_one_goes_after_the_window() {
    let mut f = fixture(false);
    let mut a = subscriber(&f.registry, "presence-a", "1.1");
    let origin = Origin::Socket("1.2".into());
    let back = vec![
        Transition::Occupied { channel: "presence-a".into(), webhook: false },
        Transition::MemberAdded { channel: "presence-a".into(), member: member("u"), webhook: false, seq: 0 },
    ];
    f.announcer.announce(&f.app, &origin, back).await;
    assert!(f.hooks.drain().is_empty(), "back within the window: no webhook");
    assert_eq!(frames(&mut a).len(), 1, "but the channel still hears member_added");

    let hold = crate::cluster::Hold { key: "k".into(), token: "t".into(), listed: None };
    let left = vec![
        Transition::Vacated { channel: "c".into(), window: crate::cluster::Window::Cluster(hold) },
        Transition::MemberRemoved {
            channel: "presence-a".into(),
            user_id: "v".into(),
            window: crate::cluster::Window::Skip,
            seq: 0,
        },
    ];
    f.announcer.announce(&f.app, &origin, left).await;
    assert!(f.hooks.drain().is_empty(), "held for the window");
    tokio::time::sleep(crate::webhooks::DEBOUNCE + std::time::Duration::from_millis(10)).await;
    assert_eq!(
        f.hooks.drain_settled(),
        vec![("1".to_owned(), WebhookEvent::ChannelVacated { channel: "c".into() }, true)],
        "sent after the window, not held again by the webhook queue"
    );
}

#[tokio::test]
async fn an_overdue_departure_goes_with_its_return_and_no_frame() {
    let mut f = fixture(false);
    let mut other = subscriber(&f.registry, "presence-a", "1.1");
    let transitions = vec![
        Transition::Overdue { channel: "presence-a".into(), user_id: None },
        Transition::Occupied { channel: "presence-a".into(), webhook: true },
        Transition::Overdue { channel: "presence-a".into(), user_id: Some("u".into()) },
        Transition::MemberAdded { channel: "presence-a".into(), member: member("u"), webhook: true, seq: 0 },
    ];
    f.announcer.announce(&f.app, &Origin::Socket("1.2".into()), transitions).await;
    let heard = frames(&mut other);
    assert!(heard.len() == 1 && heard[0].contains("pusher_internal:member_added"), "{heard:?}");
    let (ch, u) = (|| "presence-a".to_owned(), || "u".to_owned());
    assert_eq!(
        f.hooks.drain_settled(),
        vec![
            ("1".to_owned(), WebhookEvent::ChannelVacated { channel: ch() }, true),
            ("1".to_owned(), WebhookEvent::ChannelOccupied { channel: ch() }, true),
            ("1".to_owned(), WebhookEvent::MemberRemoved { channel: ch(), user_id: u() }, true),
            ("1".to_owned(), WebhookEvent::MemberAdded { channel: ch(), user_id: u() }, true),
        ],
        "each departure, settled, just before its return"
    );
}
