//! Before anything is opened: what was asked against what this machine allows — descriptors per
//! process (RLIMIT_NOFILE, soft raised to hard) and local ports per (source, destination) pair —
//! refusing with a message that says what to change.

use crate::config::Config;
use crate::Error;

/// Descriptors a process needs besides its connections (epoll, stdio, pipes, files).
pub const SPARE_FDS: u64 = 64;

/// What the preflight found.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Descriptors one process may have (soft limit, after raising it to the hard one).
    pub nofile: u64,
    /// Local ports per (source, destination) pair.
    pub ports: u64,
}

/// Raises this process's descriptor limit and reads the port range.
pub fn limits() -> Limits {
    let nofile = c10k::sys::raise_nofile_limit().unwrap_or_else(|_| c10k::sys::nofile_limit());
    Limits {
        nofile,
        ports: crate::sys::local_port_budget(),
    }
}

/// Checks `cfg` against `limits`.
pub fn check(cfg: &Config, limits: Limits) -> Result<(), Error> {
    let conns = cfg.conns as u64;
    let procs = cfg.procs as u64;
    let per_proc = conns.div_ceil(procs);
    let need = per_proc + SPARE_FDS;
    if need > limits.nofile {
        let usable = limits.nofile.saturating_sub(SPARE_FDS).max(1);
        return Err(Error::Preflight(format!(
            "--conns {conns} needs {need} descriptors per process ({per_proc} connections + \
             {SPARE_FDS} spare) but one process may have {}; add --procs {} (or raise the hard \
             limit, ulimit -Hn)",
            limits.nofile,
            conns.div_ceil(usable)
        )));
    }
    let sources = cfg.sources.len().max(1) as u64;
    let per_source = conns.div_ceil(sources);
    if per_source > limits.ports {
        let want = conns.div_ceil(limits.ports);
        let example = if cfg.target.is_ipv4() {
            format!(" (e.g. --source 127.0.0.2-127.0.0.{})", want + 1)
        } else {
            String::new()
        };
        return Err(Error::Preflight(format!(
            "--conns {conns} over {sources} source address(es) to {} needs {per_source} local \
             ports per source but net.ipv4.ip_local_port_range gives {}; use --source with at \
             least {want} addresses{example}, or widen the port range",
            cfg.target, limits.ports
        )));
    }
    Ok(())
}
