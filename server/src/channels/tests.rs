//! The registry's own tests.

use super::*;

fn member(id: &str) -> Member {
    Member { user_id: id.into(), user_info: None }
}

fn outbox(id: &str) -> Outbox {
    Outbox::new(id.into(), 8).0
}

#[test]
fn a_member_event_skips_the_subscribers_whose_member_list_showed_it() {
    let r = Registry::default();
    let (early, mut early_inbox) = Outbox::new("1.1".into(), 8);
    let (late, mut late_inbox) = Outbox::new("1.2".into(), 8);
    r.add_seen("1", "presence-a", early, Some(member("a")), 10, 5).unwrap();
    r.add_seen("1", "presence-a", late, Some(member("b")), 10, 9).unwrap();
    let frame = Utf8Bytes::from_static("member event");
    assert_eq!(r.broadcast_member("1", "presence-a", &frame, None, 9), 1, "only the list read at 5 lacks 9");
    assert_eq!(r.broadcast_member("1", "presence-a", &frame, None, 10), 2, "nobody's list shows 10");
    assert_eq!(
        r.broadcast_member("1", "presence-a", &frame, Some("1.1"), 0),
        1,
        "unnumbered: all but except"
    );
    let count = |inbox: &mut crate::outbox::Inbox| std::iter::from_fn(|| inbox.try_recv()).count();
    assert_eq!((count(&mut early_inbox), count(&mut late_inbox)), (2, 2));

    // A socket whose list is still being read has numbered events held, then sorted by it.
    let (reading, mut reading_inbox) = Outbox::new("1.3".into(), 8);
    r.add_seen("1", "presence-a", reading, Some(member("c")), 10, PENDING).unwrap();
    for (seq, text) in [(11, "in the list"), (12, "after the list"), (13, "after it too")] {
        r.broadcast_member("1", "presence-a", &Utf8Bytes::from_static(text), None, seq);
    }
    assert_eq!(count(&mut reading_inbox), 0, "held while the list is read");
    r.members_seen("1", "presence-a", "1.3", 11);
    let got: Vec<String> = std::iter::from_fn(|| reading_inbox.try_recv()).map(|f| f.to_string()).collect();
    assert_eq!(got, ["after the list", "after it too"]);
    r.broadcast_member("1", "presence-a", &frame, None, 14);
    assert_eq!(count(&mut reading_inbox), 1, "and live from then on");
}

#[test]
fn a_user_with_two_sockets_is_added_once_and_removed_with_the_last_socket() {
    let r = Registry::default();
    let a = r.add("1", "presence-x", outbox("1.1"), Some(member("u")), 100).unwrap();
    assert!(a.member_added);
    let b = r.add("1", "presence-x", outbox("1.2"), Some(member("u")), 100).unwrap();
    assert!(!b.member_added);
    assert_eq!(r.stats("1", "presence-x"), LocalStats { subscriptions: 2, users: 1 });
    assert_eq!(r.remove("1", "presence-x", "1.1").member_removed, None);
    assert_eq!(r.remove("1", "presence-x", "1.2").member_removed.as_deref(), Some("u"));
    assert!(r.channels("1", None).is_empty());
}

#[test]
fn a_full_presence_channel_refuses_new_users_but_not_more_sockets_of_members() {
    let r = Registry::default();
    r.add("1", "presence-x", outbox("1.1"), Some(member("a")), 1).unwrap();
    assert_eq!(
        r.add("1", "presence-x", outbox("1.2"), Some(member("b")), 1),
        Err(AddError::PresenceFull { max: 1 })
    );
    assert!(r.add("1", "presence-x", outbox("1.3"), Some(member("a")), 1).is_ok());
}

#[test]
fn broadcast_skips_the_excluded_socket_and_other_apps() {
    let r = Registry::default();
    let (a, mut rx_a) = Outbox::new("1.1".into(), 8);
    let (b, mut rx_b) = Outbox::new("1.2".into(), 8);
    r.add("1", "chat", a, None, 100).unwrap();
    r.add("1", "chat", b, None, 100).unwrap();
    let frame = Utf8Bytes::from_static("hi");
    assert_eq!(r.broadcast("1", "chat", &frame, Some("1.1")), 1);
    assert_eq!(r.broadcast("2", "chat", &frame, None), 0);
    assert!(rx_a.try_recv().is_none());
    assert_eq!(rx_b.try_recv().as_deref(), Some("hi"));
}

#[test]
fn a_user_is_online_from_the_first_sign_in_to_the_last_sign_out() {
    let r = Registry::default();
    let user: Arc<str> = "u".into();
    assert!(r.sign_in("1", &user, outbox("1.1")));
    assert!(!r.sign_in("1", &user, outbox("1.2")));
    assert!(!r.sign_out("1", "u", "1.1"));
    assert!(r.is_signed_in("1", "u"));
    assert!(r.sign_out("1", "u", "1.2"));
    assert!(!r.is_signed_in("1", "u"));
    assert!(!r.sign_out("1", "u", "1.2"), "signing out twice is not a second transition");
}

#[test]
fn connection_limit_admits_up_to_the_quota() {
    let r = Registry::default();
    assert!(r.connection_opened("1", Some(2)));
    assert!(r.connection_opened("1", Some(2)));
    assert!(!r.connection_opened("1", Some(2)));
    r.connection_closed("1");
    assert!(r.connection_opened("1", Some(2)));
    assert_eq!(r.connections("1"), 2);
}
