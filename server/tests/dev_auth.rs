//! The development auth endpoint signs what pusher-js asks for, so the signatures it returns
//! are accepted by the server; it is absent unless switched on.

use herald_server::dev_auth::{shared_secret, DEV_ENCRYPTION_MASTER_KEY};
use herald_server::Config;
use herald_testkit::*;
use serde_json::{json, Value};

async fn post_form(addr: std::net::SocketAddr, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let body = serde_urlencoded::to_string(form).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"));
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
}

#[tokio::test]
async fn dev_auth_signs_private_presence_encrypted_and_user_sign_in() {
    let mut config = Config::for_tests();
    config.settings.dev_auth = true;
    let s = start_server(config).await;
    let mut c = connect(s.addr).await;
    let sid = c.socket_id.clone();

    let (status, private) =
        post_form(s.addr, "/pusher/auth", &[("socket_id", &sid), ("channel_name", "private-dev")]).await;
    assert_eq!(status, 200);
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-dev","auth":private["auth"]}})).await;
    assert_eq!(c.next().await["event"], "pusher_internal:subscription_succeeded");

    let form = [
        ("socket_id", sid.as_str()),
        ("channel_name", "presence-dev"),
        ("user_id", "ada"),
        ("user_info", "{\"n\":1}"),
    ];
    let (_, presence) = post_form(s.addr, "/pusher/auth", &form).await;
    let channel_data = presence["channel_data"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(channel_data).unwrap(),
        json!({"user_id":"ada","user_info":{"n":1}})
    );
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"presence-dev","auth":presence["auth"],"channel_data":channel_data}})).await;
    assert_eq!(c.next().await["event"], "pusher_internal:subscription_succeeded");

    let (_, encrypted) =
        post_form(s.addr, "/pusher/auth", &[("socket_id", &sid), ("channel_name", "private-encrypted-dev")])
            .await;
    assert_eq!(encrypted["shared_secret"], shared_secret("private-encrypted-dev", DEV_ENCRYPTION_MASTER_KEY));

    let (_, user) = post_form(s.addr, "/pusher/user-auth", &[("socket_id", &sid), ("user_id", "ada")]).await;
    c.send(json!({"event":"pusher:signin","data":{"auth":user["auth"],"user_data":user["user_data"]}})).await;
    assert_eq!(c.next().await["event"], "pusher:signin_success");

    let (status, _) =
        post_form(s.addr, "/pusher/auth", &[("socket_id", "nope"), ("channel_name", "private-x")]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn without_dev_auth_there_is_no_auth_endpoint() {
    let s = start_default().await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/pusher/auth", s.addr))
        .body("socket_id=1.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
