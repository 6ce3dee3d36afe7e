//! The stats board: with `--workers N`, each worker publishes its counters into its own slot of a
//! small shared memory region, so that `/stats`, answered by whichever worker the connection
//! landed on, reports totals over every live worker rather than one worker's share.
//!
//! The region is a memfd: it has no name in any file system, and lives exactly as long as some
//! process of this tree holds it open or mapped (the master, and each worker, which inherits the
//! descriptor across exec). A master that is killed, or crashes, leaves nothing behind.
//!
//! Invariant: a slot is written only by the worker that owns its index, with atomic stores, or by
//! the master once that worker is dead and reaped; any worker may read every slot. Figures of a
//! worker that died go with it (the master clears its slot when it reaps it, and the replacement
//! starts from zero), so totals are over the workers alive now.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::stats::Counters;
use crate::sys::SharedWords;

/// Words per slot: the owner's pid, then the counters.
const SLOT_WORDS: usize = 1 + Counters::WORDS;

/// The board as its creator (the master) holds it: the memfd that workers inherit, and a mapping
/// through which it clears the slot of a worker that died.
pub struct Board {
    file: File,
    words: SharedWords,
    slots: usize,
}

impl Board {
    /// Creates a zeroed board for `slots` workers. The descriptor is close-on-exec: the master
    /// clears that flag only in the children it means to pass it to.
    pub fn create(slots: usize) -> io::Result<Board> {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        let mut fd = memfd_create(c"c10k-stats", MemFdCreateFlag::MFD_CLOEXEC)?;
        if fd.as_raw_fd() <= 2 {
            // A master started with stdio closed got a stdio number, which the child's own
            // stdio would overwrite; a duplicate is numbered 3 or above.
            fd = fd.try_clone()?;
        }
        let file = File::from(fd);
        file.set_len((slots * SLOT_WORDS * 8) as u64)?;
        let words = SharedWords::map(&file, slots * SLOT_WORDS)?;
        Ok(Board { file, words, slots })
    }

    /// The descriptor to pass to workers, by number, across exec.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Forgets the figures of the worker in slot `index`, which the caller has reaped: until a
    /// replacement publishes, totals leave the slot out.
    pub fn clear(&self, index: usize) {
        if index >= self.slots {
            return;
        }
        let slot = slot(&self.words, index);
        slot[0].store(0, Ordering::Relaxed);
        for word in &slot[1..] {
            word.store(0, Ordering::Relaxed);
        }
    }
}

fn slot(words: &SharedWords, index: usize) -> &[AtomicU64] {
    &words.words()[index * SLOT_WORDS..(index + 1) * SLOT_WORDS]
}

/// One worker's view of the board: its own slot to write, every slot to read.
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

impl StatsBoard {
    /// Maps the board in `file` (the master's memfd, inherited) as worker `index` of `slots`,
    /// and claims the slot. The mapping outlives `file`, which is closed here.
    pub fn open(file: File, slots: usize, index: usize) -> io::Result<StatsBoard> {
        if index >= slots {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "worker index beyond the board",
            ));
        }
        let board = StatsBoard {
            words: SharedWords::map(&file, slots * SLOT_WORDS)?,
            slots,
            index,
        };
        board.publish(&Counters::default());
        slot(&board.words, index)[0].store(u64::from(std::process::id()), Ordering::Relaxed);
        Ok(board)
    }

    /// Stores this worker's counters in its slot.
    pub fn publish(&self, counters: &Counters) {
        let slot = slot(&self.words, self.index);
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
            let slot = slot(&self.words, index);
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

    /// A worker's copy of the board descriptor, as it would inherit it.
    fn inherit(board: &Board) -> File {
        board.file.try_clone().unwrap()
    }

    #[test]
    fn workers_publish_and_anyone_reads_totals() {
        let board = Board::create(3).unwrap();
        let a = StatsBoard::open(inherit(&board), 3, 0).unwrap();
        let b = StatsBoard::open(inherit(&board), 3, 2).unwrap();
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
        assert!(StatsBoard::open(inherit(&board), 3, 3).is_err());
    }

    #[test]
    fn a_cleared_slot_leaves_the_totals() {
        let board = Board::create(2).unwrap();
        let a = StatsBoard::open(inherit(&board), 2, 0).unwrap();
        let b = StatsBoard::open(inherit(&board), 2, 1).unwrap();
        a.publish(&Counters {
            requests: 3,
            ..Counters::default()
        });
        b.publish(&Counters {
            requests: 4,
            connections_current: 9,
            ..Counters::default()
        });
        // Worker 1 died (its mapping goes with it) and the master reaped it.
        drop(b);
        board.clear(1);
        let (total, reporting) = a.totals();
        assert_eq!(reporting, 1);
        assert_eq!(total.requests, 3);
        assert_eq!(total.connections_current, 0);
        // Its replacement starts from zero.
        let b = StatsBoard::open(inherit(&board), 2, 1).unwrap();
        assert_eq!(a.totals(), (total, 2));
        assert_eq!(b.totals(), (total, 2));
    }

    #[test]
    fn the_board_has_no_name_to_leave_behind() {
        let board = Board::create(2).unwrap();
        assert!(board.raw_fd() > 2);
        let target = std::fs::read_link(format!("/proc/self/fd/{}", board.raw_fd())).unwrap();
        let target = target.to_string_lossy();
        // A memfd shows as "/memfd:NAME (deleted)": it is in no directory, /dev/shm included.
        assert!(target.starts_with("/memfd:c10k-stats"), "{target}");
        assert!(
            !std::path::Path::new(&format!("/dev/shm/c10k-stats-{}", std::process::id())).exists()
        );
    }
}
