//! Channel names from subscribes and API triggers.
#![no_main]
use herald_server::protocol::{parse_channel, server_to_user_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        if let Ok(parsed) = parse_channel(name, 200) {
            assert!(name.len() <= 200);
            let _ = (parsed.needs_auth(), parsed.allows_client_events(), server_to_user_id(name));
        }
    }
});
