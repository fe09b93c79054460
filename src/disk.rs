//! The data volume's free space, as ingress checks it before storing a call: read at most once a
//! second, so that a flood of calls costs one `statvfs` a second, not one each.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one reading of the free space is trusted.
const FRESH: Duration = Duration::from_secs(1);

/// The volume is below the free space ingress must leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowDisk {
    /// Bytes free for unprivileged writes when last read.
    pub free: u64,
    /// The threshold (`--min-free-disk`).
    pub min_free: u64,
}

/// Watches the free space of the volume holding one folder.
#[derive(Debug)]
pub struct FreeDisk {
    path: PathBuf,
    min_free: u64,
    /// The last reading and when it was taken; `None` until the first.
    last: Mutex<Option<(Instant, Option<u64>)>>,
}

impl FreeDisk {
    /// Watches `path`'s volume for `min_free` bytes; 0 never refuses.
    pub fn new(path: impl Into<PathBuf>, min_free: u64) -> Self {
        FreeDisk {
            path: path.into(),
            min_free,
            last: Mutex::new(None),
        }
    }

    /// `Err` when the volume has less than the threshold free (as of at most a second ago).
    /// A volume whose free space cannot be read is let through: the writes themselves still
    /// fail cleanly on a full disk, and a refusal on a guess would stop every fleet.
    pub fn check(&self) -> Result<(), LowDisk> {
        if self.min_free == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let free = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            match *last {
                Some((at, free)) if now.duration_since(at) < FRESH => free,
                _ => {
                    let free = self.read();
                    *last = Some((now, free));
                    free
                }
            }
        };
        match free {
            Some(free) if free < self.min_free => Err(LowDisk {
                free,
                min_free: self.min_free,
            }),
            _ => Ok(()),
        }
    }

    /// Bytes available to unprivileged writers on the volume, if it can be read.
    fn read(&self) -> Option<u64> {
        match rustix::fs::statvfs(&self.path) {
            Ok(st) => Some(st.f_bavail.saturating_mul(st.f_frsize)),
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(),
                    "reading the data volume's free space failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_above_the_free_space_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let low = FreeDisk::new(dir.path(), u64::MAX / 2).check().unwrap_err();
        assert!(low.free > 0 && low.free < low.min_free);
        assert_eq!(FreeDisk::new(dir.path(), 0).check(), Ok(()));
        assert_eq!(FreeDisk::new(dir.path(), 1).check(), Ok(()));
    }

    #[test]
    fn an_unreadable_volume_is_let_through() {
        let disk = FreeDisk::new("/nonexistent/wharf-data", u64::MAX / 2);
        assert_eq!(disk.check(), Ok(()));
    }
}
