//! `auth` tokens of subscribes and sign-ins.
#![no_main]
use herald_server::signing::verify_token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(verify_token("278d425bdf160c739803", "7ad3773142a6692b25b8", "1234.1234:private-foobar", token)
            .is_err()
            || token == "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
    }
});
