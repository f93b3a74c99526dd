//! Content negotiation: what we ask for, and which parser a response's `Content-Type` selects.

use super::Format;

/// The `Accept` header of every scrape: OpenMetrics preferred, the text format next, anything
/// as a last resort (roughly what Prometheus sends when protobuf scraping is off).
pub const ACCEPT_HEADER: &str =
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

/// A response whose `Content-Type` selects no parser: missing, blank, not a media type, of an
/// unknown type with no `fallback_scrape_protocol`, or the protobuf exposition format (which
/// this agent never asks for and cannot parse). The scrape fails, as in Prometheus 3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedContentType(pub String);

impl Format {
    /// The parser for a response's `Content-Type`, as Prometheus 3 chooses it: `text/plain` and
    /// `application/openmetrics-text` (versions other than 2.0.0) by name; anything else (a
    /// missing or blank header, one that is not a media type, an unknown type, OpenMetrics
    /// 2.0.0) takes `fallback` (the target's `fallback_scrape_protocol`), or fails the scrape
    /// without one. Prometheus 2 took the text format for all of these.
    pub fn from_content_type(
        content_type: Option<&str>,
        fallback: Option<Format>,
    ) -> Result<Format, UnsupportedContentType> {
        let or_fallback = |why: String| {
            fallback
                .ok_or_else(|| UnsupportedContentType(format!("{why} and no fallback_scrape_protocol for the target")))
        };
        let ct = content_type.unwrap_or("");
        if ct.is_empty() {
            return or_fallback("blank or missing Content-Type".into());
        }
        let Some((media_type, params)) = parse_media_type(ct) else {
            return or_fallback(format!("cannot parse Content-Type {ct:?}"));
        };
        match media_type.as_str() {
            "text/plain" => Ok(Format::Text),
            "application/openmetrics-text" => {
                if params.iter().any(|(k, v)| k == "version" && v == "2.0.0") {
                    or_fallback(format!("OpenMetrics 2.0 Content-Type {ct:?} (not supported)"))
                } else {
                    Ok(Format::OpenMetrics)
                }
            }
            "application/vnd.google.protobuf" => {
                Err(UnsupportedContentType(format!("unsupported Content-Type {ct:?} (protobuf exposition)")))
            }
            _ => or_fallback(format!("unsupported Content-Type {ct:?}")),
        }
    }
}

/// RFC 2045 `token` characters (what Go's `mime` package accepts in a media type and
/// parameter names).
fn is_token_char(c: char) -> bool {
    c.is_ascii() && !c.is_ascii_control() && c != ' ' && !"()<>@,;:\\\"/[]?=".contains(c)
}

/// `type/subtype` (lower-cased) and its parameters (names lower-cased), like Go's
/// `mime.ParseMediaType` on the inputs that matter here; `None` where it returns an error.
fn parse_media_type(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let (media, mut rest) = value.split_once(';').map_or((value, ""), |(m, r)| (m, r));
    let media = media.trim();
    let (kind, sub) = media.split_once('/')?;
    if kind.is_empty() || sub.is_empty() || !kind.chars().chain(sub.chars()).all(is_token_char) {
        return None;
    }
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !name.chars().all(is_token_char) {
            // A lone trailing `;` is ignored, as by Go.
            return (rest.trim() == ";" || rest.trim().is_empty()).then_some((media.to_ascii_lowercase(), params));
        }
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &quoted[end?..])
        } else {
            let end = after.find(|c: char| !is_token_char(c)).unwrap_or(after.len());
            if end == 0 {
                return None;
            }
            (after[..end].to_string(), &after[end..])
        };
        if params.iter().any(|(k, _)| *k == name) {
            return None; // a duplicate parameter
        }
        params.push((name, value));
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(';') {
            Some(r) => r,
            None if tail.is_empty() => "",
            None => return None,
        };
    }
    Some((media.to_ascii_lowercase(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_picks_the_parser_or_the_fallback_as_prometheus_3() {
        let om = Some(Format::OpenMetrics);
        for (ct, fallback, want) in [
            (Some("text/plain; version=0.0.4; charset=utf-8"), None, Some(Format::Text)),
            (Some("text/plain;version=1.0.0;escaping=allow-utf-8"), None, Some(Format::Text)),
            (Some("TEXT/Plain"), None, Some(Format::Text)),
            (Some("application/openmetrics-text; version=1.0.0; charset=utf-8"), None, om),
            (Some("application/openmetrics-text;version=0.0.1"), None, om),
            (Some("application/openmetrics-text; version=2.0.0"), None, None),
            (Some("application/openmetrics-text; version=2.0.0"), Some(Format::Text), Some(Format::Text)),
            (None, None, None),
            (Some(""), None, None),
            (None, om, om),
            (Some("text/html"), None, None),
            (Some("text/html"), Some(Format::Text), Some(Format::Text)),
            (Some("application/octet-stream"), om, om),
            (Some("not a media type"), None, None),
            (Some("not a media type"), Some(Format::Text), Some(Format::Text)),
            (Some("text/plain; charset"), None, None),
            (Some("text/plain;"), None, Some(Format::Text)),
            (Some("text/plain; a=1; a=2"), None, None),
            (Some("text/plain; charset=\"utf-8\""), None, Some(Format::Text)),
            (
                Some("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"),
                Some(Format::Text),
                None,
            ),
        ] {
            let got = Format::from_content_type(ct, fallback);
            assert_eq!(got.as_ref().ok().copied(), want, "{ct:?} with fallback {fallback:?}: {got:?}");
        }
        let err = Format::from_content_type(Some("text/html"), None).unwrap_err().to_string();
        assert_eq!(err, "unsupported Content-Type \"text/html\" and no fallback_scrape_protocol for the target");
    }
}
