//! HMAC-SHA256 signatures of the Pusher protocol: channel authorization, user sign-in, HTTP API
//! requests and webhooks. Every comparison of a signature is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a client- or API-supplied signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The `auth` token is not `key:signature`.
    #[error("auth token must be of the form '<app key>:<signature>'")]
    MalformedToken,
    /// The key in the token is not this app's key.
    #[error("auth token was signed for another app key")]
    WrongKey,
    /// The signature is not hex (either case) of the digest.
    #[error("signature is not a hex-encoded HMAC SHA256 digest")]
    NotHex,
    /// The signature does not match what the app secret produces.
    #[error("Invalid signature: Expected HMAC SHA256 hex digest of {signed}, but got {got}")]
    Mismatch {
        /// The string the server signed, so the user can see what their auth endpoint got wrong.
        signed: String,
        /// The signature the client sent.
        got: String,
    },
}

fn mac(secret: &str, message: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    mac
}

/// Lower-case hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &str, message: &[u8]) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

/// Verifies a hex signature of `message` in constant time.
pub fn verify(secret: &str, message: &[u8], signature_hex: &str) -> Result<(), SignatureError> {
    let expected = hex::decode(signature_hex).map_err(|_| SignatureError::NotHex)?;
    mac(secret, message).verify_slice(&expected).map_err(|_| SignatureError::Mismatch {
        signed: String::from_utf8_lossy(message).into_owned(),
        got: signature_hex.to_owned(),
    })
}

/// The string signed to authorize a channel subscription: `socket_id:channel[:channel_data]`.
pub fn channel_string(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The string signed for a user sign-in: `socket_id::user::user_data`.
pub fn user_string(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Verifies an `auth` token (`key:hex`) over `message` for the app with `key` and `secret`.
pub fn verify_token(key: &str, secret: &str, message: &str, token: &str) -> Result<(), SignatureError> {
    let (token_key, signature) = token.split_once(':').ok_or(SignatureError::MalformedToken)?;
    if token_key != key {
        return Err(SignatureError::WrongKey);
    }
    verify(secret, message.as_bytes(), signature)
}

/// The `auth` token a server SDK would produce: `key:hex(HMAC(secret, message))`.
pub fn token(key: &str, secret: &str, message: &str) -> String {
    format!("{key}:{}", sign(secret, message.as_bytes()))
}

/// The string signed for an HTTP API request: `METHOD\nPATH\nk=v&…`, with every query
/// parameter except `auth_signature`, keys lower-cased, sorted by key, values not escaped.
pub fn api_string(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    pairs.sort();
    let query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    format!("{}\n{path}\n{query}", method.to_ascii_uppercase())
}

/// Lower-case hex MD5 of a request body, as in the `body_md5` query parameter.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

#[cfg(test)]
mod tests {
    //! Vectors from PUSHER.md §4: V1–V4 are published by Pusher, V3' is the corrected presence
    //! example (the docs print V3's signature for the "Mr. Channels" payload), D1–D6 are derived
    //! with the official Node SDK.
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn private_channel_signature_matches_published_v1() {
        let msg = channel_string("1234.1234", "private-foobar", None);
        assert_eq!(
            sign(SECRET, msg.as_bytes()),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let token = format!("{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
        assert_eq!(verify_token(KEY, SECRET, &msg, &token), Ok(()));
    }

    #[test]
    fn user_signin_signature_matches_published_v2() {
        let msg = user_string("1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(
            sign(SECRET, msg.as_bytes()),
            "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn presence_signature_matches_legacy_v3_and_corrected_v3_prime() {
        let legacy = channel_string(
            "1234.1234",
            "presence-foobar",
            Some(r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#),
        );
        assert_eq!(
            sign(SECRET, legacy.as_bytes()),
            "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
        );
        let current = channel_string(
            "1234.1234",
            "presence-foobar",
            Some(r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#),
        );
        assert_eq!(
            sign(SECRET, current.as_bytes()),
            "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    #[test]
    fn rest_trigger_signature_matches_published_v4() {
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body.as_bytes()), "ec365a775a4cd0599faeb73354201b6f");
        let params = vec![
            ("auth_signature".to_owned(), "ignored".to_owned()),
            ("body_md5".to_owned(), body_md5(body.as_bytes())),
            ("auth_version".to_owned(), "1.0".to_owned()),
            ("auth_key".to_owned(), KEY.to_owned()),
            ("auth_timestamp".to_owned(), "1353088179".to_owned()),
        ];
        let s = api_string("post", "/apps/3/events", &params);
        assert_eq!(
            s,
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            sign(SECRET, s.as_bytes()),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn derived_vectors_d1_to_d4_and_md5_helpers() {
        let d1 = channel_string("1234.1234", "private-azAZ9_=@,.;", None);
        assert_eq!(
            sign(SECRET, d1.as_bytes()),
            "208cbbce2a22fd7d7c3509046b17a97b99d345cf4c195bc0d54af9004a022b0b"
        );
        let d2 = "GET\n/apps/3/channels\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&filter_by_prefix=presence-&info=user_count";
        assert_eq!(
            sign(SECRET, d2.as_bytes()),
            "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291"
        );
        let d3 = "POST\n/apps/3/users/12345/terminate_connections\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=99914b932bd37a50b983c5e7c90ae93b";
        assert_eq!(
            sign(SECRET, d3.as_bytes()),
            "01fa634edeb0cae84115307cad5c23f65a46cd286461b1c89637a3b5871a8f0e"
        );
        let d4 =
            r#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"test_channel"}]}"#;
        assert_eq!(
            sign(SECRET, d4.as_bytes()),
            "709fdb84c03664445f7698120b0edf0acc1ab1c8c6e93a0368c61841d6b998aa"
        );
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(body_md5(b"{}"), "99914b932bd37a50b983c5e7c90ae93b");
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/signature.rs`): hex digits are compared as bytes, so
    /// an upper-case signature of the right digest is the same signature and verifies.
    #[test]
    fn signatures_verify_whatever_the_case_of_their_hex_digits() {
        let msg = channel_string("1234.1234", "private-foobar", None);
        let upper = format!("{KEY}:{}", sign(SECRET, msg.as_bytes()).to_ascii_uppercase());
        assert_eq!(verify_token(KEY, SECRET, &msg, &upper), Ok(()));
        let upper_key = upper.replacen("278d", "278D", 1);
        assert_eq!(verify_token(KEY, SECRET, &msg, &upper_key), Err(SignatureError::WrongKey));
    }

    #[test]
    fn wrong_key_bad_hex_and_tampered_signature_are_refused() {
        let msg = channel_string("1234.1234", "private-foobar", None);
        let good = token(KEY, SECRET, &msg);
        assert_eq!(verify_token(KEY, SECRET, &msg, &good), Ok(()));
        assert_eq!(verify_token("other", SECRET, &msg, &good), Err(SignatureError::WrongKey));
        assert_eq!(verify_token(KEY, SECRET, &msg, "no-colon"), Err(SignatureError::MalformedToken));
        assert_eq!(verify_token(KEY, SECRET, &msg, &format!("{KEY}:zz")), Err(SignatureError::NotHex));
        let tampered = good.replace(":5", ":6");
        assert!(matches!(verify_token(KEY, SECRET, &msg, &tampered), Err(SignatureError::Mismatch { .. })));
        let other_channel = channel_string("1234.1234", "private-other", None);
        assert!(verify_token(KEY, SECRET, &other_channel, &good).is_err());
    }
}
