//! Any text a client can send in a WebSocket frame.
#![no_main]
use herald_server::protocol::ClientMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClientMessage::parse(text);
    }
});
