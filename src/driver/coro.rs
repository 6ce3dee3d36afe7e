//! (not yet implemented)

use std::io;
use std::os::fd::OwnedFd;

use nix::sys::signalfd::SignalFd;

use super::DriverOptions;
use crate::stats::Counters;

pub fn run(_listener: OwnedFd, _signals: SignalFd, _options: &DriverOptions) -> io::Result<Counters> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "the coro backend is not built yet"))
}
