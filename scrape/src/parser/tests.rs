//! Table tests for both formats, and properties: printed series parse back to themselves, and
//! no input makes the parser panic.

use proptest::prelude::*;

use super::*;

/// One entry as a line of text, to compare whole bodies against a table.
fn render(entry: &Entry<'_>) -> String {
    match entry {
        Entry::Series(s) => {
            let labels: Vec<String> = s.labels().map(|(n, v)| format!("{n}={v:?}")).collect();
            let ts = s.timestamp_ms.map(|t| format!(" @{t}")).unwrap_or_default();
            format!("{}{{{}}} {}{}", s.name(), labels.join(","), s.value, ts)
        }
        Entry::Metadata(Metadata::Help { name, text }) => format!("HELP {name} {text:?}"),
        Entry::Metadata(Metadata::Type { name, kind }) => format!("TYPE {name} {kind:?}"),
        Entry::Metadata(Metadata::Unit { name, unit }) => format!("UNIT {name} {unit}"),
    }
}

fn parse_all(body: &str, format: Format) -> Result<Vec<String>, ParseError> {
    Parser::new(body.as_bytes(), format).map(|e| e.map(|e| render(&e))).collect()
}

#[test]
fn text_format_table() {
    use Format::Text;
    let ok: &[(&str, &str, &[&str])] = &[
        ("bare name", "foo 1\n", &["foo{} 1"]),
        ("labels and timestamp", "foo{a=\"b\",c=\"d\"} 1.5 123\n", &["foo{a=\"b\",c=\"d\"} 1.5 @123"]),
        ("blanks between tokens", "foo { a = \"b\" ,\tc=\"d\" } \t 2  \n", &["foo{a=\"b\",c=\"d\"} 2"]),
        // Prometheus keeps leading blanks in the name; the scrape loop then refuses it.
        ("blanks before the name stay in it", "  foo 1\n", &["  foo{} 1"]),
        ("trailing comma", "foo{a=\"b\",} 1\n", &["foo{a=\"b\"} 1"]),
        ("empty label set", "foo{} 1\n", &["foo{} 1"]),
        ("value right after the brace", "foo{a=\"b\"}1\n", &["foo{a=\"b\"} 1"]),
        ("value right after the name", "foo.5\n", &["foo{} 0.5"]),
        ("colons in names", "a:b:c 1\n", &["a:b:c{} 1"]),
        ("escapes in values", r#"foo{a="x\\y\"z\nw"} 1"#, &["foo{a=\"x\\\\y\\\"z\\nw\"} 1"]),
        ("unknown escape kept as written", r#"foo{a="\t"} 1"#, &["foo{a=\"\\\\t\"} 1"]),
        ("utf-8 values", "foo{a=\"héllo ✓\"} 1", &["foo{a=\"héllo ✓\"} 1"]),
        ("NaN", "foo NaN\n", &["foo{} NaN"]),
        ("+Inf", "foo +Inf\n", &["foo{} inf"]),
        ("-Inf", "foo -Inf\n", &["foo{} -inf"]),
        ("exponent", "foo 1.5e3\n", &["foo{} 1500"]),
        ("no final newline", "a 1\nb 2", &["a{} 1", "b{} 2"]),
        ("empty and blank lines", "\na 1\n   \n\nb 2\n", &["a{} 1", "b{} 2"]),
        ("free comments", "# hello\n#HELP not metadata\n# HELPER x\na 1\n", &["a{} 1"]),
        ("EOF is a comment", "a 1\n# EOF\n", &["a{} 1"]),
        ("help", "# HELP foo Some help.\n", &["HELP foo \"Some help.\""]),
        ("help escapes", "# HELP foo a\\\\b\\nc\\\"d\n", &["HELP foo \"a\\\\b\\nc\\\\\\\"d\""]),
        ("help without text", "# HELP foo\n", &["HELP foo \"\""]),
        ("help with blanks", "  #  HELP\tfoo   x  y\n", &["HELP foo \"x  y\""]),
        (
            "every type",
            "# TYPE a counter\n# TYPE b gauge\n# TYPE c histogram\n# TYPE d summary\n# TYPE e untyped\n",
            &["TYPE a Counter", "TYPE b Gauge", "TYPE c Histogram", "TYPE d Summary", "TYPE e Unknown"],
        ),
        (
            "histogram family",
            "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
            &["TYPE h Histogram", "h_bucket{le=\"0.5\"} 1", "h_bucket{le=\"+Inf\"} 2", "h_sum{} 3", "h_count{} 2"],
        ),
        ("a _created series is kept", "# TYPE c counter\nc_created 1\n", &["TYPE c Counter", "c_created{} 1"]),
        // Prometheus's text lexer takes any byte but `\` and `"` in a quoted value.
        (
            "raw line feeds inside label values",
            "# TYPE a gauge\na{x=\"1\n2\",y=\"\n\"} 1\nb 2\n",
            &["TYPE a Gauge", "a{x=\"1\\n2\",y=\"\\n\"} 1", "b{} 2"],
        ),
    ];
    for (name, body, want) in ok {
        let got = parse_all(body, Text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, *want, "{name}");
    }

    type Kind = fn(&ParseErrorKind) -> bool;
    let bad: &[(&str, &str, usize, Kind)] = &[
        ("no value", "foo\n", 1, |k| *k == ParseErrorKind::ExpectedValue),
        ("no value after labels", "foo{a=\"b\"}\n", 1, |k| *k == ParseErrorKind::ExpectedValue),
        ("no name", "{a=\"b\"} 1\n", 1, |k| *k == ParseErrorKind::ExpectedMetricName),
        ("bad name char", "foo-bar 1\n", 1, |k| matches!(k, ParseErrorKind::InvalidValue(_))),
        ("bad label name", "foo{1a=\"b\"} 1\n", 1, |k| *k == ParseErrorKind::ExpectedLabelName),
        ("no equals", "foo{a \"b\"} 1\n", 1, |k| *k == ParseErrorKind::ExpectedEquals),
        ("unquoted value", "foo{a=b} 1\n", 1, |k| *k == ParseErrorKind::ExpectedLabelValue),
        ("unterminated value", "foo{a=\"b} 1\n", 1, |k| *k == ParseErrorKind::UnterminatedLabelValue),
        ("backslash at the end", "foo{a=\"b\\", 1, |k| *k == ParseErrorKind::UnterminatedLabelValue),
        ("escaped line feed", "foo{a=\"b\\\nc\"} 1\n", 1, |k| *k == ParseErrorKind::UnterminatedLabelValue),
        ("raw line feed, never closed", "a 1\nfoo{a=\"b\nc 1\nd 2\n", 2, |k| {
            *k == ParseErrorKind::UnterminatedLabelValue
        }),
        ("trailing blank after a type", "# TYPE foo gauge \n", 1, |k| {
            matches!(k, ParseErrorKind::InvalidMetricType(_))
        }),
        ("missing comma", "foo{a=\"b\" c=\"d\"} 1\n", 1, |k| *k == ParseErrorKind::ExpectedCommaOrBrace),
        ("unclosed set", "foo{a=\"b\"", 1, |k| *k == ParseErrorKind::ExpectedCommaOrBrace),
        ("bad value", "foo abc\n", 1, |k| matches!(k, ParseErrorKind::InvalidValue(_))),
        ("float timestamp", "foo 1 1.5\n", 1, |k| matches!(k, ParseErrorKind::InvalidTimestamp(_))),
        ("negative timestamp", "foo 1 -5\n", 1, |k| matches!(k, ParseErrorKind::InvalidTimestamp(_))),
        ("signed timestamp", "foo 1 +5\n", 1, |k| matches!(k, ParseErrorKind::InvalidTimestamp(_))),
        ("trailing data", "foo 1 2 3\n", 1, |k| matches!(k, ParseErrorKind::TrailingData(_))),
        ("exemplar in text", "foo 1 # {a=\"b\"} 1\n", 1, |k| matches!(k, ParseErrorKind::InvalidTimestamp(_))),
        ("carriage return", "foo 1\r\n", 1, |k| matches!(k, ParseErrorKind::InvalidValue(_))),
        ("line number", "a 1\n\n# c\nb 2\nc x\nd 4\n", 5, |k| matches!(k, ParseErrorKind::InvalidValue(_))),
        ("invalid type", "# TYPE foo gauges\n", 1, |k| matches!(k, ParseErrorKind::InvalidMetricType(_))),
        ("OpenMetrics type in text", "# TYPE foo info\n", 1, |k| matches!(k, ParseErrorKind::InvalidMetricType(_))),
        ("metadata without name", "# TYPE 1foo gauge\n", 1, |k| *k == ParseErrorKind::InvalidMetadata),
        ("type without type", "# TYPE foo\n", 1, |k| matches!(k, ParseErrorKind::InvalidMetricType(_))),
    ];
    for (name, body, line, kind) in bad {
        let err = parse_all(body, Text).expect_err(name);
        assert_eq!(err.line, *line, "{name}: {err}");
        assert!(kind(&err.kind), "{name}: {err}");
    }
}

#[test]
fn invalid_utf8_in_a_label_value_is_an_error() {
    let body = b"foo{a=\"\xff\"} 1\n";
    let err = Parser::new(body, Format::Text).next().unwrap().unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::InvalidUtf8);
    let body = b"# HELP foo \xff\n";
    let err = Parser::new(body, Format::Text).next().unwrap().unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::InvalidHelpUtf8);
}

#[test]
fn parsing_stops_after_the_first_error() {
    let mut p = Parser::new(b"a x\nb 1\n", Format::Text);
    assert!(p.next().unwrap().is_err());
    assert!(p.next().is_none());
}

#[test]
fn raw_series_is_the_name_and_label_set_as_written() {
    let body = b"foo{a=\"b\", } 1 2\nbar 3\n";
    let raws: Vec<&[u8]> = Parser::new(body, Format::Text)
        .filter_map(|e| match e.unwrap() {
            Entry::Series(s) => Some(s.raw()),
            _ => None,
        })
        .collect();
    assert_eq!(raws, [&b"foo{a=\"b\", }"[..], b"bar"]);
    let body = b"foo_total{a=\"b\"} 1 2.5 # {x=\"y\"} 1\n# EOF\n";
    let s = match Parser::new(body, Format::OpenMetrics).next().unwrap().unwrap() {
        Entry::Series(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.raw(), b"foo_total{a=\"b\"}");
    assert_eq!(s.line, 1);
    // A sample whose label value holds raw line feeds spans lines: its raw form keeps them and
    // the next sample's line number counts them.
    let body = b"a{x=\"1\n2\"} 1\nb 2\n";
    let lines: Vec<(Vec<u8>, usize)> = Parser::new(body, Format::Text)
        .filter_map(|e| match e.unwrap() {
            Entry::Series(s) => Some((s.raw().to_vec(), s.line)),
            _ => None,
        })
        .collect();
    assert_eq!(lines, [(b"a{x=\"1\n2\"}".to_vec(), 1), (b"b".to_vec(), 3)]);
}

#[test]
fn openmetrics_table() {
    use Format::OpenMetrics;
    let ok: &[(&str, &str, &[&str])] = &[
        (
            "a full family",
            "# HELP foo_seconds A counter.\n# TYPE foo_seconds counter\n# UNIT foo_seconds seconds\n\
             foo_seconds_total{a=\"b\"} 17 1520879607.789\n# EOF\n",
            &[
                "HELP foo_seconds \"A counter.\"",
                "TYPE foo_seconds Counter",
                "UNIT foo_seconds seconds",
                "foo_seconds_total{a=\"b\"} 17 @1520879607789",
            ],
        ),
        ("EOF without newline", "a 1\n# EOF", &["a{} 1"]),
        ("only EOF", "# EOF\n", &[]),
        ("integer seconds", "a 1 10\n# EOF\n", &["a{} 1 @10000"]),
        ("millisecond truncation", "a 1 1.0019\n# EOF\n", &["a{} 1 @1001"]),
        ("negative seconds", "a 1 -1.5\n# EOF\n", &["a{} 1 @-1500"]),
        ("seconds out of range", "a 1 12345678901234567890.1\n# EOF\n", &["a{} 1 @-9223372036854775808"]),
        ("NaN and infinities", "a NaN\nb +Inf\nc -Inf\n# EOF\n", &["a{} NaN", "b{} inf", "c{} -inf"]),
        ("empty label set", "a{} 1\n# EOF\n", &["a{} 1"]),
        ("escapes", "a{b=\"\\\"\\\\\\n\"} 1\n# EOF\n", &["a{b=\"\\\"\\\\\\n\"} 1"]),
        (
            "exemplar after the value",
            "# TYPE h histogram\nh_bucket{le=\"0.1\"} 8 # {trace_id=\"abc\"} 0.05 1520879607.7\n# EOF\n",
            &["TYPE h Histogram", "h_bucket{le=\"0.1\"} 8"],
        ),
        (
            "exemplar after the timestamp",
            "c_total 17 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n# EOF\n",
            &["c_total{} 17 @1520879607789"],
        ),
        ("exemplar with empty labels", "c_total 1 # {} 1\n# EOF\n", &["c_total{} 1"]),
        (
            "created series are ordinary samples, as in Prometheus",
            "# TYPE c counter\nc_total 1\nc_created 1.5e9\n# TYPE h histogram\nh_count 1\nh_created 1\n\
             # TYPE s summary\ns_count 1\ns_created 1\n# EOF\n",
            &[
                "TYPE c Counter",
                "c_total{} 1",
                "c_created{} 1500000000",
                "TYPE h Histogram",
                "h_count{} 1",
                "h_created{} 1",
                "TYPE s Summary",
                "s_count{} 1",
                "s_created{} 1",
            ],
        ),
        (
            "exemplars on _total and _bucket whatever the type",
            "# TYPE a gauge\na_total 1 # {x=\"1\"} 1\nb_bucket{le=\"1\"} 1 # {x=\"1\"} 1\n# EOF\n",
            &["TYPE a Gauge", "a_total{} 1", "b_bucket{le=\"1\"} 1"],
        ),
        ("empty help after the space", "# HELP a \n# EOF\n", &["HELP a \"\""]),
        ("empty unit after the space", "# UNIT a_seconds \n# EOF\n", &["UNIT a_seconds "]),
        ("unit as the name's suffix", "# UNIT a_seconds seconds\n# EOF\n", &["UNIT a_seconds seconds"]),
        (
            "a gauge named _created is kept",
            "# TYPE g_created gauge\ng_created 1\n# TYPE c counter\nc_created_total 2\n# EOF\n",
            &["TYPE g_created Gauge", "g_created{} 1", "TYPE c Counter", "c_created_total{} 2"],
        ),
        (
            "created series of another family is kept",
            "# TYPE c counter\nd_created 1\n# EOF\n",
            &["TYPE c Counter", "d_created{} 1"],
        ),
        (
            "OpenMetrics types",
            "# TYPE a info\n# TYPE b stateset\n# TYPE c gaugehistogram\n# TYPE d unknown\n# EOF\n",
            &["TYPE a Info", "TYPE b StateSet", "TYPE c GaugeHistogram", "TYPE d Unknown"],
        ),
        ("help with escaped quote", "# HELP a x\\\"y\n# EOF\n", &["HELP a \"x\\\"y\""]),
        // Prometheus 3 takes an exemplar on any sample (2.x failed the scrape on these).
        ("exemplar on a gauge", "# TYPE a gauge\na 1 # {x=\"1\"} 1\n# EOF\n", &["TYPE a Gauge", "a{} 1"]),
        ("exemplar on an info", "# TYPE a info\na_info 1 # {x=\"1\"} 1\n# EOF\n", &["TYPE a Info", "a_info{} 1"]),
        (
            "exemplar on a stateset",
            "# TYPE a stateset\na{a=\"x\"} 1 # {x=\"1\"} 1\n# EOF\n",
            &["TYPE a StateSet", "a{a=\"x\"} 1"],
        ),
        (
            "exemplar on a _sum and a _created",
            "# TYPE a histogram\na_sum 1 # {x=\"1\"} 1\n# TYPE c counter\nc_created 1 1 # {x=\"1\"} 1\n# EOF\n",
            &["TYPE a Histogram", "a_sum{} 1", "TYPE c Counter", "c_created{} 1 @1000"],
        ),
        ("trailing comma", "a{b=\"c\",} 1 # {x=\"1\",} 1\n# EOF\n", &["a{b=\"c\"} 1"]),
    ];
    for (name, body, want) in ok {
        let got = parse_all(body, OpenMetrics).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, *want, "{name}");
    }

    type Kind = fn(&ParseErrorKind) -> bool;
    let bad: &[(&str, &str, usize, Kind)] = &[
        ("missing EOF", "a 1\nb 2\n", 3, |k| *k == ParseErrorKind::MissingEof),
        // The scrape loop takes an empty body as an empty scrape before any parser sees it.
        ("empty body", "", 1, |k| *k == ParseErrorKind::MissingEof),
        ("data after EOF", "a 1\n# EOF\nb 2\n", 3, |k| *k == ParseErrorKind::DataAfterEof),
        ("blank line after EOF", "# EOF\n\n", 2, |k| *k == ParseErrorKind::DataAfterEof),
        ("empty line", "a 1\n\n# EOF\n", 2, |k| *k == ParseErrorKind::EmptyLine),
        ("free comment", "# hello\n# EOF\n", 1, |k| *k == ParseErrorKind::InvalidComment),
        ("untyped is text-only", "# TYPE a untyped\n# EOF\n", 1, |k| matches!(k, ParseErrorKind::InvalidMetricType(_))),
        ("two spaces before the value", "a  1\n# EOF\n", 1, |k| *k == ParseErrorKind::ExpectedValue),
        ("leading blank", " a 1\n# EOF\n", 1, |k| *k == ParseErrorKind::ExpectedMetricName),
        ("blank in a label set", "a{b=\"c\", d=\"e\"} 1\n# EOF\n", 1, |k| *k == ParseErrorKind::ExpectedLabelName),
        ("a lone comma", "a{,} 1\n# EOF\n", 1, |k| *k == ParseErrorKind::ExpectedLabelName),
        ("two trailing commas", "a{b=\"c\",,} 1\n# EOF\n", 1, |k| *k == ParseErrorKind::ExpectedLabelName),
        // The sample before the space counts (see `a_sample_counts_before_a_trailing_space`).
        ("trailing space", "a 1 \n# EOF\n", 1, |k| matches!(k, ParseErrorKind::TrailingData(_))),
        ("NaN timestamp", "a 1 NaN\n# EOF\n", 1, |k| matches!(k, ParseErrorKind::InvalidTimestamp(_))),
        ("infinite timestamp", "a 1 +Inf\n# EOF\n", 1, |k| matches!(k, ParseErrorKind::InvalidTimestamp(_))),
        ("exemplar without labels", "a_total 1 # 1\n# EOF\n", 1, |k| matches!(k, ParseErrorKind::TrailingData(_))),
        ("exemplar without value", "a_total 1 # {x=\"y\"}\n# EOF\n", 1, |k| *k == ParseErrorKind::InvalidExemplar),
        ("exemplar bad value", "a_total 1 # {x=\"y\"} z\n# EOF\n", 1, |k| *k == ParseErrorKind::InvalidExemplar),
        ("exemplar extra data", "a_total 1 # {x=\"y\"} 1 2 3\n# EOF\n", 1, |k| *k == ParseErrorKind::InvalidExemplar),
        ("exemplar bad labels", "a_total 1 # {x=y} 1\n# EOF\n", 1, |k| *k == ParseErrorKind::InvalidExemplar),
        ("bad metadata name", "# TYPE 9a gauge\n# EOF\n", 1, |k| *k == ParseErrorKind::InvalidMetadata),
        ("EOF with trailing blank", "# EOF \n", 1, |k| *k == ParseErrorKind::InvalidComment),
        ("cut short after a sample", "a 1\nb 2", 2, |k| *k == ParseErrorKind::MissingEof),
        ("space after the timestamp", "a 1 2 \n# EOF\n", 1, |k| matches!(k, ParseErrorKind::TrailingData(_))),
        ("NUL in an exemplar", "a_total 1 # {x=\"\0\"} 1\n# EOF\n", 1, |k| *k == ParseErrorKind::InvalidExemplar),
        ("raw line feed in a value", "a{x=\"1\n2\"} 1\n# EOF\n", 1, |k| *k == ParseErrorKind::UnterminatedLabelValue),
        ("help without text", "# HELP a\n# EOF\n", 1, |k| *k == ParseErrorKind::MissingMetadataText("HELP")),
        ("unit without text", "# UNIT a\n# EOF\n", 1, |k| *k == ParseErrorKind::MissingMetadataText("UNIT")),
        ("type without text", "# TYPE a\n# EOF\n", 1, |k| *k == ParseErrorKind::MissingMetadataText("TYPE")),
        ("type with a trailing space", "# TYPE a gauge \n# EOF\n", 1, |k| {
            matches!(k, ParseErrorKind::InvalidMetricType(_))
        }),
        ("unit not the suffix", "# UNIT a_seconds bytes\n# EOF\n", 1, |k| {
            matches!(k, ParseErrorKind::UnitNotSuffix(_))
        }),
        ("unit without underscore", "# UNIT aseconds seconds\n# EOF\n", 1, |k| {
            matches!(k, ParseErrorKind::UnitNotSuffix(_))
        }),
        ("unit with a trailing space", "# UNIT a_seconds seconds \n# EOF\n", 1, |k| {
            matches!(k, ParseErrorKind::UnitNotSuffix(_))
        }),
    ];
    for (name, body, line, kind) in bad {
        let err = parse_all(body, OpenMetrics).expect_err(name);
        assert_eq!(err.line, *line, "{name}: {err}");
        assert!(kind(&err.kind), "{name}: {err}");
    }
}

#[test]
fn a_sign_before_nan_is_refused_as_by_go() {
    for body in ["a -NaN\n", "a +nan\n"] {
        let err = parse_all(body, Format::Text).unwrap_err();
        assert!(matches!(err.kind, ParseErrorKind::InvalidValue(_)), "{body:?}: {err}");
    }
    assert_eq!(parse_all("a nan\nb -Inf\nc +infinity\n", Format::Text).unwrap(), ["a{} NaN", "b{} -inf", "c{} inf"]);
}

#[test]
fn the_accept_header_prefers_openmetrics() {
    assert!(ACCEPT_HEADER.starts_with("application/openmetrics-text;version=1.0.0"));
}

#[test]
fn le_and_quantile_are_written_in_float_form_under_their_types_as_prometheus_3() {
    for format in [Format::Text, Format::OpenMetrics] {
        let eof = if format == Format::OpenMetrics { "# EOF\n" } else { "" };
        let body = format!(
            "# TYPE h histogram\nh_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"0x1p-3\"}} 1\nh_bucket{{le=\"+INF\"}} 1\n\
             h_bucket{{le=\"x\",quantile=\"1\"}} 1\n\
             # TYPE s summary\ns{{quantile=\"0\",le=\"1\"}} 1\nother{{quantile=\"1e+05\"}} 1\n\
             # TYPE g gauge\ng{{le=\"1\",quantile=\"1\"}} 1\n{eof}"
        );
        let got = parse_all(&body, format).unwrap();
        let series: Vec<&String> = got.iter().filter(|l| !l.starts_with("TYPE")).collect();
        assert_eq!(
            series,
            [
                "h_bucket{le=\"1.0\"} 1",
                "h_bucket{le=\"0.125\"} 1",
                "h_bucket{le=\"+Inf\"} 1",
                "h_bucket{le=\"x\",quantile=\"1\"} 1",
                "s{quantile=\"0.0\",le=\"1\"} 1",
                // The type of the last TYPE line counts, whatever name it carries.
                "other{quantile=\"100000.0\"} 1",
                "g{le=\"1\",quantile=\"1\"} 1",
            ],
            "{format:?}"
        );
    }
    // A gauge histogram's `le` is kept as written.
    let got = parse_all("# TYPE g gaugehistogram\ng_bucket{le=\"1\"} 1\n# EOF\n", Format::OpenMetrics).unwrap();
    assert_eq!(got[1], "g_bucket{le=\"1\"} 1");
}

#[test]
fn a_sample_counts_before_a_trailing_space() {
    // Prometheus 3 returns the sample, then fails on what follows: the scrape fails with one
    // sample scraped.
    for body in ["a 1 \n# EOF\n", "a 1  2\n# EOF\n"] {
        let mut parser = Parser::new(body.as_bytes(), Format::OpenMetrics);
        assert!(matches!(parser.next(), Some(Ok(Entry::Series(_)))), "{body:?}");
        let err = parser.next().unwrap().unwrap_err();
        assert!(matches!(err.kind, ParseErrorKind::TrailingData(_)), "{body:?}: {err}");
        assert!(parser.next().is_none());
    }
}

// ---- properties ----

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn print_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

fn print(samples: &[Sample], format: Format) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&s.name);
        if !s.labels.is_empty() || s.name.len() % 2 == 0 {
            let labels: Vec<String> = s.labels.iter().map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect();
            out.push_str(&format!("{{{}}}", labels.join(",")));
        }
        out.push(' ');
        out.push_str(&print_value(s.value));
        match (s.timestamp_ms, format) {
            (Some(ts), Format::Text) => out.push_str(&format!(" {ts}")),
            (Some(ts), Format::OpenMetrics) => out.push_str(&format!(" {}", ts / 1000)),
            (None, _) => {}
        }
        out.push('\n');
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn sample_strategy() -> impl Strategy<Value = Sample> {
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
        proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "(\\PC|[\\\\\"\n])*"), 0..5),
        prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        // Text timestamps are digits only (no sign), as in Prometheus.
        proptest::option::of(0i64..4_000_000_000_000),
    )
        .prop_map(|(name, labels, value, timestamp_ms)| Sample { name, labels, value, timestamp_ms })
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

proptest! {
    #[test]
    fn printed_series_parse_back_to_themselves(samples in proptest::collection::vec(sample_strategy(), 0..20)) {
        for format in [Format::Text, Format::OpenMetrics] {
            let body = print(&samples, format);
            let parsed: Vec<Entry<'_>> = Parser::new(body.as_bytes(), format)
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("{format:?}: {e}\n{body}")))?;
            prop_assert_eq!(parsed.len(), samples.len());
            for (want, got) in samples.iter().zip(&parsed) {
                let Entry::Series(got) = got else { return Err(TestCaseError::fail("not a series")) };
                prop_assert_eq!(got.name(), want.name.as_str());
                let labels: Vec<(String, String)> =
                    got.labels().map(|(n, v)| (n.to_string(), v.into_owned())).collect();
                prop_assert_eq!(&labels, &want.labels);
                prop_assert!(same_value(got.value, want.value), "{} vs {}", got.value, want.value);
                let want_ts = match format {
                    Format::Text => want.timestamp_ms,
                    Format::OpenMetrics => want.timestamp_ms.map(|t| t / 1000 * 1000),
                };
                prop_assert_eq!(got.timestamp_ms, want_ts);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for format in [Format::Text, Format::OpenMetrics] {
            exhaust(&body, format);
        }
    }

    #[test]
    fn random_token_soup_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("foo"), Just("{"), Just("}"), Just("a"), Just("="), Just("\""), Just("\\"), Just(","),
        Just(" "), Just("\t"), Just("\n"), Just("#"), Just("# HELP "), Just("# TYPE "), Just("# EOF"),
        Just("counter"), Just("1"), Just("1.5"), Just("NaN"), Just("+Inf"), Just("_created"), Just("é"),
    ], 0..64)) {
        let body = parts.concat();
        for format in [Format::Text, Format::OpenMetrics] {
            exhaust(body.as_bytes(), format);
        }
    }
}

/// Reads every entry and every label, as the scrape loop would.
fn exhaust(body: &[u8], format: Format) {
    for entry in Parser::new(body, format) {
        if let Ok(Entry::Series(s)) = entry {
            for (name, value) in s.labels() {
                assert!(is_valid_label_name(name));
                let _ = value.len();
            }
        }
    }
}
