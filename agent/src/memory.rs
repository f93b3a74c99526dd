//! How the process uses memory, set up once: the allocator's policy at start and, once the agent
//! has started, giving back the pages of code and read-only data that only start-up touched.
//!
//! Measured with `bench logs` (see STATUS.md, issue 9), these are where an idle or busy agent's
//! resident memory went beyond what it holds on purpose (the queues and batches):
//! - glibc malloc raises its mmap threshold to the size of the largest buffer freed (up to
//!   32 MiB), after which the ~1 MiB batch buffers come from the heap arenas and stay there when
//!   freed, fragmented across one arena per thread: about 19 MiB at the peak of a 1 GiB run.
//!   A fixed threshold keeps large buffers in their own mappings, returned to the system when
//!   freed; two arenas bound how many heaps the threads spread over on a node with many cores.
//! - The binary's code and read-only data touched during start-up (CLI, config parsing, TLS,
//!   client set-up) stay resident as file pages: about 12 MiB of a 16 MiB idle agent. They are
//!   never run again, so the agent tells the kernel to reclaim them; the code that does run
//!   faults back in (about 2 MiB).

use std::time::Duration;

/// Buffers at least this large get their own mapping (glibc's initial default, kept fixed).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// Heap arenas glibc may create (its default is 8 per core).
const ARENA_MAX: libc::c_int = 2;

/// When, after the sources started, the pages of their set-up are given back (those of the
/// CLI, config and pipeline set-up go just before the sources start, so that a catch-up backlog
/// read at once does not add its buffers to them): once the first scan of the log files is done,
/// and again once the first connections and the first list of the Kubernetes API are.
pub const PAGE_OUT_AFTER: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(10)];

/// Sets the allocator's policy. Call first thing in `main`, before any thread starts.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes glibc's malloc parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// Asks the kernel to reclaim the resident pages of this process's read-only file mappings (the
/// binary's code and constants, shared libraries) that no other process maps: the next use of a
/// page reads it back. Returns the bytes of mappings advised; 0 where `MADV_PAGEOUT` is not
/// available (Linux before 5.4), which changes nothing else.
pub fn page_out_code() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return 0 };
    let mut advised = 0;
    for (start, len) in maps.lines().filter_map(read_only_file_mapping) {
        // SAFETY: the range is a whole mapping of this process, read-only and backed by a file:
        // reclaiming its clean pages changes no content, they are read again on the next access.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        if rc != 0 {
            return advised;
        }
        advised += len;
    }
    advised
}

/// `(start, length)` of a `/proc/self/maps` line that maps a file without write permission.
fn read_only_file_mapping(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let path = fields.nth(3)?;
    if !path.starts_with('/') || !perms.starts_with('r') || perms.as_bytes().get(1) != Some(&b'-') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (end > start).then(|| (start, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_paged_out() {
        let cases = [
            (
                "55d0c0a00000-55d0c1a00000 r-xp 00200000 fd:01 1234   /usr/bin/lgtm-agent",
                Some((0x55d0c0a00000, 0x1000000)),
            ),
            ("7f00-8f00 r--p 00000000 fd:01 99   /lib/x86_64-linux-gnu/libc.so.6", Some((0x7f00, 0x1000))),
            ("7f00-8f00 rw-p 00000000 fd:01 99   /lib/x86_64-linux-gnu/libc.so.6", None),
            ("7f00-8f00 rw-p 00000000 00:00 0", None),
            ("7f00-8f00 r--p 00000000 00:00 0   [vvar]", None),
            ("7ffd-7ffe rw-p 00000000 00:00 0   [stack]", None),
            ("7f00-8f00 ---p 00000000 fd:01 99   /lib/x86_64-linux-gnu/libc.so.6", None),
            ("garbage", None),
        ];
        for (line, want) in cases {
            assert_eq!(read_only_file_mapping(line), want, "{line}");
        }
    }

    #[test]
    fn paging_out_keeps_the_process_running() {
        let before = std::hint::black_box(vec![1u8, 2, 3]);
        page_out_code();
        assert_eq!(format!("{before:?}"), "[1, 2, 3]", "code and constants read back after the page-out");
    }
}
