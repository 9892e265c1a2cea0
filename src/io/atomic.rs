//! Crash-safe file writes.
//!
//! A training run is often killed mid-write (Ctrl-C, OOM killer, a preempted machine). Writing straight into
//! `samples.png` or `checkpoint.safetensors` would then leave a half-written file where the previous good one
//! was. Instead we write a temporary file in the *same directory* (a rename is only atomic within one file
//! system), flush it to stable storage, and rename it over the destination: readers see either the old file
//! or the complete new one, never a torn one.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically (temporary file + fsync + rename). The parent directory must exist.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| {
        w.write_all(bytes)?;
        Ok(())
    })
}

/// Like [`write_atomic`], but the content is streamed by `write` into a buffered writer, so large outputs
/// (checkpoints) need not be assembled in memory first. If `write` fails, the destination is untouched and the
/// temporary file is removed.
pub fn write_atomic_with<F>(path: impl AsRef<Path>, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let path = path.as_ref();
    let tmp = temp_path_for(path)?;
    let result = (|| -> Result<()> {
        let file = File::create(&tmp)
            .with_context(|| format!("cannot create temporary file {}", tmp.display()))?;
        let mut w = BufWriter::new(file);
        write(&mut w).with_context(|| format!("while writing {}", path.display()))?;
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot flush {}", tmp.display()))?;
        // Without this the rename can reach the disk before the data does, and a power loss would leave an
        // empty file under the final name.
        file.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        drop(file);
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_parent_dir(path);
    Ok(())
}

/// A temporary name next to `path`, unique per process and call so that concurrent writers (two threads
/// saving two grids into one directory) never share a temporary file.
fn temp_path_for(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .with_context(|| format!("cannot write to {}: not a file path", path.display()))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        n
    );
    Ok(path.with_file_name(tmp_name))
}

/// Makes the rename itself durable. Best effort: some platforms and file systems cannot open or sync a
/// directory, and the data is already safe at this point, so failures are ignored.
fn sync_parent_dir(path: &Path) {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes renames in `dir` durable, best effort (see `sync_parent_dir`).
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write_atomic(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn failed_write_keeps_old_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ckpt");
        write_atomic(&p, b"good").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("simulated failure")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("simulated failure"));
        assert_eq!(fs::read(&p).unwrap(), b"good");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/file.png");
        let err = format!("{:#}", write_atomic(&p, b"x").unwrap_err());
        assert!(err.contains("no/such/dir"), "{err}");
    }
}
