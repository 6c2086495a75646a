//! Config files.
#![no_main]
use herald_server::config::{Cli, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::load_with_file(&Cli::default(), Some(("fuzz.toml", text)));
    }
});
