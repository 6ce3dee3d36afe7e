//! loadgen's error: a leaf every module can import without importing the crate root.

use std::fmt;

/// Why a run could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The configuration asks for something impossible.
    Config(String),
    /// This machine cannot give what was asked; the message says what to change.
    Preflight(String),
    /// Files, processes, the event loop.
    Io(String),
    /// A signal (SIGINT, SIGTERM) ended a run that was part of a larger one (`compare`), which
    /// stops there too.
    Interrupted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Io(m) => f.write_str(m),
            Error::Preflight(m) => write!(f, "preflight: {m}"),
            Error::Interrupted => f.write_str("interrupted by a signal"),
        }
    }
}

impl std::error::Error for Error {}
