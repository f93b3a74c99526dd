//! Catching up on a file the kubelet compressed while the agent was down.
//!
//! The kubelet keeps the newest rotated file as `<n>.log.<timestamp>` and gzips older ones
//! (`<n>.log.<timestamp>.gz`, through a `.tmp` file). While the agent runs it holds the descriptor
//! of a rotated file until it has read it to its end, so compression never takes lines from it.
//! After an outage of the agent that spans two rotations of a container, though, a file its
//! checkpoint points into may exist only compressed. At start, such a checkpoint is matched to
//! the `.gz` whose decompressed head has the checkpoint's fingerprint ([`find`]); the file is
//! decompressed into an unlinked temporary file under `data_dir/logs` ([`decompress`]) and read
//! from the checkpoint's offset like a rotated file, under the checkpoint's identity, so that
//! its acknowledgements advance that checkpoint: a second restart continues where the first left
//! off, and once read to its end the checkpoint is dropped and the `.gz` is never read again.
//!
//! Not covered: files rotated (and compressed) during the outage that the agent had never opened
//! have no checkpoint, and nothing tells them apart from files already shipped and let go before
//! the outage (the checkpoints forget a file once it is read to its end), so they are not read.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::checkpoint::Checkpoint;
use super::identity::FileIdentity;

/// The `<n>.log.<timestamp>.gz` in the checkpoint's directory whose content starts with the bytes
/// the checkpoint's fingerprint covers, if any.
pub fn find(checkpoint: &Checkpoint) -> Option<PathBuf> {
    let dir = checkpoint.path.parent()?;
    let name = checkpoint.path.file_name()?.to_str()?;
    let prefix = format!("{}.log.", name.split_once(".log")?.0);
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".gz"))
        })
        .collect();
    candidates.sort();
    candidates.into_iter().find(|p| head_matches(p, &checkpoint.identity).unwrap_or(false))
}

fn head_matches(gz: &Path, identity: &FileIdentity) -> io::Result<bool> {
    let mut head = Vec::with_capacity(identity.head_len as usize);
    MultiGzDecoder::new(File::open(gz)?).take(identity.head_len).read_to_end(&mut head)?;
    Ok(head.len() as u64 == identity.head_len && xxhash_rust::xxh3::xxh3_64(&head) == identity.head_hash)
}

/// Decompresses `gz` into a file under `dir` that is unlinked at once: it lives as long as the
/// returned descriptor, and its link count of 0 lets the tailer close it once read to its end.
pub fn decompress(gz: &Path, dir: &Path, name: &str) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("catch-up-{name}.tmp"));
    let mut out = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    let copied = io::copy(&mut MultiGzDecoder::new(File::open(gz)?), &mut out);
    std::fs::remove_file(&path)?;
    copied?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::{FileExt, MetadataExt};

    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(path: &Path, content: &[u8]) {
        let mut enc = GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        enc.write_all(content).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn the_gz_with_the_checkpointed_head_is_found_and_decompressed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ns_pod_uid").join("app");
        std::fs::create_dir_all(&dir).unwrap();
        let ours = b"2024-01-01T00:00:00Z stdout F ours 0\n2024-01-01T00:00:00Z stdout F ours 1\n".repeat(10);
        let live = dir.join("0.log");
        std::fs::write(&live, &ours).unwrap();
        let f = File::open(&live).unwrap();
        let identity = FileIdentity::of(&f, &f.metadata().unwrap()).unwrap();
        let checkpoint = Checkpoint { identity, offset: 40, path: live.clone() };
        // The file as the kubelet leaves it: renamed, compressed, gone; an older and a newer one beside it.
        std::fs::remove_file(&live).unwrap();
        gzip(&dir.join("0.log.20240101-000000.gz"), b"2023-12-31T00:00:00Z stdout F older\n");
        gzip(&dir.join("0.log.20240101-010000.gz"), &ours);
        gzip(&dir.join("1.log.20240101-010000.gz"), &ours);
        std::fs::write(dir.join("0.log.20240101-020000"), b"2024-01-01T02:00:00Z stdout F newer\n").unwrap();

        let gz = find(&checkpoint).expect("found");
        assert_eq!(gz, dir.join("0.log.20240101-010000.gz"));
        let tmp = d.path().join("data");
        let file = decompress(&gz, &tmp, "1").unwrap();
        assert_eq!(file.metadata().unwrap().nlink(), 0, "unlinked");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing left behind");
        let mut back = vec![0u8; ours.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, ours);

        let other = Checkpoint { identity: FileIdentity { head_hash: 1, ..identity }, offset: 0, path: live };
        assert_eq!(find(&other), None, "no gz with that head");
    }
}
