//! `--procs N`: N worker processes of this executable (`loadgen __worker`), each given the run's
//! configuration with its share on stdin, each answering on stdout with one JSON line per
//! interval and a final report line; the parent merges both. The worker's side,
//! [`crate::worker_main`], sits beside [`crate::run`], which it calls: this file is the parent's.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Share};
use crate::error::Error;
use crate::interval::{Aggregator, Feed, Snapshot, WireSnapshot};
use crate::report::Report;

/// One line from a worker.
#[derive(Serialize, Deserialize)]
pub(crate) enum WorkerMsg {
    Interval(WireSnapshot),
    Report(Box<Report>),
    Error(String),
}

pub(crate) fn run_procs(
    cfg: &Config,
    on_interval: &mut dyn FnMut(&Snapshot),
) -> Result<Report, Error> {
    let exe = match &cfg.worker_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::Io(format!("cannot find loadgen's executable: {e}")))?,
    };
    // None: the worker's output ended (it has reported, or died).
    let (tx, rx) = mpsc::channel::<(usize, Option<WorkerMsg>)>();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for index in 0..cfg.procs {
        let mut share = cfg.clone();
        share.worker = Some(worker_share(cfg, index));
        let input = serde_json::to_vec(&share).map_err(|e| Error::Io(e.to_string()))?;
        let mut child = Command::new(&exe)
            .arg("__worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Io(format!("cannot start worker {}: {e}", exe.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .map_err(|e| Error::Io(format!("cannot configure worker {index}: {e}")))?;
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let msg = serde_json::from_str(&line)
                    .unwrap_or_else(|e| WorkerMsg::Error(format!("unreadable worker output: {e}")));
                if tx.send((index, Some(msg))).is_err() {
                    break;
                }
            }
            let _ = tx.send((index, None));
        }));
        children.push(child);
    }
    drop(tx);
    let mut agg = Aggregator::new(cfg.procs);
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (index, msg) in rx {
        match msg {
            Some(WorkerMsg::Interval(w)) => match w.into_snapshot() {
                Ok(s) => agg.feed(index, Feed::Snapshot(s), on_interval),
                Err(e) => errors.push(format!("worker {index}: {e}")),
            },
            Some(WorkerMsg::Report(r)) => reports.push(*r),
            Some(WorkerMsg::Error(e)) => errors.push(format!("worker {index}: {e}")),
            // The workers still running go on reporting intervals without this one.
            None => agg.feed(index, Feed::Done, on_interval),
        }
    }
    agg.finish(on_interval);
    for r in readers {
        let _ = r.join();
    }
    for mut c in children {
        let _ = c.wait();
    }
    if reports.len() < cfg.procs {
        if errors.is_empty() {
            errors.push(format!(
                "{} of {} workers sent no report",
                cfg.procs - reports.len(),
                cfg.procs
            ));
        }
        return Err(Error::Io(errors.join("; ")));
    }
    let mut report = Report::merge(&reports).map_err(Error::Io)?;
    report.setup.merged_runs = 1;
    report.setup.procs = cfg.procs as u64;
    report.setup.threads = reports[0].setup.threads;
    Ok(report)
}

/// Worker `index`'s share: over several hosts (--part), this host's workers take their places
/// among all the hosts' workers, so that they share one schedule and one set of connections.
fn worker_share(cfg: &Config, index: usize) -> Share {
    let part = cfg.part.unwrap_or(Share { of: 1, index: 0 });
    Share {
        of: part.of * cfg.procs,
        index: part.index * cfg.procs + index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    /// Two hosts of three processes each: the six workers are six distinct shares of one run.
    #[test]
    fn workers_of_parts_are_distinct_shares() {
        let mut cfg = Config::new(Mode::Echo { size: 64 }, "127.0.0.1:9".parse().unwrap(), 60);
        cfg.procs = 3;
        let mut shares = Vec::new();
        for host in 0..2 {
            cfg.part = Some(Share { of: 2, index: host });
            shares.extend((0..3).map(|w| worker_share(&cfg, w)));
        }
        assert!(shares.iter().all(|s| s.of == 6));
        let mut indices: Vec<usize> = shares.iter().map(|s| s.index).collect();
        indices.sort();
        assert_eq!(indices, (0..6).collect::<Vec<_>>());
    }
}
