#![no_main]
//! Any byte string: the text format parser must not panic, and every label it yields must have
//! a valid name.

use lgtm_scrape::parser::{is_valid_label_name, Entry, Format, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for entry in Parser::new(data, Format::Text) {
        if let Ok(Entry::Series(s)) = entry {
            for (name, value) in s.labels() {
                assert!(is_valid_label_name(name));
                let _ = value.len();
            }
        }
    }
});
