//! Guarding a run directory: one training at a time, no run replaced by accident, no half-cleared directory.
//!
//! - A training holds an exclusive advisory lock on `out/.lock` (`flock`) for its whole life; a second training
//!   into the same directory is refused. The kernel drops the lock when the process ends, however it ends
//!   (kill -9 included), so a stale lock file never blocks anyone.
//! - A directory that holds a run is only trained into by that run's own `--resume`; anything else (a fresh
//!   run, or `--resume A --out B` with B holding another run) needs `--overwrite`.
//! - An overwritten run's files are removed only once the new run has completed its first step (see
//!   [`Claim::clear_replaced`]), so a new run that fails at once leaves the old one whole.
//! - Temporary files and save sets left by a writer that was killed mid-save (`.NAME.PID.N.tmp`) are removed.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::checkpoint::{CHECKPOINT_FILE, GENERATOR_EMA_FILE, GENERATOR_FILE, SAVED_DIR};

use super::run::{METRICS_FILE, METRICS_PLOT_FILE};

pub const LOCK_FILE: &str = ".lock";

/// The files a run writes at the top of its directory (its sample grids are under `samples/`).
const RUN_FILES: [&str; 5] = [
    CHECKPOINT_FILE,
    GENERATOR_FILE,
    GENERATOR_EMA_FILE,
    METRICS_FILE,
    METRICS_PLOT_FILE,
];

/// A run directory held for one training (the lock lives as long as this value).
#[derive(Debug)]
pub struct Claim {
    out: PathBuf,
    _lock: File,
    /// The directory held another run, which this one replaces (`--overwrite`).
    replaces: bool,
}

impl Claim {
    /// Locks `out` (creating it) for a training. `resumed_from` is the directory of the checkpoint a resumed
    /// run continues; training into that same directory continues its run, anything else into a directory
    /// holding a run needs `overwrite`.
    pub fn acquire(out: &Path, resumed_from: Option<&Path>, overwrite: bool) -> Result<Claim> {
        fs::create_dir_all(out)
            .with_context(|| format!("cannot create output directory {}", out.display()))?;
        let lock_path = out.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "{} is in use by another training (it holds the lock {}); wait for it to finish or pass \
                 another --out",
                out.display(),
                lock_path.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
            }
        }
        let holds_run = RUN_FILES.iter().any(|f| out.join(f).exists());
        let continues = resumed_from.is_some_and(|r| same_dir(r, out));
        if holds_run && !continues && !overwrite {
            match resumed_from {
                None => bail!(
                    "{} already holds a run; continue it with --resume {0}, or pass --overwrite or another --out",
                    out.display()
                ),
                Some(r) => bail!(
                    "{} already holds another run; continuing {} there would replace it: pass --overwrite or \
                     another --out",
                    out.display(),
                    r.display()
                ),
            }
        }
        remove_temporaries(out)?;
        remove_temporaries(&out.join("samples"))?;
        Ok(Claim {
            out: out.to_path_buf(),
            _lock: lock,
            replaces: holds_run && !continues,
        })
    }

    /// Removes the replaced run's files, once (called when the new run has completed its first step).
    pub fn clear_replaced(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.replaces) {
            return Ok(());
        }
        for f in RUN_FILES {
            remove_if_present(&self.out.join(f))?;
        }
        remove_dir_if_present(&self.out.join(SAVED_DIR))?;
        let samples = self.out.join("samples");
        if samples.is_dir() {
            for e in fs::read_dir(&samples)
                .with_context(|| format!("cannot list {}", samples.display()))?
            {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "png") {
                    remove_if_present(&p)?;
                }
            }
        }
        Ok(())
    }
}

fn remove_dir_if_present(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

fn remove_if_present(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Whether two paths name the same existing directory.
pub(crate) fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Removes the temporary files of atomic writes (`.NAME.PID.N.tmp`, see [`crate::io::write_atomic`]) left in
/// `dir` by a writer that was killed; the lock guarantees that no live writer owns them.
fn remove_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp")) {
            // A save's set is written as a directory (crate::io::fileset), single files as files.
            if p.is_dir() && !p.is_symlink() {
                remove_dir_if_present(&p)?;
            } else {
                remove_if_present(&p)?;
            }
        }
    }
    Ok(())
}
