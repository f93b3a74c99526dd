//! The reading side of the tailer: one dedicated thread that owns every open log file, reads them
//! in blocks, decodes lines into batches and hands the batches to the async side (which sends them
//! to the pipeline and tracks their acknowledgements, see [`super::run_logs_with`]).
//!
//! Per file, as the kubelet and the runtimes behave:
//! - **Rotation** (`0.log` renamed to `0.log.<timestamp>`, a new `0.log` created): the open
//!   descriptor of the renamed file is kept and read to its end ("draining") while the new `0.log`
//!   is opened from offset 0. The new file of a stream is read only after the draining one reached
//!   its end, so entries stay in order. The renamed file is let go once it is at its end and either
//!   the new file has data (the runtime reopened its log), it was deleted, or `rotate_wait` passed;
//!   it is read to its end once more right before closing.
//! - **copytruncate** (the size drops below the read offset): if a copy sits beside the file
//!   (`<name>.<suffix>`, e.g. logrotate's `0.log.1` or a date, not compressed, starting with the
//!   bytes the file's fingerprint covers, at least as long as what was read), its unread tail is
//!   read first (`lgtm_agent_logs_copytruncate_bytes_read_total`); then the file restarts at
//!   offset 0 as a new generation. Without a copy, the lines written between the last read and
//!   the truncation are gone (the part the agent had seen is counted in
//!   `lgtm_agent_logs_bytes_lost_total{reason="truncated"}`, warned once). A truncation followed by
//!   a rewrite past the old offset before we look cannot be told from growth.
//! - **Partial lines** (CRI `P`) waiting for their closing piece are shipped as they are
//!   `logs.partial_flush_timeout` after the file's last data, when the file is let go (deleted or
//!   rotated), and at shutdown; the rest, if it comes, is a line of its own. Until shipped, the
//!   checkpoint stays before the piece, so a crash loses nothing: the restarted agent reads it again.
//! - **Descriptors** (`logs.max_open_files`): when more files are tracked than may be held open,
//!   the least recently read idle ones (at their end) are closed, keeping their reader, decoder and
//!   checkpoint state. A change to a closed file's path (inotify event or rescan) that makes its
//!   size differ from what was read reopens it by path, checked by device, inode and head
//!   fingerprint; if the path leads to another file now, the old one is looked for by inode beside
//!   it (a rotation renamed it) and read to its end; if it is gone, what it had beyond the last
//!   read is counted lost (`reason="gone_while_closed"`). Files being drained are never closed.
//! - **Deleted** file: the open descriptor is read to its end, then closed (no descriptor leak).
//! - **New files** appearing while running are read from their start.
//! - **First start** (no checkpoint file at all): files that already exist start at their
//!   beginning (`start_at: beginning`, the default, so nothing already on the node is lost) or at
//!   their end (`start_at: end`, after the last complete line). With a checkpoint file, a known
//!   file resumes at its acknowledged offset; an unknown one starts at its beginning. Rotated
//!   files (`<n>.log.<timestamp>`) a checkpoint still points into are finished first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, Metadata};
use std::ops::Bound;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lgtm_config::StartAt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{BatchBuilder, StreamRef};
use super::checkpoint::{Checkpoint, CheckpointStore, FileKey, Registry};
use super::compressed;
use super::discovery::{self, Wake, Watcher};
use super::format::{Decoder, Format};
use super::identity::{FileIdentity, HEAD_LEN};
use super::labels::{stream_labels, Filters, NodeLabels, PodMetadata, EXCLUDE_ANNOTATION};
use super::metrics::logs as metrics;
use super::path::{self, PodLogPath};
use super::reader::{LineReader, Scratch};
use super::safe_open::{Allowed, Refusal};
use super::{InFlight, Tuning};

/// Everything the reading thread needs to know.
pub(crate) struct Settings {
    pub root: PathBuf,
    pub max_line: usize,
    pub start_at: StartAt,
    pub rescan_interval: Duration,
    /// Where symlinked log files may lead (besides `root`).
    pub follow_symlinks_into: Vec<PathBuf>,
    pub tuning: Tuning,
    /// `logs.stream: label`: stdout/stderr as a stream label instead of structured metadata.
    pub stream_label: bool,
    /// `logs.partial_flush_timeout`.
    pub partial_flush_timeout: Duration,
    /// Descriptors of log files held at once (`logs.max_open_files`, resolved).
    pub max_open_files: usize,
}

/// A batch on its way to the pipeline, with the files whose offsets it carries.
pub(crate) struct Batch {
    pub seq: u64,
    pub payload: Bytes,
    pub entries: u32,
    pub files: Vec<FileKey>,
}

pub(crate) fn lock(r: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    // A panic while holding the lock cannot leave the registry half-updated in a way that loses
    // data (offsets only move forward), so a poisoned lock is still usable.
    r.lock().unwrap_or_else(|p| p.into_inner())
}

struct OpenFile {
    key: FileKey,
    path: PathBuf,
    /// `None` while closed to stay under `logs.max_open_files` ("parked"): everything else is
    /// kept, and the file is reopened by path and identity when it changes.
    file: Option<File>,
    identity: FileIdentity,
    reader: LineReader,
    decoder: Decoder,
    stream: StreamRef,
    size: u64,
    at_eof: bool,
    /// Set when the path no longer leads to this file.
    draining_since: Option<Instant>,
    /// When data was last read from it: the partial-line flush timeout counts from here, and the
    /// least recently read idle files are the first closed when descriptors run short.
    last_data: Instant,
    /// inotify reported a write since it was last read: read it at the next pass (files at their
    /// end are otherwise left alone until the periodic pass, see [`Tailer::read_all`]).
    wanted: bool,
    /// Its path is a symlink (Docker's `json-file` logs): writes to the target are not seen by
    /// the watch of the pod directories, so it is read at every pass.
    polled: bool,
    /// Its directory's write events are muted ([`Watcher::mute`]): read every [`hot_interval`].
    hot: bool,
    /// When inotify last reported a write to it: a second report soon after mutes its directory.
    last_written: Option<Instant>,
}

impl OpenFile {
    fn same_file(&self, meta: &Metadata) -> bool {
        self.identity.dev == meta.dev() && self.identity.inode == meta.ino()
    }
}

/// Builds batches and hands them over; owns the channel to the async side.
struct Shipper {
    batch: BatchBuilder,
    /// Files touched since the last flush, with the offset a restart may resume from.
    offsets: Vec<(FileKey, u64)>,
    registry: Arc<Mutex<Registry>>,
    out: mpsc::Sender<Batch>,
    /// Bytes handed over and not yet acknowledged.
    inflight: Arc<InFlight>,
    seq: u64,
    closed: bool,
    max_bytes: usize,
    max_items: usize,
    max_wait: Duration,
}

impl Shipper {
    fn note_offset(&mut self, key: FileKey, offset: u64) {
        match self.offsets.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = offset,
            None => self.offsets.push((key, offset)),
        }
    }

    fn due(&self) -> bool {
        self.batch.bytes() >= self.max_bytes
            || self.batch.started().is_some_and(|t| t.elapsed() >= self.max_wait)
            || (self.batch.entries() == 0 && !self.offsets.is_empty())
    }

    /// Time until the batch must go out.
    fn until_due(&self) -> Option<Duration> {
        self.batch.started().map(|t| self.max_wait.saturating_sub(t.elapsed()))
    }

    /// Sends what is built (blocking while the pipeline applies backpressure) and registers the
    /// files' offsets to be acknowledged with it.
    fn flush(&mut self) {
        if self.batch.entries() == 0 && self.offsets.is_empty() {
            return;
        }
        metrics().invalid_utf8.inc_by(self.batch.take_invalid_utf8());
        self.seq += 1;
        let seq = self.seq;
        let payload = self.batch.finish();
        let mut reg = lock(&self.registry);
        let files: Vec<FileKey> =
            self.offsets.drain(..).filter(|&(k, o)| reg.register(k, seq, o)).map(|(k, _)| k).collect();
        match payload {
            None => {
                // Only skipped lines: nothing to wait for.
                for k in files {
                    reg.resolve(k, seq);
                }
            }
            Some((payload, entries)) => {
                drop(reg);
                self.inflight.add(payload.len());
                if self.out.blocking_send(Batch { seq, payload, entries, files }).is_err() {
                    self.closed = true;
                }
            }
        }
    }
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Reads `f` from where it is through the shared `scratch` buffer, up to `max_blocks` blocks
/// (unlimited if `None`; limited reads also stop while the in-flight cap is reached). Returns
/// whether anything was read.
fn read_file(
    ship: &mut Shipper,
    scratch: &mut Scratch,
    f: &mut OpenFile,
    max_blocks: Option<usize>,
    max_line: usize,
    allowed: &Allowed,
) -> bool {
    if f.file.is_none() {
        // Parked: reopened when it changes.
        f.at_eof = true;
        return false;
    }
    // A hot file (written to all the time) is read without asking `fstat` first: a short read
    // says it is at its end; only a read that finds nothing asks `fstat` whether it shrank
    // (copytruncate). Any other file: `fstat` says what is new, and nothing more is read.
    let mut known_len = None;
    if !f.hot {
        match stat_file(ship, scratch, f, max_line, allowed) {
            Some(len) => known_len = Some(len),
            None => return false,
        }
    }
    let m = metrics();
    let mut progressed = false;
    let mut blocks = 0;
    loop {
        if max_blocks.is_some_and(|mb| blocks >= mb || ship.inflight.full()) || ship.closed {
            break;
        }
        blocks += 1;
        let Some(file) = f.file.as_ref() else { break };
        // No read for a file `fstat` says has nothing new; one that grew since is read at the
        // next pass.
        let left = known_len.map_or(u64::MAX, |len: u64| len.saturating_sub(f.reader.read_offset()));
        if left == 0 {
            f.at_eof = true;
            break;
        }
        let asked = left.min(f.reader.block() as u64);
        let n = match f.reader.fill_at_most(file, scratch, left) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(path = %f.path.display(), error = %e, "reading a log file failed");
                f.at_eof = true;
                break;
            }
        };
        if n == 0 {
            if known_len.is_none() {
                match stat_file(ship, scratch, f, max_line, allowed) {
                    // Truncated (and restarted at 0), or written to since the read.
                    Some(len) if len > f.reader.read_offset() => {
                        known_len = Some(len);
                        continue;
                    }
                    _ => {}
                }
            }
            f.at_eof = true;
            break;
        }
        f.at_eof = false;
        f.last_data = Instant::now();
        progressed = true;
        f.size = f.size.max(f.reader.read_offset());
        m.bytes_read.inc_by(n as u64);
        let mut lines = 0u64;
        while let Some(line) = f.reader.next_line(scratch) {
            lines += 1;
            let stream = &f.stream;
            f.decoder.push(line, now_nanos, &mut |e| ship.batch.push(stream, &e));
            // A batch never holds more entries than one Loki request may (`batch.max_items`):
            // it goes out here, with the offset after the last line it holds, so that the
            // exporter sends queued records whole instead of cutting them apart.
            if ship.batch.entries() as usize >= ship.max_items {
                ship.note_offset(f.key, f.decoder.safe_offset(f.reader.offset()));
                ship.flush();
            }
        }
        m.lines_read.inc_by(lines);
        ship.note_offset(f.key, f.decoder.safe_offset(f.reader.offset()));
        if ship.batch.bytes() >= ship.max_bytes {
            ship.flush();
        }
        if known_len.is_none() && (n as u64) < asked {
            // A short read: at its end for now.
            f.at_eof = true;
            break;
        }
    }
    // The unfinished last line moves to the file's own buffer; `scratch` serves the next file.
    f.reader.park(scratch);
    if progressed && f.identity.head_len < HEAD_LEN {
        // A young file's fingerprint follows what was read (a copytruncate copy is matched by it).
        if let Some(file) = f.file.as_ref() {
            let _ = f.identity.grow(file, f.reader.read_offset());
        }
    }
    progressed
}

/// `fstat`s `f`: handles a truncation (the size dropped below what was read) and records the
/// size, which it returns; `None` (warned) if `fstat` failed.
fn stat_file(
    ship: &mut Shipper,
    scratch: &mut Scratch,
    f: &mut OpenFile,
    max_line: usize,
    allowed: &Allowed,
) -> Option<u64> {
    let meta = match f.file.as_ref()?.metadata() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(path = %f.path.display(), error = %e, "fstat of a log file failed");
            f.at_eof = true;
            return None;
        }
    };
    if meta.len() < f.reader.read_offset() {
        truncated(ship, scratch, f, &meta, max_line, allowed);
    }
    f.size = meta.len();
    Some(meta.len())
}

/// Ships the logical lines `f` holds waiting for their closing piece; `true` if there were any.
fn flush_partial(ship: &mut Shipper, f: &mut OpenFile) -> bool {
    let batch = &mut ship.batch;
    let stream = &f.stream;
    if !f.decoder.flush_pending(&mut |e| batch.push(stream, &e)) {
        return false;
    }
    ship.note_offset(f.key, f.decoder.safe_offset(f.reader.offset()));
    true
}

/// `f` (closed) under another name: a rotation renamed it. Looked for by inode and fingerprint
/// beside its path and, for a symlinked file (Docker nodes), beside the link's target.
fn find_moved(allowed: &Allowed, f: &OpenFile) -> Option<File> {
    use std::os::unix::fs::DirEntryExt;
    let own = f.path.parent()?.to_path_buf();
    let mut dirs = vec![own.clone()];
    if let Some(target_dir) = std::fs::canonicalize(&f.path).ok().and_then(|t| t.parent().map(Path::to_path_buf)) {
        if target_dir != own {
            dirs.push(target_dir);
        }
    }
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.ino() != f.identity.inode {
                continue;
            }
            let Ok(file) = allowed.open(&e.path()) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if f.identity.matches(&file, &meta).unwrap_or(false) {
                return Some(file);
            }
        }
    }
    None
}

/// The file shrank below what was read (copytruncate, or a writer that truncates): reads the
/// unread tail of the copy if one sits next to it ([`find_copy`]), ships what the old generation
/// left unfinished, and restarts the file at offset 0 as a new generation. Without a copy, the
/// bytes written after the last read and before the truncation are gone; those the agent saw
/// (the last size it knew minus what it read) are counted.
fn truncated(
    ship: &mut Shipper,
    scratch: &mut Scratch,
    f: &mut OpenFile,
    meta: &Metadata,
    max_line: usize,
    allowed: &Allowed,
) {
    let m = metrics();
    let read = f.reader.read_offset();
    match find_copy(allowed, f) {
        Some(copy) => {
            let original = f.file.replace(copy);
            // The copy is not shorter than what was read: this reads on from the same reader.
            read_file(ship, scratch, f, None, max_line, allowed);
            let recovered = f.reader.read_offset().saturating_sub(read);
            f.file = original;
            m.truncations_copy_found.inc();
            m.copy_bytes_read.inc_by(recovered);
            tracing::info!(path = %f.path.display(), recovered_bytes = recovered, "log file was truncated; read the rest of its rotated copy, reading it again from the start");
        }
        None => {
            let lost = f.size.saturating_sub(read);
            m.truncations_no_copy.inc();
            m.bytes_lost_truncated.inc_by(lost);
            if !TRUNCATION_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(path = %f.path.display(), lost_bytes_at_least = lost, "log file was truncated and no rotated copy of it (same name with a suffix, same first bytes) was found: lines written after the last read are lost (counted in lgtm_agent_logs_bytes_lost_total{{reason=\"truncated\"}}; warned once)");
            } else {
                tracing::info!(path = %f.path.display(), "log file was truncated; reading it again from the start");
            }
        }
    }
    f.size = meta.len();
    restart_truncated(ship, scratch, f, meta, max_line);
}

static TRUNCATION_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A copy of `f` made by copytruncate: a regular file beside it named `<name>.<suffix>` (logrotate's
/// `.1`, a date; not `.gz`/`.tmp`), another inode, starting with the bytes `f`'s fingerprint covers,
/// and at least as long as what was read of `f`. The newest such file if several.
fn find_copy(allowed: &Allowed, f: &OpenFile) -> Option<File> {
    let id = f.identity;
    let read = f.reader.read_offset();
    // The fingerprint must cover all that was read (up to its 256 bytes): a short one (the date
    // of a first line) would match an older copy too.
    if id.head_len == 0 || id.head_len < read.min(HEAD_LEN) {
        return None;
    }
    let dir = f.path.parent()?;
    let prefix = format!("{}.", f.path.file_name()?.to_str()?);
    let mut best: Option<(SystemTime, File)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(&prefix) || name.ends_with(".gz") || name.ends_with(".tmp") {
            continue;
        }
        let Ok(file) = allowed.open(&e.path()) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        if (meta.dev(), meta.ino()) == (id.dev, id.inode)
            || meta.len() < read
            || !id.same_head(&file, &meta).unwrap_or(false)
        {
            continue;
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, file));
        }
    }
    best.map(|(_, f)| f)
}

/// Ships what the old generation of a truncated file left unfinished and starts a new one at 0.
fn restart_truncated(ship: &mut Shipper, scratch: &mut Scratch, f: &mut OpenFile, meta: &Metadata, max_line: usize) {
    let batch = &mut ship.batch;
    let stream = &f.stream;
    if let Some(line) = f.reader.take_rest(scratch) {
        f.decoder.push(line, now_nanos, &mut |e| batch.push(stream, &e));
    }
    f.decoder.finish(&mut |e| batch.push(stream, &e));
    ship.note_offset(f.key, f.reader.offset());
    account(f);
    // Entries already decoded go out under the old generation.
    ship.flush();
    let identity = f.file.as_ref().and_then(|file| FileIdentity::of(file, meta).ok()).unwrap_or(f.identity);
    let mut reg = lock(&ship.registry);
    reg.release(f.key);
    f.key = reg.track(identity, f.path.clone(), 0, meta.len());
    drop(reg);
    f.identity = identity;
    f.reader = LineReader::new(0, f.reader_block(), reader_cap(max_line));
    f.decoder = Decoder::new(max_line);
}

impl OpenFile {
    fn reader_block(&self) -> usize {
        self.reader.block()
    }
}

/// A physical line longer than this is cut by the reader (runtimes write at most 16 KiB per
/// physical line; Docker's JSON escaping can grow that several times).
pub(crate) fn reader_cap(max_line: usize) -> usize {
    max_line.max(256 * 1024) + 64 * 1024
}

/// Where to start a file.
enum Start {
    Beginning,
    End,
    At(u64),
}

/// Buffers grown by a burst of reading are freed after this long without new data.
const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(2);

/// A file reported written to twice within this while has its directory's write events muted and
/// is read every [`hot_interval`] instead ([`Watcher::mute`]): files written to several times a
/// second.
const MUTE_WITHIN: Duration = Duration::from_millis(300);

/// A muted directory whose files had no new data for this long gets its write events back.
const UNMUTE_AFTER: Duration = Duration::from_secs(1);

/// How long the inotify thread lets events gather after waking the tailer: half the shorter of
/// `batch_max_wait` and `poll_interval` (50 ms by default), so that a line waits at most that
/// long before it is read, and the tailer wakes at most 20 times a second however many lines
/// the node writes.
fn coalesce(t: &Tuning) -> Duration {
    t.batch_max_wait.min(t.poll_interval) / 2
}

/// How often the files of muted directories are read: twice `batch_max_wait` (200 ms by
/// default), at most `poll_interval`. A read costs a syscall and the kernel's page-cache lookups
/// whatever it brings: read every `coalesce` (50 ms), 100 files written at 5 MiB/s brought
/// 2.6 KiB per read, and the reads' fixed costs and the passes over the files were a fifth of
/// the agent's CPU. A line waits at most this long to be read, and what a pass read goes out when
/// it ends: well within a second.
fn hot_interval(t: &Tuning) -> Duration {
    (t.batch_max_wait * 2).min(t.poll_interval)
}

pub(crate) struct Tailer {
    settings: Settings,
    node: NodeLabels,
    filters: Filters,
    metadata: Arc<dyn PodMetadata>,
    store: CheckpointStore,
    active: BTreeMap<PathBuf, OpenFile>,
    draining: Vec<OpenFile>,
    streams: HashMap<Arc<str>, StreamRef>,
    next_stream: u64,
    /// Files of pods annotated to be excluded, by path, with the (device, inode) seen: the same
    /// file is not looked at again; a new one at the path (a rotation) is.
    ignored: HashMap<PathBuf, (u64, u64)>,
    ship: Shipper,
    /// The one read buffer of all files.
    scratch: Scratch,
    wake_tx: std_mpsc::Sender<Wake>,
    wake_rx: std_mpsc::Receiver<Wake>,
    watcher: Watcher,
    checkpoint_failing: bool,
    /// Opens files only within the log root and the allowed symlink targets.
    allowed: Allowed,
    /// Paths refused (see [`super::safe_open`]), with the (device, inode) of what was there: the
    /// same entry is not tried, counted or warned about again.
    refused: HashMap<PathBuf, (u64, u64)>,
    /// Paths whose open failed and was warned about.
    open_failed: HashSet<PathBuf>,
    non_utf8_warned: bool,
    gone_warned: bool,
    /// Files whose descriptor is open (active and draining); at most `max_open_files` but for
    /// draining ones, which are never closed early.
    held: usize,
    /// Container directories whose write events are muted: their active files are `hot`, read at
    /// every [`hot_interval`] until quiet for [`UNMUTE_AFTER`].
    muted: HashSet<PathBuf>,
    last_unmute_check: Instant,
    /// When hot files were last read: they are read [`hot_interval`] apart, not at every wake-up (a
    /// batch due, an acknowledgement), which would mostly find nothing new.
    last_hot_read: Instant,
}

impl Tailer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: Settings,
        node: NodeLabels,
        filters: Filters,
        metadata: Arc<dyn PodMetadata>,
        store: CheckpointStore,
        registry: Arc<Mutex<Registry>>,
        out: mpsc::Sender<Batch>,
        (wake_tx, wake_rx): (std_mpsc::Sender<Wake>, std_mpsc::Receiver<Wake>),
        inflight: Arc<InFlight>,
    ) -> Tailer {
        let watcher = Watcher::start(&settings.root, wake_tx.clone(), coalesce(&settings.tuning));
        let ship = Shipper {
            batch: BatchBuilder::new().with_stream_label(settings.stream_label),
            offsets: Vec::new(),
            registry,
            out,
            inflight,
            seq: 0,
            closed: false,
            max_bytes: settings.tuning.batch_max_bytes,
            max_items: settings.tuning.batch_max_items.max(1),
            max_wait: settings.tuning.batch_max_wait,
        };
        let allowed = Allowed::new(&settings.root, &settings.follow_symlinks_into);
        Tailer {
            allowed,
            refused: HashMap::new(),
            open_failed: HashSet::new(),
            non_utf8_warned: false,
            gone_warned: false,
            held: 0,
            muted: HashSet::new(),
            last_unmute_check: Instant::now(),
            last_hot_read: Instant::now(),
            settings,
            node,
            filters,
            metadata,
            store,
            active: BTreeMap::new(),
            draining: Vec::new(),
            streams: HashMap::new(),
            next_stream: 0,
            ignored: HashMap::new(),
            ship,
            scratch: Scratch::new(),
            wake_tx,
            wake_rx,
            watcher,
            checkpoint_failing: false,
        }
    }

    /// The thread's body: returns when `stop` is cancelled or the async side went away.
    pub(crate) fn run(mut self, stop: CancellationToken) {
        // A fault injected by the tests of "no component dies alone" (see RELIABILITY.md).
        let mut panic_after_read = std::env::var("LGTM_AGENT_FAILPOINT").is_ok_and(|v| v == "logs-tailer-panic");
        self.start();
        let tuning = self.settings.tuning.clone();
        let mut last_rescan = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut last_read = Instant::now();
        let mut last_full_pass = Instant::now();
        let mut released = false;
        while !stop.is_cancelled() && !self.ship.closed {
            let more_waiting = self.reopen_changed();
            // Every file, written to or not, at least every `poll_interval`: a safety net for
            // events inotify did not deliver (and the only reader of files it cannot watch).
            let full = last_full_pass.elapsed() >= tuning.poll_interval;
            if full {
                last_full_pass = Instant::now();
            }
            let hot = self.last_hot_read.elapsed() >= hot_interval(&tuning);
            if hot {
                self.last_hot_read = Instant::now();
            }
            let (read, hot_read) = self.read_all(&stop, full, hot);
            if read {
                last_read = Instant::now();
                released = false;
                if std::mem::take(&mut panic_after_read) {
                    self.ship.flush();
                    panic!("injected fault LGTM_AGENT_FAILPOINT=logs-tailer-panic");
                }
            }
            self.release_drained();
            if !self.muted.is_empty() && self.last_unmute_check.elapsed() >= UNMUTE_AFTER / 2 {
                self.unmute_quiet();
                self.last_unmute_check = Instant::now();
            }
            let next_partial = self.flush_stale_partials();
            // What a pass over the hot files read (up to `hot_interval` of their lines) goes out
            // now rather than `batch_max_wait` later: nothing more comes from them before the
            // next pass.
            if self.ship.due() || hot_read {
                self.ship.flush();
            }
            if !released && self.ship.batch.entries() == 0 && last_read.elapsed() >= IDLE_RELEASE_AFTER {
                // Quiet files: the buffers a burst grew are given back until the next one.
                self.scratch.release();
                self.ship.batch.release_spare();
                released = true;
            }
            self.publish_state();
            if last_checkpoint.elapsed() >= tuning.checkpoint_interval {
                self.write_checkpoint();
                last_checkpoint = Instant::now();
            }
            let mut timeout = tuning
                .poll_interval
                .saturating_sub(last_full_pass.elapsed())
                .min(self.settings.rescan_interval.saturating_sub(last_rescan.elapsed()));
            if let Some(d) = self.ship.until_due() {
                timeout = timeout.min(d);
            }
            if !self.draining.is_empty() {
                timeout = timeout.min(Duration::from_millis(50).max(tuning.rotate_wait / 4));
            }
            if let Some(d) = next_partial {
                timeout = timeout.min(d);
            }
            if !self.muted.is_empty() {
                // Hot files are read every `hot_interval`: no event tells when they grow.
                timeout = timeout.min(hot_interval(&tuning).saturating_sub(self.last_hot_read.elapsed()));
            }
            if more_waiting {
                // Closed files with new data wait for descriptors the next turn frees.
                timeout = Duration::ZERO;
            }
            let mut paths = HashSet::new();
            let mut written = HashSet::new();
            let mut rescan = false;
            match self.wake_rx.recv_timeout(timeout.max(Duration::from_millis(1))) {
                Ok(w) => {
                    let mut w = Some(w);
                    while let Some(wake) = w {
                        match wake {
                            Wake::Paths(p) => paths.extend(p),
                            Wake::Written(p) => written.extend(p),
                            Wake::Rescan => rescan = true,
                            Wake::Resume => {}
                        }
                        w = self.wake_rx.try_recv().ok();
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
            }
            for p in &paths {
                self.on_event(p);
            }
            for p in written {
                self.on_written(p, &paths);
            }
            if rescan || last_rescan.elapsed() >= self.settings.rescan_interval {
                self.rescan();
                last_rescan = Instant::now();
            }
        }
        if stop.is_cancelled() && !self.ship.closed {
            // Shutdown: partial lines waiting for their closing piece go out as they are, with
            // what is decoded; the async side hands them over for a short while yet.
            let ship = &mut self.ship;
            let mut flushed = 0u64;
            for f in self.draining.iter_mut().chain(self.active.values_mut()) {
                flushed += u64::from(flush_partial(ship, f));
            }
            metrics().partial_flushes_shutdown.inc_by(flushed);
            self.ship.flush();
        }
        tracing::debug!("log tailer thread stopping");
    }

    /// Ships the partial lines whose closing piece has not come `partial_flush_timeout` after
    /// their file's last data. Returns how long until the next one is due.
    fn flush_stale_partials(&mut self) -> Option<Duration> {
        let timeout = self.settings.partial_flush_timeout;
        let ship = &mut self.ship;
        let mut next: Option<Duration> = None;
        for f in self.draining.iter_mut().chain(self.active.values_mut()) {
            if !f.at_eof || !f.decoder.has_pending() {
                continue;
            }
            let age = f.last_data.elapsed();
            if age >= timeout {
                if flush_partial(ship, f) {
                    metrics().partial_flushes_timeout.inc();
                }
            } else {
                let left = timeout - age;
                next = Some(next.map_or(left, |n| n.min(left)));
            }
        }
        next
    }

    /// Opens what exists, resuming from the checkpoints.
    fn start(&mut self) {
        let (loaded, first_start) = match self.store.load() {
            Ok(Some(v)) => (v, false),
            Ok(None) => (Vec::new(), true),
            Err(e) => {
                metrics().checkpoints_unreadable.inc();
                tracing::error!(error = %e, "ignoring unreadable checkpoints; existing files are read from their beginning");
                (Vec::new(), false)
            }
        };
        let by_inode: HashMap<(u64, u64), Checkpoint> =
            loaded.into_iter().map(|c| ((c.identity.dev, c.identity.inode), c)).collect();
        let mut unmatched = by_inode.clone();
        let checkpoint_of = |file: &File, meta: &Metadata| -> Option<u64> {
            let c = by_inode.get(&(meta.dev(), meta.ino()))?;
            c.identity.matches(file, meta).ok()?.then_some(c.offset)
        };
        let found = discovery::scan(&self.settings.root);
        for p in &found.rotated {
            let Some(parsed) = path::parse_rotated(p) else { continue };
            if self.filters.excludes(&parsed) {
                continue;
            }
            let f = self.open(p, &parsed, |file, meta| match checkpoint_of(file, meta) {
                Some(off) if off < meta.len() => Some(Start::At(off)),
                _ => None,
            });
            if let Some(mut f) = f {
                // Its active path is the one it had before the rename.
                f.path = p.with_file_name(format!("{}.log", parsed.restart));
                f.draining_since = Some(Instant::now());
                self.draining.push(f);
            }
        }
        let start_at = self.settings.start_at;
        for p in &found.active {
            let Some(parsed) = path::parse(p) else { continue };
            if self.filters.excludes(&parsed) {
                continue;
            }
            let f = self.open(p, &parsed, |file, meta| {
                Some(match checkpoint_of(file, meta) {
                    Some(off) if off <= meta.len() => Start::At(off),
                    Some(_) => Start::Beginning,
                    None if first_start && start_at == StartAt::End => Start::End,
                    None => Start::Beginning,
                })
            });
            if let Some(f) = f {
                self.active.insert(p.clone(), f);
                if self.held > self.settings.max_open_files {
                    // Reopened when descriptors free up (see `reopen_changed`).
                    self.park(p);
                }
            }
        }
        // Checkpoints of files still in the tree (read or not) are settled; the others may have
        // been compressed while the agent was down.
        // (An inode number can be reused by a new file: the fingerprint decides.)
        for p in found.rotated.iter().chain(found.active.iter()) {
            let Ok(file) = self.allowed.open(p) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            let key = (meta.dev(), meta.ino());
            if unmatched.get(&key).is_some_and(|c| c.identity.matches(&file, &meta).unwrap_or(false)) {
                unmatched.remove(&key);
            }
        }
        for c in unmatched.into_values() {
            self.catch_up_compressed(c);
        }
        tracing::info!(
            files = self.active.len(),
            rotated = self.draining.len(),
            open = self.held,
            max_open_files = self.settings.max_open_files,
            first_start,
            root = %self.settings.root.display(),
            "log tailer started"
        );
        self.write_checkpoint();
    }

    fn open(
        &mut self,
        path: &Path,
        parsed: &PodLogPath,
        start: impl FnOnce(&File, &Metadata) -> Option<Start>,
    ) -> Option<OpenFile> {
        let file = match self.allowed.open(path) {
            Ok(f) => f,
            Err((Refusal::OpenFailed, e)) => {
                // Tried again at the next event or rescan (e.g. out of descriptors); warned once.
                metrics().files_refused.with_label_values(&[Refusal::OpenFailed.as_str()]).inc();
                if e.kind() != std::io::ErrorKind::NotFound && self.open_failed.insert(path.to_path_buf()) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open a log file; will retry");
                }
                return None;
            }
            Err((reason, e)) => {
                let entry = std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino())).unwrap_or((0, 0));
                if self.refused.insert(path.to_path_buf(), entry) != Some(entry) {
                    metrics().files_refused.with_label_values(&[reason.as_str()]).inc();
                    tracing::warn!(path = %path.display(), reason = reason.as_str(), error = %e, "not reading this log file");
                }
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        let identity = FileIdentity::of(&file, &meta).ok()?;
        let offset = match start(&file, &meta)? {
            Start::Beginning => 0,
            Start::At(o) => o,
            Start::End => end_of_last_line(&file, meta.len()),
        };
        self.track_open(path, parsed, file, &meta, identity, offset)
    }

    /// Looks up the pod, computes the stream and starts tracking an opened file at `offset`
    /// under `identity`. `None` when the pod is annotated to be excluded.
    fn track_open(
        &mut self,
        path: &Path,
        parsed: &PodLogPath,
        file: File,
        meta: &Metadata,
        identity: FileIdentity,
        offset: u64,
    ) -> Option<OpenFile> {
        let meta_info = self.metadata.lookup(&parsed.namespace, &parsed.pod, &parsed.uid);
        if meta_info.as_ref().is_some_and(|i| i.excluded) {
            tracing::debug!(path = %path.display(), "pod annotated {EXCLUDE_ANNOTATION}: its logs are not shipped");
            self.ignored.insert(path.to_path_buf(), (meta.dev(), meta.ino()));
            return None;
        }
        let labels: Arc<str> = Arc::from(stream_labels(&self.node, parsed, meta_info.as_ref()));
        let stream = match self.streams.get(&labels) {
            Some(s) => s.clone(),
            None => {
                self.next_stream += 1;
                let s = StreamRef { id: self.next_stream, labels: labels.clone() };
                self.streams.insert(labels, s.clone());
                s
            }
        };
        let key = lock(&self.ship.registry).track(identity, path.to_path_buf(), offset, meta.len());
        let max_line = self.settings.max_line;
        tracing::debug!(path = %path.display(), offset, "opened log file");
        if path.to_str().is_none() {
            metrics().non_utf8_paths.inc();
            if !self.non_utf8_warned {
                self.non_utf8_warned = true;
                tracing::warn!(path = %path.display(), "a log file's directory names are not UTF-8: shipping it with the labels converted lossily (U+FFFD); counted in lgtm_agent_logs_non_utf8_paths_total, warned once");
            }
        }
        self.held += 1;
        let polled = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        Some(OpenFile {
            key,
            wanted: false,
            polled,
            hot: false,
            last_written: None,
            path: path.to_path_buf(),
            file: Some(file),
            last_data: Instant::now(),
            identity,
            reader: LineReader::new(offset, self.settings.tuning.block_size, reader_cap(max_line)),
            decoder: Decoder::new(max_line),
            stream,
            size: meta.len(),
            at_eof: false,
            draining_since: None,
        })
    }

    /// A checkpoint whose file is no longer in the tree: if the kubelet compressed it while the
    /// agent was down, reads the rest of it from the `.gz` (see [`compressed`]) before the stream's
    /// newer files.
    fn catch_up_compressed(&mut self, c: Checkpoint) {
        let Some(gz) = compressed::find(&c) else {
            tracing::debug!(path = %c.path.display(), "a checkpointed log file is gone");
            return;
        };
        let Some(parsed) = path::parse(&c.path).or_else(|| path::parse_rotated(&c.path)) else { return };
        if self.filters.excludes(&parsed) {
            return;
        }
        let tmp_dir = self.store.path().parent().unwrap_or(Path::new(".")).to_path_buf();
        let file = match compressed::decompress(&gz, &tmp_dir, &c.identity.inode.to_string()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %gz.display(), error = %e, "cannot decompress a rotated log file to catch up on it");
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        if c.offset >= meta.len() {
            return;
        }
        let active = c.path.with_file_name(format!("{}.log", parsed.restart));
        tracing::info!(path = %gz.display(), offset = c.offset, "catching up on a log file compressed while the agent was down");
        if let Some(mut f) = self.track_open(&active, &parsed, file, &meta, c.identity, c.offset) {
            f.draining_since = Some(Instant::now());
            // Older than the stream's rotated and active files: read first.
            self.draining.insert(0, f);
        }
    }

    /// Reads the files with new data, a few blocks at a time in turn. Within a stream, one file
    /// at a time (the rotated one first), so entries stay in file order.
    ///
    /// A file is looked at (`fstat`, then read) when inotify reported a write to it, when it was
    /// not read to its end yet (new, reopened, paused by the in-flight cap, or longer than a
    /// turn), when it is being drained or cannot be watched, on a `full` pass every file but the
    /// hot ones, and on a `hot` pass the files of muted directories.
    ///
    /// Returns whether anything was read, and whether the hot pass read anything.
    fn read_all(&mut self, stop: &CancellationToken, full: bool, hot: bool) -> (bool, bool) {
        const BLOCKS_PER_TURN: usize = 4;
        let max_line = self.settings.max_line;
        let mut read_any = false;
        let mut hot_read = false;
        let mut first = true;
        let mut busy: HashSet<u64> = HashSet::new();
        loop {
            let mut progressed = false;
            busy.clear();
            for f in self.draining.iter_mut().chain(self.active.values_mut()) {
                if busy.contains(&f.stream.id) {
                    continue;
                }
                let due = !f.at_eof
                    || f.wanted
                    || (first && hot && f.hot)
                    || f.polled
                    || f.draining_since.is_some()
                    // Hot files are read every `hot_interval` anyway.
                    || (first && full && !f.hot);
                if !due {
                    continue;
                }
                f.wanted = false;
                let got =
                    read_file(&mut self.ship, &mut self.scratch, f, Some(BLOCKS_PER_TURN), max_line, &self.allowed);
                progressed |= got;
                hot_read |= got && hot && f.hot;
                if !f.at_eof {
                    busy.insert(f.stream.id);
                }
            }
            read_any |= progressed;
            first = false;
            if !progressed || self.ship.closed || stop.is_cancelled() {
                return (read_any, hot_read);
            }
            if self.ship.due() {
                self.ship.flush();
            }
        }
    }

    /// Lets go of rotated or deleted files that are done.
    fn release_drained(&mut self) {
        let rotate_wait = self.settings.tuning.rotate_wait;
        let mut i = 0;
        while i < self.draining.len() {
            let f = &self.draining[i];
            let deleted = f.file.as_ref().and_then(|f| f.metadata().ok()).is_none_or(|m| m.nlink() == 0);
            // A fresh look at the replacement: its data proves the writer moved on.
            let replaced = self.active.get(&f.path).is_some_and(|a| {
                a.size > 0 || a.file.as_ref().and_then(|f| f.metadata().ok()).is_some_and(|m| m.len() > 0)
            });
            let waited = f.draining_since.is_some_and(|t| t.elapsed() >= rotate_wait);
            if f.at_eof && (deleted || replaced || waited) {
                let f = self.draining.swap_remove(i);
                self.close(f);
            } else {
                i += 1;
            }
        }
    }

    /// Reads `f` to its end one last time, ships what is left and closes the descriptor.
    fn close(&mut self, mut f: OpenFile) {
        let max_line = self.settings.max_line;
        while read_file(&mut self.ship, &mut self.scratch, &mut f, None, max_line, &self.allowed) {}
        let batch = &mut self.ship.batch;
        let stream = &f.stream;
        if let Some(line) = f.reader.take_rest(&self.scratch) {
            f.decoder.push(line, now_nanos, &mut |e| batch.push(stream, &e));
        }
        f.decoder.finish(&mut |e| batch.push(stream, &e));
        self.ship.note_offset(f.key, f.reader.offset());
        account(&mut f);
        // Register the final offset before releasing, so the file stays in the checkpoints until
        // its last batch is acknowledged.
        self.ship.flush();
        lock(&self.ship.registry).release(f.key);
        if f.file.take().is_some() {
            self.held -= 1;
        }
        tracing::debug!(path = %f.path.display(), "closed log file");
    }

    /// inotify saw `p` written to: an open file is read at the next pass (its descriptor tells
    /// what is new; a rotation or a deletion comes with events of their own, in `changed`); any
    /// other path is looked at as an event would.
    ///
    /// A file reported again within [`MUTE_WITHIN`] is written to all the time: its directory's
    /// write events are muted and its files read every [`hot_interval`] instead.
    fn on_written(&mut self, p: PathBuf, changed: &HashSet<PathBuf>) {
        match self.active.get_mut(&p) {
            Some(f) if f.file.is_some() => {
                f.wanted = true;
                let now = Instant::now();
                let again = f.last_written.replace(now).is_some_and(|t| now.duration_since(t) < MUTE_WITHIN);
                if again && !f.hot {
                    if let Some(dir) = p.parent() {
                        self.mute(dir);
                    }
                }
            }
            _ if changed.contains(&p) => {}
            _ => self.on_event(&p),
        }
    }

    /// The active files directly in `dir`.
    fn files_in<'a>(
        active: &'a mut BTreeMap<PathBuf, OpenFile>,
        dir: &'a Path,
    ) -> impl Iterator<Item = &'a mut OpenFile> + 'a {
        // Paths order by component: a directory's files follow it, before any other directory.
        active
            .range_mut::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(dir))
            .filter(move |(p, _)| p.parent() == Some(dir))
            .map(|(_, f)| f)
    }

    /// Mutes the write events of `dir` (see [`Watcher::mute`]) and makes its files hot. Not
    /// while one of them is closed (`logs.max_open_files`): only events reopen those.
    fn mute(&mut self, dir: &Path) {
        if self.muted.contains(dir) || Self::files_in(&mut self.active, dir).any(|f| f.file.is_none()) {
            return;
        }
        if self.watcher.mute(dir) {
            for f in Self::files_in(&mut self.active, dir) {
                f.hot = true;
            }
            self.muted.insert(dir.to_path_buf());
        }
    }

    /// Gives `dir` its write events back; its files are read once more after that (what was
    /// written in between came with no event).
    fn unmute(&mut self, dir: &Path) {
        if !self.muted.remove(dir) {
            return;
        }
        // A directory gone with its watch: nothing to unmute.
        let _ = self.watcher.unmute(dir);
        for f in Self::files_in(&mut self.active, dir) {
            f.hot = false;
            f.wanted = true;
        }
    }

    /// Unmutes the directories whose files had no new data for [`UNMUTE_AFTER`].
    fn unmute_quiet(&mut self) {
        // One pass over the files (a range lookup per muted directory compared paths component
        // by component: a percent of the tailer's CPU with 100 busy files).
        let now = Instant::now();
        let busy: HashSet<&Path> = self
            .active
            .iter()
            .filter(|(_, f)| !f.at_eof || now.saturating_duration_since(f.last_data) < UNMUTE_AFTER)
            .filter_map(|(p, _)| p.parent())
            .collect();
        let quiet: Vec<PathBuf> = self.muted.iter().filter(|dir| !busy.contains(dir.as_path())).cloned().collect();
        for dir in quiet {
            self.unmute(&dir);
        }
    }

    fn on_event(&mut self, p: &Path) {
        if path::parse(p).is_some() {
            self.check_path(p);
        } else if p.is_dir() {
            let found = discovery::scan_under(&self.settings.root, p);
            for a in found.active {
                self.check_path(&a);
            }
        }
    }

    /// Brings `p` up to date: opens a new file, notices a rotation or deletion. `true` if
    /// anything changed.
    fn check_path(&mut self, p: &Path) -> bool {
        let Some(parsed) = path::parse(p) else { return false };
        match std::fs::metadata(p) {
            Err(_) => match self.active.remove(p) {
                Some(f) => {
                    self.start_draining(f);
                    true
                }
                None => false,
            },
            Ok(meta) => {
                let mut changed = false;
                if let Some(f) = self.active.get_mut(p) {
                    if f.same_file(&meta) {
                        if f.file.is_none() {
                            // Closed: reopened once this differs from what was read.
                            f.size = meta.len();
                        } else {
                            // Written to as well, maybe (the events of a path are merged).
                            f.wanted = true;
                        }
                        return false;
                    }
                    if let Some(old) = self.active.remove(p) {
                        self.start_draining(old);
                        changed = true;
                    }
                }
                if self.filters.excludes(&parsed) || self.ignored.get(p) == Some(&(meta.dev(), meta.ino())) {
                    return changed;
                }
                if let Some(entry) = self.refused.get(p) {
                    if std::fs::symlink_metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == *entry) {
                        return changed;
                    }
                }
                if let Some(mut f) = self.open(p, &parsed, |_, _| Some(Start::Beginning)) {
                    // A new file in a muted directory (a restarted container's) sends no write
                    // events either.
                    f.hot = p.parent().is_some_and(|d| self.muted.contains(d));
                    self.active.insert(p.to_path_buf(), f);
                    if self.held > self.settings.max_open_files {
                        self.park(p);
                    }
                    changed = true;
                }
                changed
            }
        }
    }

    fn start_draining(&mut self, mut f: OpenFile) {
        if f.file.is_none() {
            // Closed to save descriptors when it was rotated or deleted.
            match find_moved(&self.allowed, &f) {
                Some(file) => {
                    f.file = Some(file);
                    self.held += 1;
                    metrics().files_reopened.inc();
                }
                None => return self.gone_while_closed(f),
            }
        }
        tracing::debug!(path = %f.path.display(), "log file rotated or deleted; reading it to its end");
        f.draining_since = Some(Instant::now());
        f.at_eof = false;
        self.draining.push(f);
    }

    /// A closed file whose path leads elsewhere now and that is not found beside it (deleted, or
    /// already compressed): ships what it left unfinished and lets it go. Bytes it was known to
    /// have beyond what was read are lost: counted, warned once.
    fn gone_while_closed(&mut self, mut f: OpenFile) {
        let lost = f.size.saturating_sub(f.reader.read_offset());
        let batch = &mut self.ship.batch;
        let stream = &f.stream;
        if let Some(line) = f.reader.take_rest(&self.scratch) {
            f.decoder.push(line, now_nanos, &mut |e| batch.push(stream, &e));
        }
        f.decoder.finish(&mut |e| batch.push(stream, &e));
        self.ship.note_offset(f.key, f.reader.offset());
        account(&mut f);
        self.ship.flush();
        lock(&self.ship.registry).release(f.key);
        if lost > 0 {
            metrics().bytes_lost_gone.inc_by(lost);
            if !self.gone_warned {
                self.gone_warned = true;
                tracing::warn!(path = %f.path.display(), lost_bytes = lost, "a log file closed to stay under logs.max_open_files was deleted before its new data was read (counted in lgtm_agent_logs_bytes_lost_total{{reason=\"gone_while_closed\"}}; warned once)");
            }
        }
        tracing::debug!(path = %f.path.display(), "closed log file is gone");
    }

    /// Closes the descriptor of the idle active file at `p`, keeping everything else.
    fn park(&mut self, p: &Path) {
        // Only events reopen a closed file: its directory's must come.
        if let Some(dir) = p.parent().filter(|d| self.muted.contains(*d)) {
            let dir = dir.to_path_buf();
            self.unmute(&dir);
        }
        let Some(f) = self.active.get_mut(p) else { return };
        let Some(file) = f.file.take() else { return };
        if let Ok(m) = file.metadata() {
            // Data written since the last read makes it wanted again at once.
            f.size = m.len();
            let _ = f.identity.grow(&file, m.len());
        }
        f.at_eof = true;
        self.held -= 1;
        metrics().files_closed_idle.inc();
    }

    /// Reopens closed files that changed (grew, shrank or were replaced: what was read differs
    /// from their last known size), oldest data first, closing the least recently read idle files
    /// while descriptors are at `max_open_files`. Returns whether some still wait for one and the
    /// next turn should come at once (files were reopened, so some will be idle after reading).
    fn reopen_changed(&mut self) -> bool {
        if self.held >= self.active.len() + self.draining.len() {
            return false;
        }
        let mut wanted: Vec<(Instant, PathBuf)> = self
            .active
            .iter()
            .filter(|(_, f)| f.file.is_none() && f.size != f.reader.read_offset())
            .map(|(p, f)| (f.last_data, p.clone()))
            .collect();
        if wanted.is_empty() {
            return false;
        }
        wanted.sort();
        let cap = self.settings.max_open_files;
        let mut idle: Vec<(Instant, PathBuf)> = Vec::new();
        if self.held + wanted.len() > cap {
            idle = self
                .active
                .iter()
                .filter(|(_, f)| f.file.is_some() && f.at_eof && f.size <= f.reader.read_offset())
                .map(|(p, f)| (f.last_data, p.clone()))
                .collect();
            // Most recently read first: `pop` takes the least recently read.
            idle.sort_by(|a, b| b.cmp(a));
        }
        let mut reopened = false;
        for (_, p) in wanted {
            if self.held >= cap {
                match idle.pop() {
                    Some((_, victim)) => self.park(&victim),
                    // Every held file is busy (or being drained): go on once this turn read them
                    // to their end. Nothing reopened means nothing to gain by not waiting (e.g.
                    // reading is paused at the in-flight cap): the usual wake-ups apply.
                    None => return reopened,
                }
            }
            self.reopen(&p);
            reopened = true;
        }
        false
    }

    /// Reopens the closed file at `p` if the path still leads to it; otherwise sorts out the
    /// rotation or deletion as an event would.
    fn reopen(&mut self, p: &Path) {
        let opened = self.allowed.open(p).ok().and_then(|file| file.metadata().ok().map(|m| (file, m)));
        let Some(f) = self.active.get_mut(p) else { return };
        match opened {
            Some((file, meta)) if f.same_file(&meta) => {
                let rewritten = !f.identity.matches(&file, &meta).unwrap_or(true);
                f.file = Some(file);
                f.at_eof = false;
                self.held += 1;
                metrics().files_reopened.inc();
                if rewritten {
                    // Same inode, other first bytes: truncated and written again while closed.
                    let max_line = self.settings.max_line;
                    truncated(&mut self.ship, &mut self.scratch, f, &meta, max_line, &self.allowed);
                }
            }
            _ => {
                if !self.check_path(p) {
                    // Still there and the same, yet not opened (e.g. out of descriptors): tried
                    // again at its next event or rescan.
                    if let Some(f) = self.active.get_mut(p) {
                        f.size = f.reader.read_offset();
                    }
                }
            }
        }
    }

    /// The full walk that recovers from missed events.
    fn rescan(&mut self) {
        if !self.watcher.is_active() {
            self.watcher = Watcher::start(&self.settings.root, self.wake_tx.clone(), coalesce(&self.settings.tuning));
            // A new inotify instance: nothing is muted any more.
            self.muted.clear();
            for f in self.active.values_mut() {
                f.hot = false;
                f.wanted = true;
            }
        }
        let found = discovery::scan(&self.settings.root);
        let seen: HashSet<&PathBuf> = found.active.iter().collect();
        self.ignored.retain(|p, _| seen.contains(p));
        self.refused.retain(|p, _| seen.contains(p));
        self.open_failed.retain(|p| seen.contains(p) && !self.active.contains_key(p));
        let gone: Vec<PathBuf> = self.active.keys().filter(|p| !seen.contains(p)).cloned().collect();
        let mut recovered = 0u64;
        for p in gone.iter().chain(found.active.iter()) {
            if self.check_path(p) {
                recovered += 1;
            }
        }
        if recovered > 0 {
            tracing::info!(files = recovered, "rescan found log files inotify did not report");
            metrics().rescan_recoveries.inc_by(recovered);
        }
        // Forget the streams of containers that are gone.
        let used: HashSet<u64> = self.active.values().chain(self.draining.iter()).map(|f| f.stream.id).collect();
        self.streams.retain(|_, s| used.contains(&s.id));
    }

    /// Moves the files' sizes and fingerprints into the registry and updates the gauges.
    fn publish_state(&mut self) {
        for f in self.active.values_mut().chain(self.draining.iter_mut()) {
            if let Some(file) = &f.file {
                let _ = f.identity.grow(file, f.size);
            }
            account(f);
        }
        let mut reg = lock(&self.ship.registry);
        for f in self.active.values().chain(self.draining.iter()) {
            reg.update(f.key, f.identity, f.size);
        }
        let lag = reg.lag_bytes();
        drop(reg);
        let m = metrics();
        m.lag_bytes.set(lag as i64);
        m.files_open.set(self.held as i64);
        m.files_tracked.set((self.active.len() + self.draining.len()) as i64);
    }

    fn write_checkpoint(&mut self) {
        let snapshot = {
            let mut reg = lock(&self.ship.registry);
            if !reg.is_dirty() && !self.checkpoint_failing {
                return;
            }
            reg.snapshot()
        };
        match self.store.save(snapshot) {
            Ok(()) => self.checkpoint_failing = false,
            Err(e) => {
                metrics().checkpoint_write_errors.inc();
                if !self.checkpoint_failing {
                    tracing::error!(error = %e, "cannot write log checkpoints; will retry");
                }
                self.checkpoint_failing = true;
            }
        }
    }
}

/// Moves a file's decode counters into the self-metrics.
fn account(f: &mut OpenFile) {
    let s = std::mem::take(&mut f.decoder.stats);
    let m = metrics();
    if s.parse_errors > 0 {
        match f.decoder.format() {
            Some(Format::Docker) => m.parse_errors_docker.inc_by(s.parse_errors),
            _ => m.parse_errors_cri.inc_by(s.parse_errors),
        }
    }
    m.lines_split.inc_by(s.lines_split);
}

/// The offset just after the last `\n` within the file's last 64 KiB (or the size if none).
fn end_of_last_line(file: &File, size: u64) -> u64 {
    let tail = size.min(64 * 1024);
    let mut buf = vec![0u8; tail as usize];
    match file.read_exact_at(&mut buf, size - tail) {
        Ok(()) => memchr::memrchr(b'\n', &buf).map_or(size, |i| size - tail + i as u64 + 1),
        Err(_) => size,
    }
}
