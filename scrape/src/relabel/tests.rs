//! One row per behaviour of Prometheus's relabeling, written from the spec.

use lgtm_config::RelabelConfig;

use super::*;

/// A rule from its YAML form (only the fields a row sets).
fn rule(yaml: &[(&str, &str)]) -> RelabelConfig {
    let mut c = RelabelConfig::default();
    for (k, v) in yaml {
        match *k {
            "source_labels" => c.source_labels = v.split(',').map(str::to_string).collect(),
            "separator" => c.separator = Some(v.to_string()),
            "target_label" => c.target_label = Some(v.to_string()),
            "regex" => c.regex = Some(v.to_string()),
            "modulus" => c.modulus = Some(v.parse().unwrap()),
            "replacement" => c.replacement = Some(v.to_string()),
            "action" => c.action = Some(v.to_string()),
            other => panic!("unknown field {other}"),
        }
    }
    c
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::from_pairs(pairs.iter().copied())
}

struct Row {
    name: &'static str,
    input: &'static [(&'static str, &'static str)],
    rules: Vec<RelabelConfig>,
    /// `None`: dropped.
    output: Option<&'static [(&'static str, &'static str)]>,
}

fn rows() -> Vec<Row> {
    let abc: &'static [(&str, &str)] = &[("a", "foo"), ("b", "bar"), ("c", "baz")];
    vec![
        Row {
            name: "replace with a capture group, ${1} twice",
            input: abc,
            rules: vec![rule(&[
                ("source_labels", "a"),
                ("regex", "f(.*)"),
                ("target_label", "d"),
                ("replacement", "ch${1}-ch${1}"),
            ])],
            output: Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]),
        },
        Row {
            name: "rules apply in order, each seeing the previous result",
            input: abc,
            rules: vec![
                rule(&[
                    ("source_labels", "a,b"),
                    ("regex", "f(.*);(.*)r"),
                    ("target_label", "a"),
                    ("replacement", "b${1}${2}m"),
                ]),
                rule(&[
                    ("source_labels", "c,a"),
                    ("regex", "(b).*b(.*)ba(.*)"),
                    ("target_label", "d"),
                    ("replacement", "$1$2$2$3"),
                ]),
            ],
            output: Some(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")]),
        },
        Row {
            name: "replace without a match changes nothing",
            input: abc,
            rules: vec![rule(&[("source_labels", "a"), ("regex", "x(.*)"), ("target_label", "d")])],
            output: Some(abc),
        },
        Row {
            name: "regex is anchored: a partial match is no match",
            input: abc,
            rules: vec![rule(&[
                ("source_labels", "a"),
                ("regex", "o+"),
                ("target_label", "d"),
                ("replacement", "hit"),
            ])],
            output: Some(abc),
        },
        Row {
            name: "regex . matches newlines (?s)",
            input: &[("a", "x\ny")],
            rules: vec![rule(&[
                ("source_labels", "a"),
                ("regex", "x.y"),
                ("target_label", "d"),
                ("replacement", "hit"),
            ])],
            output: Some(&[("a", "x\ny"), ("d", "hit")]),
        },
        Row {
            name: "replace producing an empty value deletes the target label",
            input: abc,
            rules: vec![rule(&[("source_labels", "missing"), ("target_label", "a")])],
            output: Some(&[("b", "bar"), ("c", "baz")]),
        },
        Row {
            name: "a static replacement with the default regex always applies",
            input: abc,
            rules: vec![rule(&[("target_label", "env"), ("replacement", "prod")])],
            output: Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("env", "prod")]),
        },
        Row {
            name: "a missing source label joins as the empty string",
            input: abc,
            rules: vec![rule(&[("source_labels", "a,missing,b"), ("target_label", "d")])],
            output: Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "foo;;bar")]),
        },
        Row {
            name: "custom separator",
            input: abc,
            rules: vec![rule(&[("source_labels", "a,b"), ("separator", "-"), ("target_label", "d")])],
            output: Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "foo-bar")]),
        },
        Row {
            name: "target label from a template",
            input: &[("a", "some-name-value")],
            rules: vec![rule(&[
                ("source_labels", "a"),
                ("regex", "some-([^-]+)-([^,]+)"),
                ("target_label", "${1}"),
                ("replacement", "${2}"),
            ])],
            output: Some(&[("a", "some-name-value"), ("name", "value")]),
        },
        Row {
            name: "a template target that is not a valid label name is skipped",
            input: &[("a", "some-1name-value")],
            rules: vec![rule(&[
                ("source_labels", "a"),
                ("regex", "some-([^-]+)-([^,]+)"),
                ("target_label", "${1}"),
                ("replacement", "${2}"),
            ])],
            output: Some(&[("a", "some-1name-value")]),
        },
        Row {
            name: "a template target expanding to nothing is skipped",
            input: &[("a", "v")],
            rules: vec![rule(&[("source_labels", "a"), ("target_label", "${3}"), ("replacement", "x")])],
            output: Some(&[("a", "v")]),
        },
        Row {
            name: "named groups with $name and ${name}",
            input: &[("a", "foo")],
            rules: vec![rule(&[
                ("source_labels", "a"),
                ("regex", "(?P<first>f)(?P<rest>.*)"),
                ("target_label", "d"),
                ("replacement", "$rest-${first}"),
            ])],
            output: Some(&[("a", "foo"), ("d", "oo-f")]),
        },
        Row {
            name: "$1a names the group 1a, which expands to nothing and deletes",
            input: &[("a", "foo"), ("d", "old")],
            rules: vec![rule(&[("source_labels", "a"), ("target_label", "d"), ("replacement", "$1a")])],
            output: Some(&[("a", "foo")]),
        },
        Row {
            name: "$$ is a literal dollar",
            input: &[("a", "foo")],
            rules: vec![rule(&[("source_labels", "a"), ("target_label", "d"), ("replacement", "$$${1}")])],
            output: Some(&[("a", "foo"), ("d", "$foo")]),
        },
        Row {
            name: "action names ignore case",
            input: abc,
            rules: vec![rule(&[("source_labels", "a"), ("regex", "foo"), ("action", "DROP")])],
            output: None,
        },
        Row {
            name: "drop when the regex matches",
            input: abc,
            rules: vec![rule(&[("source_labels", "a"), ("regex", ".*o.*"), ("action", "drop")])],
            output: None,
        },
        Row {
            name: "drop keeps what does not match",
            input: abc,
            rules: vec![rule(&[("source_labels", "a"), ("regex", "f"), ("action", "drop")])],
            output: Some(abc),
        },
        Row {
            name: "drop on joined sources",
            input: abc,
            rules: vec![rule(&[("source_labels", "a,b"), ("regex", "foo;bar"), ("action", "drop")])],
            output: None,
        },
        Row {
            name: "keep when the regex matches",
            input: abc,
            rules: vec![rule(&[("source_labels", "a"), ("regex", "f.*"), ("action", "keep")])],
            output: Some(abc),
        },
        Row {
            name: "keep drops what does not match",
            input: abc,
            rules: vec![rule(&[("source_labels", "a"), ("regex", "f"), ("action", "keep")])],
            output: None,
        },
        Row {
            name: "keep with an empty regex keeps only a missing label",
            input: abc,
            rules: vec![rule(&[("source_labels", "missing"), ("regex", ""), ("action", "keep")])],
            output: Some(abc),
        },
        Row {
            name: "keep with an empty regex drops a present label",
            input: abc,
            rules: vec![rule(&[("source_labels", "a"), ("regex", ""), ("action", "keep")])],
            output: None,
        },
        Row {
            name: "a drop stops the remaining rules",
            input: abc,
            rules: vec![
                rule(&[("source_labels", "a"), ("regex", "foo"), ("action", "drop")]),
                rule(&[("target_label", "x"), ("replacement", "y")]),
            ],
            output: None,
        },
        Row {
            name: "keepequal keeps equal values",
            input: &[("a", "1"), ("b", "1")],
            rules: vec![rule(&[("source_labels", "a"), ("target_label", "b"), ("action", "keepequal")])],
            output: Some(&[("a", "1"), ("b", "1")]),
        },
        Row {
            name: "keepequal drops different values",
            input: &[("a", "1"), ("b", "2")],
            rules: vec![rule(&[("source_labels", "a"), ("target_label", "b"), ("action", "keepequal")])],
            output: None,
        },
        Row {
            name: "keepequal treats two missing labels as equal",
            input: &[("a", "1")],
            rules: vec![rule(&[("source_labels", "x"), ("target_label", "y"), ("action", "keepequal")])],
            output: Some(&[("a", "1")]),
        },
        Row {
            name: "keepequal compares the joined sources",
            input: &[("a", "1"), ("b", "2"), ("c", "1;2")],
            rules: vec![rule(&[("source_labels", "a,b"), ("target_label", "c"), ("action", "keepequal")])],
            output: Some(&[("a", "1"), ("b", "2"), ("c", "1;2")]),
        },
        Row {
            name: "dropequal drops equal values",
            input: &[("a", "1"), ("b", "1")],
            rules: vec![rule(&[("source_labels", "a"), ("target_label", "b"), ("action", "dropequal")])],
            output: None,
        },
        Row {
            name: "dropequal keeps different values",
            input: &[("a", "1"), ("b", "2")],
            rules: vec![rule(&[("source_labels", "a"), ("target_label", "b"), ("action", "dropequal")])],
            output: Some(&[("a", "1"), ("b", "2")]),
        },
        Row {
            name: "hashmod: md5, last 8 bytes big-endian, modulo",
            input: abc,
            rules: vec![rule(&[
                ("source_labels", "c"),
                ("target_label", "d"),
                ("modulus", "1000"),
                ("action", "hashmod"),
            ])],
            output: Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
        },
        Row {
            name: "hashmod of joined sources",
            input: abc,
            rules: vec![rule(&[
                ("source_labels", "a,b"),
                ("target_label", "d"),
                ("modulus", "1000"),
                ("action", "hashmod"),
            ])],
            output: Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "750")]),
        },
        Row {
            name: "hashmod with a modulus above 2^32",
            input: &[("a", "hashme")],
            rules: vec![rule(&[
                ("source_labels", "a"),
                ("target_label", "d"),
                ("modulus", "9223372036854775808"),
                ("action", "hashmod"),
            ])],
            output: Some(&[("a", "hashme"), ("d", "6421962763590832760")]),
        },
        Row {
            name: "hashmod of a missing label hashes the empty string",
            input: &[("a", "x")],
            rules: vec![rule(&[
                ("source_labels", "missing"),
                ("target_label", "d"),
                ("modulus", "7"),
                ("action", "hashmod"),
            ])],
            output: Some(&[("a", "x"), ("d", "1")]),
        },
        Row {
            name: "hashmod then keep: sharding",
            input: abc,
            rules: vec![
                rule(&[
                    ("source_labels", "c"),
                    ("target_label", "__tmp_hash"),
                    ("modulus", "1000"),
                    ("action", "hashmod"),
                ]),
                rule(&[("source_labels", "__tmp_hash"), ("regex", "975"), ("action", "keep")]),
            ],
            output: None,
        },
        Row {
            name: "labelmap copies matching labels under the expanded name",
            input: &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            rules: vec![rule(&[("regex", "(b.*)"), ("replacement", "bar_${1}"), ("action", "labelmap")])],
            output: Some(&[("a", "foo"), ("b1", "bar"), ("b2", "baz"), ("bar_b1", "bar"), ("bar_b2", "baz")]),
        },
        Row {
            name: "labelmap of __meta_ labels",
            input: &[("__meta_my_bar", "aaa"), ("__meta_my_baz", "bbb"), ("__meta_other", "ccc")],
            rules: vec![rule(&[("regex", "__meta_(my.*)"), ("replacement", "${1}"), ("action", "labelmap")])],
            output: Some(&[
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc"),
                ("my_bar", "aaa"),
                ("my_baz", "bbb"),
            ]),
        },
        Row {
            name: "labelmap overwrites an existing label",
            input: &[("a", "foo"), ("b", "bar")],
            rules: vec![rule(&[("regex", "b"), ("replacement", "a"), ("action", "labelmap")])],
            output: Some(&[("a", "bar"), ("b", "bar")]),
        },
        Row {
            name: "labelmap with the default replacement copies to the name itself",
            input: &[("a", "foo")],
            rules: vec![rule(&[("regex", "a"), ("action", "labelmap")])],
            output: Some(&[("a", "foo")]),
        },
        Row {
            name: "labelmap matches names as they were before the rule",
            input: &[("a", "1"), ("b", "2")],
            rules: vec![rule(&[("regex", "(.)"), ("replacement", "x${1}"), ("action", "labelmap")])],
            output: Some(&[("a", "1"), ("b", "2"), ("xa", "1"), ("xb", "2")]),
        },
        Row {
            name: "labeldrop removes matching names",
            input: &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            rules: vec![rule(&[("regex", "(b.*)"), ("action", "labeldrop")])],
            output: Some(&[("a", "foo")]),
        },
        Row {
            name: "labeldrop is anchored",
            input: &[("b", "x"), ("b1", "y"), ("ab", "z")],
            rules: vec![rule(&[("regex", "b"), ("action", "labeldrop")])],
            output: Some(&[("ab", "z"), ("b1", "y")]),
        },
        Row {
            name: "labelkeep keeps only matching names",
            input: &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            rules: vec![rule(&[("regex", "(b.*)"), ("action", "labelkeep")])],
            output: Some(&[("b1", "bar"), ("b2", "baz")]),
        },
        Row {
            name: "labelkeep of nothing leaves an empty set (not a drop)",
            input: &[("a", "foo")],
            rules: vec![rule(&[("regex", "zzz"), ("action", "labelkeep")])],
            output: Some(&[]),
        },
        Row {
            name: "lowercase",
            input: &[("foo", "BAR-Baz")],
            rules: vec![rule(&[("source_labels", "foo"), ("target_label", "foo_lower"), ("action", "lowercase")])],
            output: Some(&[("foo", "BAR-Baz"), ("foo_lower", "bar-baz")]),
        },
        Row {
            name: "uppercase of joined sources",
            input: &[("a", "x"), ("b", "y")],
            rules: vec![rule(&[("source_labels", "a,b"), ("target_label", "u"), ("action", "uppercase")])],
            output: Some(&[("a", "x"), ("b", "y"), ("u", "X;Y")]),
        },
        Row {
            name: "lowercase of a missing label deletes the target",
            input: &[("a", "x"), ("t", "old")],
            rules: vec![rule(&[("source_labels", "missing"), ("target_label", "t"), ("action", "lowercase")])],
            output: Some(&[("a", "x")]),
        },
        Row {
            name: "replace can set and then rename via labelmap and labeldrop",
            input: &[("__address__", "10.0.0.1:9100"), ("__meta_pod", "p")],
            rules: vec![
                rule(&[("source_labels", "__address__"), ("regex", "([^:]+):.*"), ("target_label", "host")]),
                rule(&[("regex", "__meta_(.+)"), ("action", "labelmap")]),
                rule(&[("regex", "__meta_.+"), ("action", "labeldrop")]),
            ],
            output: Some(&[("__address__", "10.0.0.1:9100"), ("host", "10.0.0.1"), ("pod", "p")]),
        },
    ]
}

#[test]
fn relabeling_table() {
    for row in rows() {
        let relabeler = Relabeler::compile(&row.rules).unwrap_or_else(|e| panic!("{}: {e}", row.name));
        let mut set = labels(row.input);
        let kept = relabeler.process(&mut set);
        match row.output {
            None => assert!(!kept, "{}: expected a drop, got {set}", row.name),
            Some(want) => {
                assert!(kept, "{}: dropped", row.name);
                assert_eq!(set, labels(want), "{}", row.name);
            }
        }
    }
}

#[test]
fn invalid_rules_name_the_field() {
    type Fields = &'static [(&'static str, &'static str)];
    let table: &[(&str, Fields, &str)] = &[
        ("unknown action", &[("action", "explode")], "action"),
        ("hashmod without modulus", &[("source_labels", "a"), ("target_label", "b"), ("action", "hashmod")], "modulus"),
        ("hashmod with zero modulus", &[("target_label", "b"), ("modulus", "0"), ("action", "hashmod")], "modulus"),
        ("replace without target", &[("source_labels", "a")], "target_label"),
        ("replace with an invalid target", &[("source_labels", "a"), ("target_label", "1abc")], "target_label"),
        (
            "hashmod with a template target",
            &[("target_label", "${1}"), ("modulus", "2"), ("action", "hashmod")],
            "target_label",
        ),
        ("lowercase without target", &[("source_labels", "a"), ("action", "lowercase")], "target_label"),
        ("uppercase with an invalid target", &[("target_label", "a-b"), ("action", "uppercase")], "target_label"),
        (
            "lowercase with a replacement",
            &[("target_label", "a"), ("replacement", "x"), ("action", "lowercase")],
            "replacement",
        ),
        ("keepequal without target", &[("source_labels", "a"), ("action", "keepequal")], "target_label"),
        (
            "keepequal with a regex",
            &[("source_labels", "a"), ("target_label", "b"), ("regex", "x"), ("action", "keepequal")],
            "regex",
        ),
        (
            "dropequal with a separator",
            &[("source_labels", "a"), ("target_label", "b"), ("separator", ","), ("action", "dropequal")],
            "separator",
        ),
        (
            "dropequal with a replacement",
            &[("source_labels", "a"), ("target_label", "b"), ("replacement", "x"), ("action", "dropequal")],
            "replacement",
        ),
        (
            "labelmap with an invalid replacement",
            &[("regex", "(.*)"), ("replacement", "a-$1"), ("action", "labelmap")],
            "replacement",
        ),
        (
            "labeldrop with source labels",
            &[("source_labels", "a"), ("regex", "a"), ("action", "labeldrop")],
            "source_labels",
        ),
        ("labelkeep with a target", &[("target_label", "a"), ("regex", "a"), ("action", "labelkeep")], "target_label"),
        (
            "labeldrop with a replacement",
            &[("replacement", "x"), ("regex", "a"), ("action", "labeldrop")],
            "replacement",
        ),
        ("labelkeep with a modulus", &[("modulus", "3"), ("regex", "a"), ("action", "labelkeep")], "modulus"),
        ("invalid regex", &[("source_labels", "a"), ("regex", "(unclosed"), ("action", "keep")], "regex"),
        ("invalid source label", &[("source_labels", "a-b"), ("action", "keep")], "source_labels"),
    ];
    for (name, fields, field) in table {
        let configs = vec![rule(&[("action", "keep")]), rule(fields)];
        let err = Relabeler::compile(&configs).expect_err(name);
        assert_eq!(err.index, 1, "{name}");
        assert_eq!(err.field, *field, "{name}: {err}");
        assert!(err.to_string().starts_with(&format!("relabel rule 1: {field}: ")), "{name}: {err}");
    }
}

#[test]
fn defaults_spelled_out_are_accepted() {
    let configs = vec![
        rule(&[
            ("source_labels", "a"),
            ("target_label", "b"),
            ("separator", ";"),
            ("regex", "(.*)"),
            ("replacement", "$1"),
            ("action", "keepequal"),
        ]),
        rule(&[("regex", "x"), ("separator", ";"), ("replacement", "$1"), ("modulus", "0"), ("action", "labeldrop")]),
        rule(&[("target_label", "${1}"), ("action", "replace")]),
    ];
    Relabeler::compile(&configs).unwrap();
}

#[test]
fn empty_relabeler_keeps_everything() {
    let r = Relabeler::compile(&[]).unwrap();
    assert!(r.is_empty());
    let mut set = labels(&[("a", "b")]);
    assert!(r.process(&mut set));
    assert_eq!(set, labels(&[("a", "b")]));
}
