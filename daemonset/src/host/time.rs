//! node_exporter's `time` collector: `node_time_seconds`, `node_time_zone_offset_seconds` and the
//! clock sources of `<root>/sys/devices/system/clocksource`.

use std::ffi::CStr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::exposition::{HostMetrics, MetricType};
use super::fs::HostFs;
use super::HostError;

pub(crate) fn collect(fs: &mut HostFs, out: &mut HostMetrics, now: SystemTime) -> Result<(), HostError> {
    use MetricType::Gauge;
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    out.single("node_time_seconds", "System time in seconds since epoch (1970).", Gauge, seconds);
    let (zone, offset) = local_zone(seconds as i64);
    let id = out.family("node_time_zone_offset_seconds", "System time zone offset in seconds.", Gauge);
    out.push(id, vec![("time_zone", zone)], offset as f64);

    let available = out.family(
        "node_time_clocksource_available_info",
        "Available clocksources read from '/sys/devices/system/clocksource'.",
        Gauge,
    );
    let current = out.family(
        "node_time_clocksource_current_info",
        "Current clocksource read from '/sys/devices/system/clocksource'.",
        Gauge,
    );
    let dir = fs.sys("devices/system/clocksource");
    let mut devices: Vec<(u32, String)> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let n = name.strip_prefix("clocksource")?.parse().ok()?;
                Some((n, name))
            })
            .collect(),
        // Not every kernel or container exposes clock sources; the time itself is what matters.
        Err(_) => Vec::new(),
    };
    devices.sort();
    for (n, name) in devices {
        let device = n.to_string();
        let labels = |source: &str| vec![("clocksource", source.to_string()), ("device", device.clone())];
        if let Some(text) = fs.read_optional(&dir.join(&name).join("available_clocksource")) {
            for source in text.split_ascii_whitespace() {
                out.push(available, labels(source), 1.0);
            }
        }
        if let Some(text) = fs.read_optional(&dir.join(&name).join("current_clocksource")) {
            let source = text.trim();
            if !source.is_empty() {
                out.push(current, labels(source), 1.0);
            }
        }
    }
    Ok(())
}

/// The local time zone's abbreviation and UTC offset at `unix_seconds`, as libc resolves them
/// (`TZ`, else `/etc/localtime` of the container, as for node_exporter in a container).
pub(crate) fn local_zone(unix_seconds: i64) -> (String, i64) {
    let t = unix_seconds as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own; `tm_zone` then points at libc's
    // static zone-name storage, copied out before returning.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return ("UTC".to_string(), 0);
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            CStr::from_ptr(tm.tm_zone).to_string_lossy().into_owned()
        };
        (zone, tm.tm_gmtoff as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_zone_and_clock_sources() {
        let root = FakeRoot::new()
            .file("sys/devices/system/clocksource/clocksource0/available_clocksource", "kvm-clock tsc acpi_pm \n")
            .file("sys/devices/system/clocksource/clocksource0/current_clocksource", "tsc\n");
        let now = UNIX_EPOCH + Duration::from_millis(1_795_594_177_410);
        let text = render_one(&root, |fs, m| collect(fs, m, now));
        let (zone, offset) = local_zone(1_795_594_177);
        assert_eq!(
            text,
            format!(
                "# HELP node_time_clocksource_available_info Available clocksources read from '/sys/devices/system/clocksource'.\n\
                 # TYPE node_time_clocksource_available_info gauge\n\
                 node_time_clocksource_available_info{{clocksource=\"kvm-clock\",device=\"0\"}} 1\n\
                 node_time_clocksource_available_info{{clocksource=\"tsc\",device=\"0\"}} 1\n\
                 node_time_clocksource_available_info{{clocksource=\"acpi_pm\",device=\"0\"}} 1\n\
                 # HELP node_time_clocksource_current_info Current clocksource read from '/sys/devices/system/clocksource'.\n\
                 # TYPE node_time_clocksource_current_info gauge\n\
                 node_time_clocksource_current_info{{clocksource=\"tsc\",device=\"0\"}} 1\n\
                 # HELP node_time_seconds System time in seconds since epoch (1970).\n\
                 # TYPE node_time_seconds gauge\n\
                 node_time_seconds 1795594177.41\n\
                 # HELP node_time_zone_offset_seconds System time zone offset in seconds.\n\
                 # TYPE node_time_zone_offset_seconds gauge\n\
                 node_time_zone_offset_seconds{{time_zone=\"{zone}\"}} {offset}\n"
            )
        );
    }

    #[test]
    fn no_clocksource_directory_still_reports_the_time() {
        let root = FakeRoot::new();
        let text = render_one(&root, |fs, m| collect(fs, m, UNIX_EPOCH + Duration::from_secs(5)));
        assert!(text.contains("node_time_seconds 5\n"), "{text}");
        assert!(!text.contains("clocksource"), "{text}");
    }
}
