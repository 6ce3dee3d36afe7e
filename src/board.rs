//! The stats board: with `--workers N`, each worker publishes its counters into its own slot of a
//! small shared file, so that `/stats`, answered by whichever worker the connection landed on,
//! reports totals over every live worker rather than one worker's share.
//!
//! Invariant: a slot is written only by the worker that owns its index, with atomic stores; any
//! worker may read every slot. Figures of a worker that died go with it (its replacement starts
//! its slot from zero), so totals are over the workers alive now.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::stats::Counters;
use crate::sys::SharedWords;

/// Words per slot: the owner's pid, then the counters.
const SLOT_WORDS: usize = 1 + Counters::WORDS;

pub struct StatsBoard {
    words: SharedWords,
    slots: usize,
    index: usize,
}

impl std::fmt::Debug for StatsBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatsBoard(slot {} of {})", self.index, self.slots)
    }
}

/// The board file a master creates for its workers; removed when dropped.
pub struct BoardFile {
    pub path: PathBuf,
}

impl BoardFile {
    /// Creates a zeroed board for `slots` workers, private to this master.
    pub fn create(slots: usize) -> io::Result<BoardFile> {
        let dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("c10k-stats-{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len((slots * SLOT_WORDS * 8) as u64)?;
        Ok(BoardFile { path })
    }
}

impl Drop for BoardFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl StatsBoard {
    /// Opens the board as worker `index` of `slots`, and claims the slot.
    pub fn open(path: &Path, slots: usize, index: usize) -> io::Result<StatsBoard> {
        if index >= slots {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "worker index beyond the board",
            ));
        }
        let file = File::options().read(true).write(true).open(path)?;
        let board = StatsBoard {
            words: SharedWords::map(&file, slots * SLOT_WORDS)?,
            slots,
            index,
        };
        board.publish(&Counters::default());
        board.slot(index)[0].store(u64::from(std::process::id()), Ordering::Relaxed);
        Ok(board)
    }

    fn slot(&self, index: usize) -> &[std::sync::atomic::AtomicU64] {
        &self.words.words()[index * SLOT_WORDS..(index + 1) * SLOT_WORDS]
    }

    /// Stores this worker's counters in its slot.
    pub fn publish(&self, counters: &Counters) {
        let slot = self.slot(self.index);
        for (word, value) in slot[1..].iter().zip(counters.to_words()) {
            word.store(value, Ordering::Relaxed);
        }
    }

    /// Sums every worker's slot (each consistent per field, not across fields), and how many
    /// workers have published.
    pub fn totals(&self) -> (Counters, usize) {
        let mut total = Counters::default();
        let mut reporting = 0;
        for index in 0..self.slots {
            let slot = self.slot(index);
            if slot[0].load(Ordering::Relaxed) == 0 {
                continue;
            }
            reporting += 1;
            let mut words = [0u64; Counters::WORDS];
            for (w, word) in words.iter_mut().zip(&slot[1..]) {
                *w = word.load(Ordering::Relaxed);
            }
            total.merge(&Counters::from_words(words));
        }
        (total, reporting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_publish_and_anyone_reads_totals() {
        let file = BoardFile::create(3).unwrap();
        let a = StatsBoard::open(&file.path, 3, 0).unwrap();
        let b = StatsBoard::open(&file.path, 3, 2).unwrap();
        let mut ca = Counters {
            requests: 5,
            ..Counters::default()
        };
        ca.syscalls.reads = 7;
        let cb = Counters {
            requests: 11,
            connections_current: 2,
            ..Counters::default()
        };
        a.publish(&ca);
        b.publish(&cb);
        let (total, reporting) = a.totals();
        assert_eq!(reporting, 2);
        assert_eq!(total.requests, 16);
        assert_eq!(total.syscalls.reads, 7);
        assert_eq!(total.connections_current, 2);
        assert_eq!(b.totals().0, total);
        assert!(StatsBoard::open(&file.path, 3, 3).is_err());
        let path = file.path.clone();
        drop(file);
        assert!(!path.exists());
    }
}
