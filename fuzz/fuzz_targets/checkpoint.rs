//! The checkpoint reader on arbitrary bytes: errors, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cvae::checkpoint::load_bytes(data, "fuzz");
});
