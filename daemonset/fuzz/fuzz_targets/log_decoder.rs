#![no_main]
//! Any byte string as the contents of one log file, fed to the decoder as the tailer does:
//! physical lines split on `\n`, overlong ones cut by the reader into fragments. Whatever the
//! bytes, the decoder must not panic, must never emit an entry longer than `max_line_size`, must
//! number the parts of a split line 1, 2, 3 ... and must never resume past what it consumed.

use lgtm_daemonset::logs::format::{Decoder, PhysicalLine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    // Small limits so that splitting and joining are reached with small inputs.
    let max_line = 1 + (control & 0x3f) as usize;
    let reader_cap = 8 + (control >> 6) as usize * 24;
    let mut decoder = Decoder::new(max_line);
    let mut consumed = 0u64;
    let mut last_part = [0u32; 3];
    let mut emit = |e: lgtm_daemonset::logs::format::Entry<'_>| {
        assert!(e.line.len() <= max_line, "entry of {} bytes over the limit {max_line}", e.line.len());
        let slot = match e.stream.map(|s| s.as_str()) {
            Some("stdout") => 0,
            Some(_) => 1,
            None => 2,
        };
        if e.part > 0 {
            assert!(e.part == 1 || e.part == last_part[slot] + 1, "part {} after {}", e.part, last_part[slot]);
            last_part[slot] = e.part;
        } else {
            last_part[slot] = 0;
        }
    };
    let mut offset = 0usize;
    for physical in body.split_inclusive(|&b| b == b'\n') {
        let newline = physical.last() == Some(&b'\n');
        let text = if newline { &physical[..physical.len() - 1] } else { physical };
        let mut start = 0;
        loop {
            let end = (start + reader_cap).min(text.len());
            let complete = end == text.len();
            let bytes = &text[start..end];
            let line = PhysicalLine { bytes, start: (offset + start) as u64, complete };
            decoder.push(line, || 7, &mut emit);
            consumed = (offset + end + usize::from(complete && newline)) as u64;
            assert!(decoder.safe_offset(consumed) <= consumed);
            if complete {
                break;
            }
            start = end;
        }
        offset += physical.len();
    }
    decoder.finish(&mut emit);
    assert_eq!(decoder.safe_offset(consumed), consumed, "nothing pending after finish");
});
