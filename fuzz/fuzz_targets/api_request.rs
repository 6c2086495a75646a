//! HTTP API requests: the query string (split from the body at the first NUL) goes through the
//! signature check, the body through trigger validation.
#![no_main]
use herald_server::apps::App;
use herald_server::http_api::{auth::check_query, check_trigger_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let app = App::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8");
    let (query, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    if let Ok(query) = std::str::from_utf8(query) {
        let _ = check_query(&app, "POST", "/apps/3/events", query, body, 1_353_088_179);
    }
    let _ = check_trigger_body(&app, body);
});
