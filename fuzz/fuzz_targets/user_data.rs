//! Sign-in `user_data`.
#![no_main]
use herald_server::connection::parse_user_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((id, _)) = parse_user_data(text, 128) {
            assert!(!id.is_empty() && id.len() <= 128);
        }
    }
});
