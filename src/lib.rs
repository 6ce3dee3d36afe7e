//! c10k: one server, many I/O models, chosen at run time.
//!
//! Layout (see docs/architecture.md):
//! - [`proto`]: echo and HTTP/1.1, sans-I/O.
//! - [`backend`]: readiness backends behind one small [`backend::Poller`] trait.
//! - [`models`]: the table of every I/O model, as data.
//! - [`driver`]: the loops that own sockets: the readiness [`driver::reactor`] and the models
//!   that do not fit it.
//! - [`sys`]: the few syscall wrappers that hold the crate's `unsafe` (with io_uring's ring in
//!   `driver/uring/ring.rs`; docs/architecture.md says where and why).

pub mod backend;
pub mod board;
pub mod config;
pub mod date;
pub mod driver;
pub mod models;
pub mod proto;
pub mod server;
pub mod stats;
pub mod sys;
pub mod workers;
