//! PDF validation on arbitrary bytes: never panics, and accepts only what starts with a PDF
//! header, ends with %%EOF and stays within the limit.
#![no_main]

use wechat::pdf::validate;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if validate(data, LIMIT).is_ok() {
        assert!(data.len() <= LIMIT && data.starts_with(b"%PDF-"));
        let end = data.iter().rposition(|b| !b.is_ascii_whitespace()).expect("not blank");
        assert!(data[..=end].ends_with(b"%%EOF"));
    }
});
