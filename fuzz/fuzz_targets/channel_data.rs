//! Presence `channel_data` (signed by the app, but any bytes reach the parser first).
#![no_main]
use herald_server::apps::Limits;
use herald_server::channels::Member;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let limits = Limits::default();
        if let Ok(m) = Member::from_channel_data(text, &limits) {
            assert!(m.user_id.len() <= limits.max_user_id_length);
            assert!(m.user_info.map_or(0, |i| i.get().len()) <= limits.max_presence_member_size);
        }
    }
});
