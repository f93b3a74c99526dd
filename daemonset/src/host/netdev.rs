//! node_exporter's `netdev` collector: every column of `/proc/net/dev` as
//! `node_network_{receive,transmit}_<column>_total{device}`, plus
//! `node_network_receive_nohandler_total` from `<root>/sys/class/net/<device>/statistics` (what
//! node_exporter's default netlink mode adds).
//!
//! Column names come from the file's own header, so they follow the kernel. No device is
//! excluded (upstream node_exporter's default; Debian's package excludes `lo`).
//!
//! `/proc/net/dev` shows the network namespace of the reading process: in a pod without host
//! networking, the pod's. The file is read as `<root>/proc/1/net/dev` instead, the namespace of
//! the node's init process when `<root>/proc` is the node's procfs (the chart mounts it at
//! `/host/proc`), so the devices are the node's with or without `hostNetwork` and match the
//! node's `<root>/sys/class/net`. Where that file cannot be read (a procfs mounted with
//! `hidepid`), `<root>/proc/net/dev` is read, as node_exporter does.

use super::exposition::{FamilyId, HostMetrics, MetricType};
use super::fs::{parse_error, parse_u64, HostFs};
use super::HostError;

pub(crate) fn collect(fs: &mut HostFs, out: &mut HostMetrics) -> Result<(), HostError> {
    let node = fs.proc("1/net/dev");
    let path = if std::fs::File::open(&node).is_ok() { node } else { fs.proc("net/dev") };
    let text = fs.read(&path)?;
    let mut lines = text.lines();
    let header = lines.nth(1).ok_or_else(|| parse_error(&path, "no header"))?;
    let mut sections = header.split('|').skip(1);
    let (Some(receive), Some(transmit)) = (sections.next(), sections.next()) else {
        return Err(parse_error(&path, format!("unexpected header {header:?}")));
    };
    let mut columns: Vec<FamilyId> = Vec::new();
    for (direction, names) in [("receive", receive), ("transmit", transmit)] {
        for column in names.split_ascii_whitespace() {
            columns.push(out.family(
                format!("node_network_{direction}_{column}_total"),
                format!("Network device statistic {direction}_{column}."),
                MetricType::Counter,
            ));
        }
    }

    let mut devices = Vec::new();
    for line in lines {
        let Some((device, values)) = line.split_once(':') else {
            continue;
        };
        let device = device.trim().to_string();
        for (&id, value) in columns.iter().zip(values.split_ascii_whitespace()) {
            let value = parse_u64(value, &path, &device)?;
            out.push(id, vec![("device", device.clone())], value as f64);
        }
        devices.push(device);
    }

    let nohandler = out.family(
        "node_network_receive_nohandler_total",
        "Network device statistic receive_nohandler.",
        MetricType::Counter,
    );
    for device in devices {
        let stat = fs.sys(&format!("class/net/{device}/statistics/rx_nohandler"));
        if let Some(Ok(v)) = fs.read_optional(&stat).map(|t| t.trim().parse::<u64>()) {
            out.push(nohandler, vec![("device", device)], v as f64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
        lo:  275073    1199    0    0    0     0          0         0   275073    1199    0    0    0     0       0          0\n  \
        eth0:360179922   13863    1    2    3     4          5         6   847131    8202    7    8    9    10      11         12\n";

    #[test]
    fn every_column_for_every_device() {
        let root =
            FakeRoot::new().file("proc/net/dev", NET_DEV).file("sys/class/net/eth0/statistics/rx_nohandler", "42\n");
        let text = render_one(&root, collect);
        let mut expected = String::new();
        let rows = [
            ("receive_bytes", 275073, 360179922),
            ("receive_compressed", 0, 5),
            ("receive_drop", 0, 2),
            ("receive_errs", 0, 1),
            ("receive_fifo", 0, 3),
            ("receive_frame", 0, 4),
            ("receive_multicast", 0, 6),
            ("receive_packets", 1199, 13863),
            ("transmit_bytes", 275073, 847131),
            ("transmit_carrier", 0, 11),
            ("transmit_colls", 0, 10),
            ("transmit_compressed", 0, 12),
            ("transmit_drop", 0, 8),
            ("transmit_errs", 0, 7),
            ("transmit_fifo", 0, 9),
            ("transmit_packets", 1199, 8202),
        ];
        for (stat, lo, eth0) in rows {
            expected.push_str(&format!(
                "# HELP node_network_{stat}_total Network device statistic {stat}.\n\
                 # TYPE node_network_{stat}_total counter\n\
                 node_network_{stat}_total{{device=\"lo\"}} {lo}\n\
                 node_network_{stat}_total{{device=\"eth0\"}} {eth0}\n"
            ));
            if stat == "receive_multicast" {
                expected.push_str(
                    "# HELP node_network_receive_nohandler_total Network device statistic receive_nohandler.\n\
                     # TYPE node_network_receive_nohandler_total counter\n\
                     node_network_receive_nohandler_total{device=\"eth0\"} 42\n",
                );
            }
        }
        assert_eq!(text, expected);
    }

    #[test]
    fn the_nodes_network_namespace_is_read_not_the_pods() {
        // <root>/proc/net/dev is the reader's (the pod's) namespace; <root>/proc/1/net/dev the
        // node's init's.
        let pod = "Inter-| Receive | Transmit\n face |bytes packets|bytes packets\n  eth0: 10 1 20 2\n";
        let node = "Inter-| Receive | Transmit\n face |bytes packets|bytes packets\n  ens5: 1000 100 2000 200\n  cilium_host: 7 1 8 1\n";
        let root = FakeRoot::new().file("proc/net/dev", pod).file("proc/1/net/dev", node);
        let text = render_one(&root, collect);
        assert!(text.contains("node_network_receive_bytes_total{device=\"ens5\"} 1000\n"), "{text}");
        assert!(text.contains("node_network_transmit_packets_total{device=\"cilium_host\"} 1\n"), "{text}");
        assert!(!text.contains("eth0"), "the pod's device leaked in: {text}");
    }

    #[test]
    fn without_the_init_process_file_the_readers_namespace_is_read() {
        let pod = "Inter-| Receive | Transmit\n face |bytes packets|bytes packets\n  eth0: 10 1 20 2\n";
        let root = FakeRoot::new().file("proc/net/dev", pod);
        let text = render_one(&root, collect);
        assert!(text.contains("node_network_receive_bytes_total{device=\"eth0\"} 10\n"), "{text}");
    }

    #[test]
    fn headerless_file_is_an_error() {
        let root = FakeRoot::new().file("proc/net/dev", "eth0: 1 2 3\n");
        let mut fs = HostFs::new(root.path());
        assert!(collect(&mut fs, &mut HostMetrics::default()).is_err());
    }
}
