//! Unit tests of `connection`.

use super::*;

#[test]
fn origins_match_exactly_by_wildcard_subdomain_or_star() {
    let allowed = vec!["https://app.example.com".to_owned(), "https://*.example.org".to_owned()];
    assert!(origin_allowed(&[], None));
    assert!(origin_allowed(&allowed, Some("https://app.example.com")));
    assert!(origin_allowed(&allowed, Some("https://eu.example.org")));
    assert!(!origin_allowed(&allowed, Some("https://example.org.evil.com")));
    assert!(!origin_allowed(&allowed, Some("http://eu.example.org")));
    assert!(!origin_allowed(&allowed, Some("https://evil.com")));
    assert!(!origin_allowed(&allowed, None));
    assert!(origin_allowed(&["*".to_owned()], Some("https://anything")));
}

#[test]
fn socket_ids_are_unique_and_match_the_sdk_pattern() {
    let a = new_socket_id();
    let b = new_socket_id();
    assert_ne!(a, b);
    assert!(crate::protocol::is_socket_id(&a));
}
