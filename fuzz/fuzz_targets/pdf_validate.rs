//! PDF validation (lopdf) on arbitrary bytes: never panics, and accepts only what stays within
//! the limit and starts with a PDF header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat::pdf::validate;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if validate(data, LIMIT).is_ok() {
        assert!(data.len() <= LIMIT && data.starts_with(b"%PDF-"));
    }
});
