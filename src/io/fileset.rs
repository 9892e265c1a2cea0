//! Files that must change together, written as one unit.
//!
//! A training's save is a checkpoint plus the generator files made from it. Written one atomic rename at a time,
//! a crash between two renames leaves them at different steps. Here the whole set is written into a fresh
//! directory, which then takes the place of `dir/SET` in one atomic exchange (Linux `renameat2` with
//! `RENAME_EXCHANGE`); each file keeps its usual name as a symlink `dir/NAME -> SET/NAME` that never changes.
//! Whatever instant the writer dies at, a reader opening `dir/NAME` sees the old set or the new one, never a mix.
//!
//! Crash states, all recovered by the next writer (the lock of the run directory keeps writers one at a time):
//! - before the exchange: a `.SET.PID.N.tmp` directory with a partial new set; `dir/SET` is the old set;
//! - after it: the same temporary name holds the old set, `dir/SET` the new one.
//!
//! Where the exchange is unavailable (not Linux, or a file system without it), the files are moved into `dir/SET`
//! one rename at a time: each file stays atomic, the set does not. Where a symlink cannot be made, the set is
//! written as plain files beside each other, each atomically.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use super::atomic::sync_dir;

/// Writes `files` (name, contents) as the set `dir/set`, reached as `dir/NAME`. A symlink `dir/NAME` into the set
/// whose file the new set lacks is removed with it.
pub fn write_file_set(dir: &Path, set: &str, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let tmp = dir.join(temp_name(set));
    let result = write_dir(&tmp, files).and_then(|()| replace_set(dir, set, &tmp, files));
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result?;
    sync_dir(dir);
    for (name, _) in files {
        link(dir, set, name)?;
    }
    remove_dangling_links(dir, set, files)
}

/// Removes every symlink `dir/NAME -> set/NAME` whose NAME is not in `files` (its file left with the old set).
fn remove_dangling_links(dir: &Path, set: &str, files: &[(&str, Vec<u8>)]) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let into_set = fs::read_link(&p).is_ok_and(|t| t == Path::new(set).join(name));
        if into_set && !files.iter().any(|(f, _)| *f == name) {
            fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    Ok(())
}

/// A temporary name in the same directory, unique per process and call.
fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}.{n}.tmp", std::process::id())
}

/// A new directory holding `files`, each synced, and the directory itself synced.
fn write_dir(path: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    fs::create_dir(path).with_context(|| format!("cannot create {}", path.display()))?;
    for (name, bytes) in files {
        let p = path.join(name);
        let mut f = File::create(&p).with_context(|| format!("cannot create {}", p.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    sync_dir(path);
    Ok(())
}

/// Puts the set in `tmp` at `dir/set`; afterwards `tmp` holds the old set, or nothing.
fn replace_set(dir: &Path, set: &str, tmp: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let target = dir.join(set);
    if fs::symlink_metadata(&target).is_err() {
        return fs::rename(tmp, &target)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), target.display()));
    }
    if exchange(tmp, &target).is_ok() {
        return Ok(());
    }
    // No atomic exchange here: move the files over one by one.
    for (name, _) in files {
        let (from, to) = (tmp.join(name), target.join(name));
        fs::rename(&from, &to)
            .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Makes `dir/name` the symlink `set/name`, replacing a plain file of that name (a run written before sets) in
/// one rename. Where no symlink can be made, copies the file there atomically instead.
fn link(dir: &Path, set: &str, name: &str) -> Result<()> {
    let path = dir.join(name);
    let target: PathBuf = Path::new(set).join(name);
    if fs::read_link(&path).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let tmp = dir.join(temp_name(name));
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(&target, &tmp);
    #[cfg(not(unix))]
    let made: std::io::Result<()> = Err(std::io::ErrorKind::Unsupported.into());
    if made.is_err() {
        let bytes = fs::read(dir.join(&target))?;
        return super::write_atomic(&path, &bytes);
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()));
    }
    sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_set_replaces_the_last_one_whole_and_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        // A run from before sets: plain files.
        fs::write(d.path().join("a"), b"old a").unwrap();
        fs::write(d.path().join("b"), b"old b").unwrap();
        write_file_set(
            d.path(),
            "saved",
            &[("a", b"a1".to_vec()), ("b", b"b1".to_vec())],
        )
        .unwrap();
        assert_eq!(fs::read(d.path().join("a")).unwrap(), b"a1");
        assert_eq!(fs::read(d.path().join("b")).unwrap(), b"b1");
        write_file_set(d.path(), "saved", &[("a", b"a2".to_vec())]).unwrap();
        assert_eq!(fs::read(d.path().join("a")).unwrap(), b"a2");
        // b's file went with the old set, and its link with it.
        assert_eq!(names(d.path()), ["a", "saved"]);
        assert_eq!(names(&d.path().join("saved")), ["a"]);
        assert_eq!(
            fs::read_link(d.path().join("a")).unwrap(),
            Path::new("saved/a")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_exchange_swaps_two_directories() {
        let d = tempfile::tempdir().unwrap();
        let (x, y) = (d.path().join("x"), d.path().join("y"));
        fs::create_dir(&x).unwrap();
        fs::create_dir(&y).unwrap();
        fs::write(x.join("f"), b"in x").unwrap();
        exchange(&x, &y).unwrap();
        assert_eq!(fs::read(y.join("f")).unwrap(), b"in x");
        assert!(!x.join("f").exists());
    }
}
