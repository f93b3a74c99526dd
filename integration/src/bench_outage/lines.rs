//! The outage bench's log lines and the thread that appends them to a CRI tree at a steady byte
//! rate.
//!
//! A line is a pure function of (file, number): the receiver reads the two numbers back from the
//! line, regenerates it and compares bytes, so a line lost, duplicated or altered is counted, not
//! sampled. Lengths vary from 80 to 400 bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// How often the writer wakes up to append what is due (and flushes it, so the agent sees it).
const TICK: Duration = Duration::from_millis(20);

const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-the-payment-service-retried-";

fn mix(mut x: u64) -> u64 {
    // splitmix64: a well-spread pseudo-random number per (file, line).
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The message of line `n` of file `f`, into `out` (cleared first).
pub fn message(f: u32, n: u64, out: &mut Vec<u8>) {
    let r = mix((u64::from(f) << 40) ^ n);
    let len = 80 + (r % 321) as usize;
    let start = ((r >> 16) % FILLER.len() as u64) as usize;
    out.clear();
    let _ = write!(out, "f={f} n={n} level=info msg=\"outage bench\" pad=\"");
    let mut i = start;
    while out.len() + 1 < len {
        out.push(FILLER[i % FILLER.len()]);
        i += 1;
    }
    out.push(b'"');
}

/// (file, line) read back from a message made by [`message`].
pub fn id_of(message: &[u8]) -> Option<(u32, u64)> {
    let rest = message.strip_prefix(b"f=")?;
    let (f, rest) = leading_number(rest)?;
    let (n, _) = leading_number(rest.strip_prefix(b" n=")?)?;
    Some((u32::try_from(f).ok()?, n))
}

fn leading_number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
    Some((n, &s[digits..]))
}

/// `time` as RFC 3339 with nanoseconds in UTC, as the kubelet writes CRI lines.
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Days since 0000-03-01, so that a year ends with February and its leap day.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What the writer has made visible so far (flushed to the files).
#[derive(Debug, Default)]
pub struct Written {
    /// Lines per file.
    pub lines: Vec<AtomicU64>,
    pub bytes: AtomicU64,
}

impl Written {
    pub fn lines_per_file(&self) -> Vec<u64> {
        self.lines.iter().map(|l| l.load(Ordering::Acquire)).collect()
    }

    pub fn total_lines(&self) -> u64 {
        self.lines.iter().map(|l| l.load(Ordering::Acquire)).sum()
    }
}

/// The thread appending lines to `files` CRI files at `rate` bytes per second.
pub struct Writer {
    pub written: Arc<Written>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    started: Instant,
}

/// The path of file `f` under `root`: one container per pod, as the kubelet lays them out
/// (`<namespace>_<pod>_<uid>/<container>/0.log`).
pub fn file_path(root: &Path, f: usize) -> PathBuf {
    root.join(format!("outage_writer-{f:02}_uid-{f:02}")).join("app").join("0.log")
}

impl Writer {
    /// Creates the files (empty) and starts appending.
    pub fn start(root: &Path, files: usize, rate: u64) -> anyhow::Result<Writer> {
        let mut out = Vec::with_capacity(files);
        for f in 0..files {
            let path = file_path(root, f);
            let dir = path.parent().context("a file path has a parent")?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            out.push(BufWriter::with_capacity(256 * 1024, file));
        }
        let written =
            Arc::new(Written { lines: (0..files).map(|_| AtomicU64::new(0)).collect(), ..Default::default() });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("outage-writer".into()).spawn({
            let (written, stop) = (written.clone(), stop.clone());
            move || write_loop(out, rate, &written, &stop)
        })?;
        Ok(Writer { written, stop, thread: Some(thread), started: Instant::now() })
    }

    /// Bytes per second written since the start.
    pub fn achieved_rate(&self) -> f64 {
        self.written.bytes.load(Ordering::Acquire) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Stops appending and waits for the last flush.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the log writer thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(mut files: Vec<BufWriter<File>>, rate: u64, written: &Written, stop: &AtomicBool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut next = vec![0u64; files.len()];
    let mut line = Vec::with_capacity(512);
    let (mut bytes, mut f) = (0u64, 0usize);
    while !stop.load(Ordering::Acquire) {
        let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
        // One timestamp per tick: lines of a tick were "logged" within the same 20 ms.
        let ts = rfc3339_nanos(SystemTime::now());
        while bytes < due {
            message(f as u32, next[f], &mut line);
            let w = &mut files[f];
            w.write_all(ts.as_bytes())?;
            w.write_all(b" stdout F ")?;
            w.write_all(&line)?;
            w.write_all(b"\n")?;
            bytes += (ts.len() + 10 + line.len() + 1) as u64;
            next[f] += 1;
            f = (f + 1) % files.len();
        }
        for w in &mut files {
            w.flush()?;
        }
        for (count, n) in written.lines.iter().zip(&next) {
            count.store(*n, Ordering::Release);
        }
        written.bytes.store(bytes, Ordering::Release);
        std::thread::sleep(TICK);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_id_and_regenerates_identically() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for n in [0u64, 1, 99, 1 << 33] {
            message(19, n, &mut a);
            assert_eq!(id_of(&a), Some((19, n)));
            assert!((80..=400).contains(&a.len()), "{}", a.len());
            message(19, n, &mut b);
            assert_eq!(a, b);
        }
        assert_eq!(id_of(b"f=1 x=2"), None);
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let t = UNIX_EPOCH + Duration::new(1_767_225_600 + 3_723, 4_000_005);
        assert_eq!(rfc3339_nanos(t), "2026-01-01T01:02:03.004000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339_nanos(leap)[..10], "2000-02-29");
    }

    #[test]
    fn the_writer_keeps_its_rate_and_counts_what_it_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let w = Writer::start(dir.path(), 3, 1 << 20).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let written = w.written.clone();
        w.stop().unwrap();
        let on_disk: u64 = (0..3).map(|f| std::fs::metadata(file_path(dir.path(), f)).unwrap().len()).sum();
        assert_eq!(on_disk, written.bytes.load(Ordering::Acquire));
        assert!(on_disk > 200_000 && on_disk < 600_000, "{on_disk}");
        let lines: usize =
            (0..3).map(|f| std::fs::read_to_string(file_path(dir.path(), f)).unwrap().lines().count()).sum();
        assert_eq!(lines as u64, written.total_lines());
    }
}
