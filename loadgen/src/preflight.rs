//! Before anything is opened: what was asked against what this machine allows — descriptors per
//! process (RLIMIT_NOFILE, soft raised to hard) and local ports per (source, destination) pair —
//! refusing with a message that says what to change.

use crate::config::Config;
use crate::error::Error;

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
    // With `--part I/N` this host opens only its share of the run's connections.
    let conns = (cfg.conns as u64).div_ceil(cfg.parts() as u64);
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
    if let Some(ports) = cfg.source_ports {
        // Every connection of the whole run (all parts) has its own pair.
        let all = cfg.conns as u64;
        let capacity = crate::ports::capacity(&cfg.sources, ports);
        if all > capacity {
            return Err(Error::Preflight(format!(
                "--conns {all} needs as many (source, port) pairs but --source-ports {}-{} \
                 gives {} ports on each of {sources} source address(es), {capacity} pairs; use \
                 --source with at least {} addresses",
                ports.lo,
                ports.hi,
                ports.len(),
                all.div_ceil(ports.len())
            )));
        }
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, Share};

    /// A run split over hosts (`--part I/N`) is checked for this host's share only: 30,000
    /// connections in two parts fit a 20,000-descriptor host, the same run whole does not.
    #[test]
    fn a_part_is_checked_for_its_share_of_the_connections() {
        let limits = Limits {
            nofile: 20_000,
            ports: 28_000,
        };
        let whole = Config::new(
            Mode::Echo { size: 64 },
            "127.0.0.1:1".parse().unwrap(),
            30_000,
        );
        assert!(check(&whole, limits).is_err());
        let mut part = whole.clone();
        part.part = Some(Share { index: 0, of: 2 });
        check(&part, limits).expect("a half of the run fits one host");
    }
}
