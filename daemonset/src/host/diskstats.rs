//! node_exporter's `diskstats` collector: the I/O counters of `/proc/diskstats` per block device,
//! labelled `{device}`, plus `node_disk_info` and, where udev has recorded them
//! (`<root>/run/udev/data/b<major>:<minor>`), `node_disk_filesystem_info`,
//! `node_disk_device_mapper_info` and `node_disk_ata_*`.
//!
//! Partitions, loop and RAM disks are excluded by node_exporter's default [`DEVICE_EXCLUDE`].
//! Kernels before 4.18 print no discard columns and before 5.5 no flush columns; those families
//! are then absent, as in node_exporter.

use std::sync::LazyLock;

use regex::Regex;

use super::exposition::{FamilyId, HostMetrics, MetricType};
use super::fs::{parse_error, parse_u64, HostFs};
use super::HostError;

/// node_exporter's default `--collector.diskstats.device-exclude`.
pub const DEVICE_EXCLUDE: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

static EXCLUDE: LazyLock<Regex> = LazyLock::new(|| Regex::new(DEVICE_EXCLUDE).expect("valid default pattern"));

/// Sectors in /proc/diskstats are always 512 bytes, whatever the device's block size.
const SECTOR_BYTES: f64 = 512.0;
/// Times in /proc/diskstats are milliseconds.
const MILLIS: f64 = 0.001;

/// The value columns after `major minor name`, in file order: name, help, type, scale.
const COLUMNS: [(&str, &str, MetricType, f64); 17] = {
    use MetricType::{Counter, Gauge};
    [
        ("node_disk_reads_completed_total", "The total number of reads completed successfully.", Counter, 1.0),
        ("node_disk_reads_merged_total", "The total number of reads merged.", Counter, 1.0),
        ("node_disk_read_bytes_total", "The total number of bytes read successfully.", Counter, SECTOR_BYTES),
        ("node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.", Counter, MILLIS),
        ("node_disk_writes_completed_total", "The total number of writes completed successfully.", Counter, 1.0),
        ("node_disk_writes_merged_total", "The number of writes merged.", Counter, 1.0),
        ("node_disk_written_bytes_total", "The total number of bytes written successfully.", Counter, SECTOR_BYTES),
        (
            "node_disk_write_time_seconds_total",
            "This is the total number of seconds spent by all writes.",
            Counter,
            MILLIS,
        ),
        ("node_disk_io_now", "The number of I/Os currently in progress.", Gauge, 1.0),
        ("node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", Counter, MILLIS),
        ("node_disk_io_time_weighted_seconds_total", "The weighted # of seconds spent doing I/Os.", Counter, MILLIS),
        ("node_disk_discards_completed_total", "The total number of discards completed successfully.", Counter, 1.0),
        ("node_disk_discards_merged_total", "The total number of discards merged.", Counter, 1.0),
        ("node_disk_discarded_sectors_total", "The total number of sectors discarded successfully.", Counter, 1.0),
        (
            "node_disk_discard_time_seconds_total",
            "This is the total number of seconds spent by all discards.",
            Counter,
            MILLIS,
        ),
        ("node_disk_flush_requests_total", "The total number of flush requests completed successfully", Counter, 1.0),
        (
            "node_disk_flush_requests_time_seconds_total",
            "This is the total number of seconds spent by all flush requests.",
            Counter,
            MILLIS,
        ),
    ]
};

/// udev properties exposed as `node_disk_ata_*` gauges.
const ATA: [(&str, &str, &str); 3] = [
    ("ID_ATA_WRITE_CACHE", "node_disk_ata_write_cache", "ATA disk has a write cache."),
    ("ID_ATA_WRITE_CACHE_ENABLED", "node_disk_ata_write_cache_enabled", "ATA disk has its write cache enabled."),
    ("ID_ATA_ROTATION_RATE_RPM", "node_disk_ata_rotation_rate_rpm", "ATA disk rotation rate in RPMs (0 for SSDs)."),
];

struct Disk {
    major: String,
    minor: String,
    name: String,
    values: Vec<u64>,
}

/// The `E:KEY=value` lines of one udev database entry.
#[derive(Default)]
struct Udev(Vec<(String, String)>);

impl Udev {
    fn parse(text: &str) -> Self {
        Udev(
            text.lines()
                .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v)
    }
}

pub(crate) fn collect(fs: &mut HostFs, out: &mut HostMetrics) -> Result<(), HostError> {
    let path = fs.proc("diskstats");
    let mut disks = Vec::new();
    for line in fs.read(&path)?.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(major), Some(minor), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(parse_error(&path, format!("short line {line:?}")));
        };
        if EXCLUDE.is_match(name) {
            continue;
        }
        let values = fields.take(COLUMNS.len()).map(|f| parse_u64(f, &path, name)).collect::<Result<Vec<_>, _>>()?;
        disks.push(Disk { major: major.to_string(), minor: minor.to_string(), name: name.to_string(), values });
    }

    use MetricType::Gauge;
    let info = out.family("node_disk_info", "Info of /sys/block/<block_device>.", Gauge);
    let columns: Vec<FamilyId> = COLUMNS.iter().map(|&(name, help, kind, _)| out.family(name, help, kind)).collect();
    let fs_info = out.family("node_disk_filesystem_info", "Info about disk filesystem.", Gauge);
    let dm_info = out.family("node_disk_device_mapper_info", "Info about disk device mapper.", Gauge);
    let ata: Vec<FamilyId> = ATA.iter().map(|&(_, name, help)| out.family(name, help, Gauge)).collect();

    for disk in disks {
        let udev_path = fs.rootfs(&format!("/run/udev/data/b{}:{}", disk.major, disk.minor));
        let udev = fs.read_optional(&udev_path).map(Udev::parse).unwrap_or_default();
        let device = || vec![("device", disk.name.clone())];

        let serial = ["SCSI_IDENT_SERIAL", "ID_SERIAL_SHORT", "ID_SERIAL"]
            .iter()
            .map(|k| udev.get(k))
            .find(|v| !v.is_empty())
            .unwrap_or("");
        out.push(
            info,
            vec![
                ("device", disk.name.clone()),
                ("major", disk.major.clone()),
                ("minor", disk.minor.clone()),
                ("model", udev.get("ID_MODEL").to_string()),
                ("path", udev.get("ID_PATH").to_string()),
                ("revision", udev.get("ID_REVISION").to_string()),
                ("serial", serial.to_string()),
                ("wwn", udev.get("ID_WWN").to_string()),
            ],
            1.0,
        );
        for ((&id, &(_, _, _, scale)), &v) in columns.iter().zip(&COLUMNS).zip(&disk.values) {
            out.push(id, device(), v as f64 * scale);
        }
        let fs_type = udev.get("ID_FS_TYPE");
        if !fs_type.is_empty() {
            out.push(
                fs_info,
                vec![
                    ("device", disk.name.clone()),
                    ("type", fs_type.to_string()),
                    ("usage", udev.get("ID_FS_USAGE").to_string()),
                    ("uuid", udev.get("ID_FS_UUID").to_string()),
                    ("version", udev.get("ID_FS_VERSION").to_string()),
                ],
                1.0,
            );
        }
        let dm_name = udev.get("DM_NAME");
        if !dm_name.is_empty() {
            out.push(
                dm_info,
                vec![
                    ("device", disk.name.clone()),
                    ("lv_layer", udev.get("DM_LV_LAYER").to_string()),
                    ("lv_name", udev.get("DM_LV_NAME").to_string()),
                    ("name", dm_name.to_string()),
                    ("uuid", udev.get("DM_UUID").to_string()),
                    ("vg_name", udev.get("DM_VG_NAME").to_string()),
                ],
                1.0,
            );
        }
        if !udev.get("ID_ATA").is_empty() {
            for (&id, &(key, _, _)) in ata.iter().zip(&ATA) {
                if let Ok(v) = udev.get(key).parse::<f64>() {
                    out.push(id, device(), v);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;

    const DISKSTATS: &str = "   7       0 loop0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
         254       0 vda 123044 11967 8939938 98750 40121 72701 16453056 73421 1 12548 173634 10461 23 2605456 1339 3397 122\n \
         254       1 vda1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n \
         253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n   \
         8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n";

    #[test]
    fn counters_scaled_to_bytes_and_seconds_for_whole_disks_only() {
        let root = FakeRoot::new().file("proc/diskstats", DISKSTATS).file(
            "run/udev/data/b8:0",
            "S:disk/by-id/ata-X\nE:ID_MODEL=Samsung_SSD\nE:ID_SERIAL=S_123_long\nE:ID_SERIAL_SHORT=S123\n\
                 E:ID_PATH=pci-0000:00:1f.2-ata-1\nE:ID_WWN=0x5002\nE:ID_REVISION=1B6Q\nE:ID_FS_TYPE=ext4\n\
                 E:ID_FS_USAGE=filesystem\nE:ID_FS_UUID=abcd\nE:ID_FS_VERSION=1.0\nE:ID_ATA=1\n\
                 E:ID_ATA_ROTATION_RATE_RPM=0\nE:ID_ATA_WRITE_CACHE=1\nE:ID_ATA_WRITE_CACHE_ENABLED=1\n",
        );
        let text = render_one(&root, collect);
        let expected = include_str!("testdata/diskstats.prom");
        assert_eq!(text, expected, "got:\n{text}");
    }
}
