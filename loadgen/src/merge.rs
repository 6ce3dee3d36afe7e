//! `loadgen merge`: several JSON reports into one (counts added, histograms merged exactly), or
//! several HdrHistogram interval logs into one (intervals aligned by wall-clock time).

use std::path::PathBuf;

use crate::error::Error;
use crate::hdrlog;
use crate::report::{percentiles, Report};
use crate::stats::new_histogram;

/// What the files merged into.
pub enum Merged {
    Reports(Box<Report>),
    Logs(Vec<hdrlog::LogInterval>),
}

/// Reads and merges `files`: all JSON reports, or all interval logs.
pub fn merge_files(files: &[PathBuf]) -> Result<Merged, Error> {
    let mut reports = Vec::new();
    let mut logs = Vec::new();
    for f in files {
        let bytes = std::fs::read(f)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", f.display())))?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            let r: Report = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Config(format!("{}: not a loadgen report: {e}", f.display()))
            })?;
            reports.push(r);
        } else {
            let l =
                hdrlog::read(&bytes).map_err(|e| Error::Config(format!("{}: {e}", f.display())))?;
            logs.push(l);
        }
    }
    match (reports.is_empty(), logs.is_empty()) {
        (false, true) => Report::merge(&reports)
            .map(|r| Merged::Reports(Box::new(r)))
            .map_err(Error::Config),
        (true, false) => Ok(Merged::Logs(hdrlog::merge(logs))),
        (false, false) => Err(Error::Config(
            "give JSON reports or interval logs, not both".into(),
        )),
        (true, true) => Err(Error::Config("nothing to merge".into())),
    }
}

/// A summary of merged interval logs.
pub fn logs_text(intervals: &[hdrlog::LogInterval]) -> String {
    let mut total = new_histogram();
    for i in intervals {
        let _ = total.add(&i.hist);
    }
    let p = percentiles(&total);
    format!(
        "merged interval log: {} intervals, {} samples\nlatency (µs): p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {} (mean {:.1})\n",
        intervals.len(),
        p.count,
        p.p50,
        p.p90,
        p.p99,
        p.p99_9,
        p.p99_99,
        p.max,
        p.mean
    )
}
