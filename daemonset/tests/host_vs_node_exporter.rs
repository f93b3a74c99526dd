//! Host metrics side by side with the real node_exporter on this machine.
//!
//! Starts `/usr/bin/prometheus-node-exporter` (Debian's package; `NODE_EXPORTER` overrides the
//! path) on a free loopback port with only the collectors we cover, and with upstream's default
//! exclude patterns (Debian patches them), then compares its `/metrics` with our rendering of `/`:
//!
//! - the same metric names, types, help texts and series (label sets, label values included),
//!   apart from the documented [`EXCEPTIONS`];
//! - equal values for static facts: MemTotal, SwapTotal, filesystem sizes and inodes, number of
//!   CPUs, boot time, time zone offset;
//! - every counter of ours lies between node_exporter's value fetched just before and just after
//!   our collection, within a tolerance of 5% plus 2 s for CPU seconds (plus 0 elsewhere).
//!
//! Without node_exporter the test prints `SKIP: ...` and passes, unless `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lgtm_daemonset::host;

/// Families allowed to exist on one side only, and why.
const EXCEPTIONS: &[(&str, &str)] = &[(
    "node_exporter_build_info",
    "identifies the node_exporter build; the agent reports its own build info elsewhere",
)];

/// Our collectors, by node_exporter's names (also the flags that enable them).
const COLLECTORS: &[&str] =
    &["cpu", "diskstats", "filesystem", "loadavg", "meminfo", "netdev", "stat", "time", "uname"];

type SeriesKey = (String, Vec<(String, String)>);

#[derive(Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    series: BTreeMap<SeriesKey, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                e.types.insert(name.to_string(), kind.to_string());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                e.helps.insert(name.to_string(), help.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let (key, value) = parse_sample(line);
                assert!(e.series.insert(key.clone(), value).is_none(), "duplicate series {key:?}");
            }
        }
        e
    }

    fn family_names(&self) -> BTreeSet<&str> {
        self.series.keys().map(|(n, _)| n.as_str()).collect()
    }

    fn node_series(&self) -> BTreeSet<&SeriesKey> {
        self.series.keys().filter(|(n, _)| n.starts_with("node_") && !is_exception(n)).collect()
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a SeriesKey, f64)> + 'a {
        self.series.iter().filter(move |((n, _), _)| n == name).map(|(k, v)| (k, *v))
    }
}

fn is_exception(name: &str) -> bool {
    EXCEPTIONS.iter().any(|(n, _)| *n == name)
}

/// `name{a="b",c="d"} value [timestamp]`, with label values unescaped.
fn parse_sample(line: &str) -> (SeriesKey, f64) {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => panic!("sample without value: {line}"),
    };
    let mut labels = Vec::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                if c == '}' && key.is_empty() {
                    end = Some(i + 1);
                    break;
                }
                if c == '=' {
                    break;
                }
                if c != ',' {
                    key.push(c);
                }
            }
            if end.is_some() {
                break;
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("dangling escape: {line}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(i + 1);
                    break;
                }
                Some((_, ',')) => {
                    chars.next();
                    if let Some((i, '}')) = chars.peek() {
                        end = Some(i + 1);
                        break;
                    }
                }
                other => panic!("unexpected {other:?} in {line}"),
            }
        }
        &body[end.expect("closing brace")..]
    } else {
        rest
    };
    let value = rest.split_ascii_whitespace().next().expect("value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    labels.sort();
    ((name.to_string(), labels), value)
}

struct NodeExporter {
    child: Child,
    port: u16,
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeExporter {
    fn start(binary: &Path) -> NodeExporter {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .args(COLLECTORS.iter().map(|c| format!("--collector.{c}")))
            // Upstream defaults (Debian's package patches these), i.e. what we implement.
            .arg(format!("--collector.filesystem.mount-points-exclude={}", host::filesystem::MOUNT_POINTS_EXCLUDE))
            .arg(format!("--collector.filesystem.fs-types-exclude={}", host::filesystem::FS_TYPES_EXCLUDE))
            .arg(format!("--collector.diskstats.device-exclude={}", host::diskstats::DEVICE_EXCLUDE))
            .arg("--collector.netdev.device-exclude=")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start node_exporter");
        let ne = NodeExporter { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if ne.try_fetch().is_some() {
                return ne;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node_exporter did not answer on 127.0.0.1:{port} within 15 s");
    }

    fn try_fetch(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n").ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let ok = head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200");
        ok.then(|| body.to_string())
    }

    fn fetch(&self) -> Exposition {
        Exposition::parse(&self.try_fetch().expect("node_exporter /metrics"))
    }
}

fn node_exporter_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NODE_EXPORTER") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/prometheus-node-exporter", "/usr/bin/node_exporter", "/usr/local/bin/node_exporter"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn host_metrics_match_node_exporter_on_this_machine() {
    let Some(binary) = node_exporter_binary() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("node_exporter is not installed (apt-get install prometheus-node-exporter)");
        }
        println!("SKIP: node_exporter not installed (Debian package prometheus-node-exporter)");
        return;
    };
    let ne = NodeExporter::start(&binary);

    let before = ne.fetch();
    let mut text = String::new();
    host::render_text(Path::new("/"), &mut text).expect("render /");
    let after = ne.fetch();
    let ours = Exposition::parse(&text);

    // Names, types and help texts.
    let theirs_names: BTreeSet<&str> = before.family_names().into_iter().filter(|n| n.starts_with("node_")).collect();
    let ours_names = ours.family_names();
    for (name, why) in EXCEPTIONS {
        println!("exception: {name}: {why}");
    }
    let missing: Vec<_> = theirs_names.difference(&ours_names).filter(|n| !is_exception(n)).collect();
    let extra: Vec<_> = ours_names.difference(&theirs_names).filter(|n| !is_exception(n)).collect();
    assert!(missing.is_empty(), "families only node_exporter has: {missing:?}");
    assert!(extra.is_empty(), "families only we have: {extra:?}");
    for name in &ours_names {
        assert_eq!(ours.types.get(*name), before.types.get(*name), "TYPE of {name}");
        assert_eq!(ours.helps.get(*name), before.helps.get(*name), "HELP of {name}");
    }
    println!("{} families with the same name, type and help", ours_names.len());

    // Series: the same label sets. A series present in both of node_exporter's scrapes must be
    // ours too, and ours must be in at least one of theirs (devices may come and go).
    let (ours_series, before_series, after_series) = (ours.node_series(), before.node_series(), after.node_series());
    let stable: BTreeSet<_> = before_series.intersection(&after_series).collect();
    let missing: Vec<_> = stable.iter().filter(|k| !ours_series.contains(**k)).collect();
    let extra: Vec<_> =
        ours_series.iter().filter(|k| !before_series.contains(*k) && !after_series.contains(*k)).collect();
    assert!(missing.is_empty(), "series only node_exporter has: {missing:#?}");
    assert!(extra.is_empty(), "series only we have: {extra:#?}");
    println!("{} series with the same labels", ours_series.len());

    // Static facts: equal values.
    let mut facts = 0;
    for name in [
        "node_memory_MemTotal_bytes",
        "node_memory_SwapTotal_bytes",
        "node_boot_time_seconds",
        "node_filesystem_size_bytes",
        "node_filesystem_files",
        "node_filesystem_readonly",
        "node_filesystem_device_error",
        "node_time_zone_offset_seconds",
        "node_uname_info",
        "node_disk_info",
    ] {
        for (key, v) in ours.values(name) {
            let theirs = before.series.get(key).copied();
            assert_eq!(Some(v), theirs, "{key:?}");
            facts += 1;
        }
    }
    let cpus = |e: &Exposition| -> BTreeSet<String> {
        e.values("node_cpu_seconds_total")
            .flat_map(|((_, labels), _)| labels.iter().filter(|(k, _)| k == "cpu").map(|(_, v)| v.clone()))
            .collect()
    };
    assert_eq!(cpus(&ours), cpus(&before), "CPUs");
    // Affinity or a cgroup quota can only lower what this process may use, never raise it.
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus(&ours).len() >= usable, "fewer CPUs than usable: {:?}", cpus(&ours));
    println!("{facts} static facts equal; {} CPUs", cpus(&ours).len());

    // Counters: ours between theirs before and after, within tolerance.
    let mut counters = 0;
    for (key, v) in &ours.series {
        if ours.types.get(&key.0).map(String::as_str) != Some("counter") {
            continue;
        }
        let (Some(lo), Some(hi)) = (before.series.get(key), after.series.get(key)) else {
            continue;
        };
        let absolute = if key.0.starts_with("node_cpu_") { 2.0 } else { 0.0 };
        let slack = |x: f64| absolute + 0.05 * x.abs();
        assert!(
            *v >= lo - slack(*lo) && *v <= hi + slack(*hi),
            "{key:?}: ours {v}, node_exporter {lo} before and {hi} after"
        );
        counters += 1;
    }
    println!("{counters} counters within tolerance");
    assert!(counters > 20, "too few counters compared: {counters}");

    // Clock: our node_time_seconds between theirs.
    let time = |e: &Exposition| e.values("node_time_seconds").next().map(|(_, v)| v).unwrap();
    assert!(time(&before) - 1.0 <= time(&ours) && time(&ours) <= time(&after) + 1.0);
}
