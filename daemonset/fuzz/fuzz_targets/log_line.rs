#![no_main]
//! Any byte string as one physical log line: the CRI and Docker json-file parsers must not panic,
//! and what they return must be consistent with the line.

use lgtm_daemonset::logs::format::Format;
use lgtm_daemonset::logs::{cri, docker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Format::detect(data);
    if let Ok(line) = cri::parse(data) {
        // The message borrows the end of the line: nothing is invented or reordered.
        assert!(data.ends_with(line.message), "CRI message is not the tail of the line");
        let head = &data[..data.len() - line.message.len()];
        assert!(head.windows(6).any(|w| w == line.stream.as_str().as_bytes()));
    }
    if let Ok(line) = docker::parse(data) {
        let _ = line.stream.as_str();
        // A complete line lost exactly one trailing `\n`; a partial one had none to lose.
        assert!(line.message.len() < data.len());
    }
});
