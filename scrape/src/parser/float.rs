//! `le` and `quantile` label values in their float form, as Prometheus 3 writes them.
//!
//! Prometheus 3's text and OpenMetrics parsers rewrite the `le` label of a sample read under
//! `# TYPE <name> histogram` and the `quantile` label under `# TYPE <name> summary` (the type
//! of the last TYPE line, whatever name it carries) when the value parses as a Go float
//! (`strconv.ParseFloat`): `"1"` becomes `"1.0"`, `"0x1p-3"` `"0.125"`, `"1e+05"` `"100000.0"`,
//! `"+INF"` `"+Inf"`. Values that do not parse (or overflow) are kept as written; gauge
//! histograms and every other type are left alone. Prometheus 2 kept every value as written.
//!
//! Go's float syntax and its shortest `'g'` formatting differ from Rust's in a few places
//! (hex floats, a signed `nan`, overflow, the exponent's form), hence these few functions.

use std::borrow::Cow;

/// Which label of a sample Prometheus 3 writes in float form, by the current metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatLabel {
    /// `le`, under a histogram.
    Le,
    /// `quantile`, under a summary.
    Quantile,
}

impl FloatLabel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FloatLabel::Le => "le",
            FloatLabel::Quantile => "quantile",
        }
    }
}

/// The value as Prometheus 3 stores it: its OpenMetrics float form when it parses as a Go float.
pub(crate) fn normalize(value: Cow<'_, str>) -> Cow<'_, str> {
    match parse_go_float(&value) {
        Some(f) => {
            let formatted = format_openmetrics_float(f);
            if formatted == value {
                value
            } else {
                Cow::Owned(formatted)
            }
        }
        None => value,
    }
}

/// Go's `strconv.ParseFloat(s, 64)`, `None` where it returns an error (bad syntax, or out of
/// range: Go then returns ±Inf with an error).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let (negative, unsigned) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = unsigned.to_ascii_lowercase();
    match lower.as_str() {
        // Go accepts a sign before `inf` but not before `nan`.
        "nan" if unsigned.len() == s.len() => return Some(f64::NAN),
        "inf" | "infinity" => return Some(if negative { f64::NEG_INFINITY } else { f64::INFINITY }),
        _ => {}
    }
    let hex = lower.starts_with("0x");
    let body = if hex { &lower[2..] } else { &lower[..] };
    if !underscores_ok(body, hex) {
        return None;
    }
    let body: String = body.chars().filter(|&c| c != '_').collect();
    let v = if hex {
        parse_hex(&body)?
    } else {
        // Digits, one optional point, an optional exponent: what Rust's parser reads too, once
        // the `nan`/`inf` spellings are handled above (Rust also takes a signed `nan`).
        if !body.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-')) {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    // Out of range: Go returns ±Inf and an error.
    if v.is_infinite() {
        return None;
    }
    Some(if negative { -v } else { v })
}

/// Go's rule: an underscore only between two digits, or between the base prefix and a digit.
fn underscores_ok(body: &str, hex: bool) -> bool {
    let is_digit = |c: u8| c.is_ascii_digit() || (hex && matches!(c, b'a'..=b'f'));
    // `^`: the start (the prefix counts as a digit), `0`: a digit, `_`, `!`: anything else.
    let mut saw = if hex { b'0' } else { b'^' };
    for &c in body.as_bytes() {
        if is_digit(c) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

/// A hex float after its `0x` (lower case, underscores removed): hex digits with at most one
/// point, then a required `p` exponent (decimal, signed).
fn parse_hex(s: &str) -> Option<f64> {
    let (mantissa, exponent) = s.split_once('p')?;
    let mut bits: u128 = 0;
    let mut shift: i64 = 0; // binary exponent adjustment
    let (mut digits, mut seen_point) = (0usize, false);
    for c in mantissa.chars() {
        if c == '.' && !seen_point {
            seen_point = true;
            continue;
        }
        let d = c.to_digit(16)? as u128;
        digits += 1;
        if bits >> 120 == 0 {
            bits = bits << 4 | d;
            if seen_point {
                shift -= 4;
            }
        } else if !seen_point {
            // Beyond 30 digits the later ones only scale the value (rounding aside).
            shift += 4;
        }
    }
    if digits == 0 {
        return None;
    }
    let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if unsigned.is_empty() || !unsigned.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let exp = unsigned.parse::<i64>().unwrap_or(100_000).min(100_000);
    let exp = if exponent.starts_with('-') { -exp } else { exp } + shift;
    // Scale by 2^exp in exact steps (powers of two) until over- or underflow.
    let mut v = bits as f64;
    let mut e = exp;
    while e > 0 && v.is_finite() {
        let step = e.min(1000);
        v *= 2f64.powi(step as i32);
        e -= step;
    }
    while e < 0 && v != 0.0 {
        let step = (-e).min(1000);
        v /= 2f64.powi(step as i32);
        e += step;
    }
    Some(v)
}

/// Prometheus's `FormatOpenMetricsFloat`: `1.0`, `0.0`, `-1.0`, `NaN`, `+Inf`, `-Inf`, else Go's
/// shortest `'g'` form with `.0` added when it has neither a point nor an exponent.
pub(crate) fn format_openmetrics_float(f: f64) -> String {
    if f == 1.0 {
        return "1.0".into();
    }
    if f == 0.0 {
        return "0.0".into();
    }
    if f == -1.0 {
        return "-1.0".into();
    }
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let mut out = format_go_g(f);
    if !out.contains(['.', 'e']) {
        out.push_str(".0");
    }
    out
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` for a finite, non-zero `f`: the shortest digits
/// that read back as `f`, in `%e` form (`1.5e+06`, `1e-05`) when the decimal exponent is below
/// -4 or at least 6 (Go's rule for the shortest form), else in `%f` form.
fn format_go_g(f: f64) -> String {
    // Rust's `{:e}` gives the same shortest digits: `d[.ddd]e<exp>`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{point}e{exp_sign}{:02}", exp.abs());
    }
    let dp = exp + 1; // digits before the point
    let nd = digits.len() as i32;
    if dp <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-dp) as usize))
    } else if dp >= nd {
        format!("{sign}{digits}{}", "0".repeat((dp - nd) as usize))
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `strconv.ParseFloat` then Prometheus 3's `FormatOpenMetricsFloat`, as printed by a
    /// Go 1.25 program (not in the repository) for each input: `None` where Go returns an error.
    const GO: &[(&str, Option<&str>)] = &[
        ("1", Some("1.0")),
        ("0", Some("0.0")),
        ("-0", Some("0.0")),
        ("-1", Some("-1.0")),
        ("2", Some("2.0")),
        ("0.5", Some("0.5")),
        ("0.05", Some("0.05")),
        ("+Inf", Some("+Inf")),
        ("+INF", Some("+Inf")),
        ("inf", Some("+Inf")),
        ("-inf", Some("-Inf")),
        ("Infinity", Some("+Inf")),
        ("-Infinity", Some("-Inf")),
        ("infinit", None),
        ("NaN", Some("NaN")),
        ("nan", Some("NaN")),
        ("+nan", None),
        ("-NaN", None),
        ("0x1p-3", Some("0.125")),
        ("0X1P3", Some("8.0")),
        ("0x1.8p1", Some("3.0")),
        ("0x_1p0", Some("1.0")),
        ("0x1_0p0", Some("16.0")),
        ("0x1__0p0", None),
        ("0x1p", None),
        ("0x1", None),
        ("0x.8p1", Some("1.0")),
        ("0x1p1_0", Some("1024.0")),
        ("1e-04", Some("0.0001")),
        ("1.1e-4", Some("0.00011")),
        ("1.1e-3", Some("0.0011")),
        ("1.1e-2", Some("0.011")),
        ("1e+05", Some("100000.0")),
        ("10000000000", Some("1e+10")),
        ("100000000000.0", Some("1e+11")),
        ("0.00000000001", Some("1e-11")),
        ("123456", Some("123456.0")),
        ("1234567", Some("1.234567e+06")),
        ("999999", Some("999999.0")),
        ("1e21", Some("1e+21")),
        ("1e20", Some("1e+20")),
        ("12345678901234567890", Some("1.2345678901234567e+19")),
        ("0.0001", Some("0.0001")),
        ("0.00001", Some("1e-05")),
        ("1e400", None),
        ("-1e400", None),
        ("1e-400", Some("0.0")),
        ("4.9e-324", Some("5e-324")),
        ("1.7976931348623157e308", Some("1.7976931348623157e+308")),
        ("1_000", Some("1000.0")),
        ("1.", Some("1.0")),
        (".5", Some("0.5")),
        ("+.5", Some("0.5")),
        ("+7", Some("7.0")),
        ("1e", None),
        ("e5", None),
        ("", None),
        (" 1", None),
        ("1 ", None),
        ("abc", None),
        ("0.1", Some("0.1")),
        ("0.3", Some("0.3")),
        ("1.5", Some("1.5")),
        ("100", Some("100.0")),
        ("3.14159", Some("3.14159")),
        ("-2.5e-7", Some("-2.5e-07")),
        ("5e-324", Some("5e-324")),
        ("0x1.fffffffffffffp1023", Some("1.7976931348623157e+308")),
        ("0x1p-1074", Some("5e-324")),
        ("0xffffffffffffffffffffffffffffffffp0", Some("3.402823669209385e+38")),
        ("0x1.00000000000000000000001p0", Some("1.0")),
        ("00012", Some("12.0")),
        ("1E5", Some("100000.0")),
        ("1e+5", Some("100000.0")),
        ("1e5", Some("100000.0")),
        ("-0.0", Some("0.0")),
        ("0.000123456789", Some("0.000123456789")),
    ];

    #[test]
    fn label_values_are_parsed_and_written_as_go_and_prometheus_3_do() {
        let mut wrong = Vec::new();
        for &(input, want) in GO {
            let got = parse_go_float(input).map(format_openmetrics_float);
            if got.as_deref() != want {
                wrong.push(format!("{input:?}: Go {want:?}, here {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn a_value_already_in_float_form_is_borrowed() {
        assert!(matches!(normalize(Cow::Borrowed("0.5")), Cow::Borrowed("0.5")));
        assert_eq!(normalize(Cow::Borrowed("1")), "1.0");
        assert_eq!(normalize(Cow::Borrowed("x")), "x");
    }
}
