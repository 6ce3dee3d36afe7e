//! What a comparison will run: the subjects (this kernel's backends, the peers found), the
//! connection counts, the probe and search settings and the CPU placement, checked up front.

use std::path::PathBuf;
use std::time::Duration;

use c10k::models::{BackendKind, BACKENDS};

use super::args::CompareArgs;
use super::peers;
use super::pin::{self, Placement};
use super::probe::{ProbeOpts, SearchOpts};
use super::results::Skipped;
use crate::error::Error;

const DEFAULT_CONNS: &[u64] = &[100, 1000, 10000];
const QUICK_CONNS: &[u64] = &[100];
const DEFAULT_IDLE: &[u64] = &[0, 1000, 10000, 50000];
const QUICK_IDLE: &[u64] = &[0, 1000];

/// What runs as the server of a step: a c10k backend or a peer.
#[derive(Clone, Debug)]
pub(super) enum Subject {
    Backend(&'static str),
    Peer(peers::Peer),
}

impl Subject {
    pub(super) fn name(&self) -> String {
        match self {
            Subject::Backend(b) => b.to_string(),
            Subject::Peer(p) => format!("peer:{}", p.name),
        }
    }
}

/// What `loadgen compare` will run, from its options: subjects, counts, probe and search settings,
/// CPUs.
pub(super) struct Plan {
    pub(super) exe: PathBuf,
    pub(super) subjects: Vec<Subject>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) conns: Vec<u64>,
    pub(super) idle: Vec<u64>,
    pub(super) probe: ProbeOpts,
    pub(super) search: SearchOpts,
    pub(super) placement: Placement,
    pub(super) threads: usize,
}

fn backends(a: &CompareArgs, skipped: &mut Vec<Skipped>) -> Result<Vec<&'static str>, Error> {
    let valid: Vec<&str> = BACKENDS.iter().map(|b| b.name).collect();
    let names: Vec<&'static str> = match &a.backends {
        Some(list) => {
            let mut out = Vec::new();
            for name in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                let kind = BackendKind::from_name(name).ok_or_else(|| {
                    Error::Config(format!(
                        "unknown backend {name:?} (valid: {})",
                        valid.join(", ")
                    ))
                })?;
                if !out.contains(&kind.name()) {
                    out.push(kind.name());
                }
            }
            out
        }
        None => valid,
    };
    // Only what this kernel supports; the others are listed with the reason.
    Ok(names
        .into_iter()
        .filter(|name| {
            let kind = BackendKind::from_name(name).expect("a known name");
            match kind.probe() {
                Ok(()) => true,
                Err(reason) => {
                    skipped.push(Skipped {
                        subject: name.to_string(),
                        reason,
                    });
                    false
                }
            }
        })
        .collect())
}

fn placement(a: &CompareArgs) -> Result<Placement, Error> {
    let allowed = pin::allowed_cpus();
    if a.no_pin {
        return Ok(Placement {
            server: None,
            loadgen: None,
        });
    }
    let parse = |s: &Option<String>, who: &str| -> Result<Option<Vec<usize>>, Error> {
        s.as_deref()
            .map(pin::parse_cpus)
            .transpose()
            .map_err(|e| Error::Config(format!("{who}: {e}")))
    };
    let mut p = pin::default_placement(&allowed);
    let server = parse(&a.server_cpus, "--server-cpus")?;
    let loadgen = parse(&a.loadgen_cpus, "--loadgen-cpus")?;
    match (server, loadgen) {
        (Some(s), Some(l)) => {
            p = Placement {
                server: Some(s),
                loadgen: Some(l),
            }
        }
        (Some(s), None) => {
            let rest: Vec<usize> = allowed.iter().copied().filter(|c| !s.contains(c)).collect();
            p = Placement {
                loadgen: (!rest.is_empty()).then_some(rest),
                server: Some(s),
            };
        }
        (None, Some(l)) => {
            let rest: Vec<usize> = allowed.iter().copied().filter(|c| !l.contains(c)).collect();
            p = Placement {
                server: (!rest.is_empty()).then_some(rest),
                loadgen: Some(l),
            };
        }
        (None, None) => {}
    }
    pin::check_placement(&p, &allowed).map_err(Error::Config)?;
    Ok(p)
}

pub(super) fn plan(a: &CompareArgs) -> Result<Plan, Error> {
    let mut skipped = Vec::new();
    let mut subjects: Vec<Subject> = backends(a, &mut skipped)?
        .into_iter()
        .map(Subject::Backend)
        .collect();
    if a.peers {
        let (found, missing) = peers::discover(a.peers_dir.as_deref());
        subjects.extend(found.into_iter().map(Subject::Peer));
        skipped.extend(
            missing
                .into_iter()
                .map(|(subject, reason)| Skipped { subject, reason }),
        );
    }
    if subjects.is_empty() {
        return Err(Error::Config(format!(
            "nothing to compare (valid backends: {})",
            BACKENDS
                .iter()
                .map(|b| b.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut conns = a
        .conns
        .clone()
        .unwrap_or_else(|| if a.quick { QUICK_CONNS } else { DEFAULT_CONNS }.to_vec());
    conns.sort_unstable();
    conns.dedup();
    if conns.first() == Some(&0) {
        return Err(Error::Config("--conns must be at least 1".into()));
    }
    let mut idle = a
        .idle
        .clone()
        .unwrap_or_else(|| if a.quick { QUICK_IDLE } else { DEFAULT_IDLE }.to_vec());
    idle.sort_unstable();
    idle.dedup();
    if idle == [0] {
        idle.clear();
    }
    if a.active == 0 {
        return Err(Error::Config("--active must be at least 1".into()));
    }
    if a.workers == Some(0) {
        return Err(Error::Config("--workers must be at least 1".into()));
    }
    let duration = a.duration.unwrap_or(if a.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(1)
    });
    let warmup = a.warmup.unwrap_or(if a.quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(500)
    });
    if duration < Duration::from_millis(10) {
        return Err(Error::Config("--duration must be at least 10ms".into()));
    }
    if a.max_rate < a.start_rate {
        return Err(Error::Config("--max-rate is below --start-rate".into()));
    }
    let placement = placement(a)?;
    let threads = match a.threads {
        Some(0) => return Err(Error::Config("--threads must be at least 1".into())),
        Some(t) => t,
        None => placement
            .loadgen
            .as_ref()
            .map_or(1, |l| l.len().clamp(1, 16)),
    };
    let exe = match &a.server {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::Config(format!("cannot find this executable: {e}")))?
            .with_file_name("c10k"),
    };
    if !exe.is_file() && subjects.iter().any(|s| matches!(s, Subject::Backend(_))) {
        return Err(Error::Config(format!(
            "the c10k server binary {} is missing: build it: cargo build --release (or give --server PATH)",
            exe.display()
        )));
    }
    Ok(Plan {
        exe,
        subjects,
        skipped,
        conns,
        idle,
        probe: ProbeOpts {
            conns: 0,
            duration,
            warmup,
            threads,
            p99_bound: a.p99_bound,
            path: "/plaintext".into(),
            loadgen_pinned: placement.loadgen.is_some() && placement.server.is_some(),
            max_threads: placement
                .loadgen
                .as_ref()
                .map_or(threads, |l| l.len().clamp(threads, 16)),
        },
        search: SearchOpts {
            start_rate: a.start_rate,
            min_rate: 100.0_f64.min(a.start_rate),
            max_rate: a.max_rate,
            precision: if a.quick { 0.15 } else { 0.05 },
            max_probes: if a.quick { 8 } else { 14 },
        },
        placement,
        threads,
    })
}
