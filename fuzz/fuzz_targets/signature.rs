//! `auth` tokens of subscribes and sign-ins: only the right key with the right digest (hex in
//! either case) verifies.
#![no_main]
use herald_server::signing::verify_token;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "278d425bdf160c739803";
const DIGEST: &str = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let ok = verify_token(KEY, "7ad3773142a6692b25b8", "1234.1234:private-foobar", token).is_ok();
        let right = token.split_once(':').is_some_and(|(k, sig)| k == KEY && sig.eq_ignore_ascii_case(DIGEST));
        assert_eq!(ok, right, "{token:?}");
    }
});
