//! Arbitrary text as the coordinator's target config file (`config::parse`); every target it
//! accepts must pass `spec::normalize` again unchanged, as it does when the store or the API
//! sees it a second time.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_coordinator::{config, spec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match config::parse(text, "fuzz.toml") {
        Ok(specs) => {
            for s in specs {
                let again = spec::normalize(s.clone())
                    .unwrap_or_else(|e| panic!("a loaded target does not normalize again: {e}\n{s:?}"));
                assert_eq!(again, s, "normalize is not idempotent");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
