#![no_main]
//! Any text as a config file, with a fixed environment: `Config::from_yaml` must not panic, and a
//! refusal must be a message that points inside the file (a line that exists, when it has one).

use lgtm_config::Config;
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "NODE_NAME" => Some("node-a".into()),
        "TENANT" => Some("remote04".into()),
        "EMPTY" => Some(String::new()),
        "MULTI" => Some("a\nb: c".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_yaml("fuzz.yaml", text, None, env) {
        Ok(config) => {
            let _ = config.mode();
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.yaml"), "{message}");
            if let Some(line) = e.line() {
                // YAML breaks lines on LF, CR and CRLF (an editor may show a lone CR otherwise), and
                // serde_yaml puts an error at the end of a text without a final newline one line
                // further (reported, not hidden: `fuzz.yaml:3` for a 2-line text).
                let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 2;
                assert!((1..=lines).contains(&line), "line {line} of a {lines}-line text: {message}");
            }
        }
    }
});
