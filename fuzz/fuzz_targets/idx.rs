//! The IDX parser (gzip detection included) on arbitrary bytes: errors, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = cvae::data::maybe_gunzip(data, "fuzz") {
        let _ = cvae::data::parse_idx(&bytes, "fuzz", 3);
        let _ = cvae::data::parse_idx(&bytes, "fuzz", 1);
    }
});
