//! `--hdr-log`: the HdrHistogram interval log format (as written by Java's HistogramLogWriter),
//! one compressed latency histogram per interval, values in µs. StartTime and BaseTime are the
//! run's start in Unix time and interval timestamps are offsets from it, so logs of runs made on
//! several machines at the same time line up when merged.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::stats::new_histogram;

pub struct HdrLog {
    out: BufWriter<File>,
    ser: V2DeflateSerializer,
}

impl HdrLog {
    pub fn create(path: &Path, start: SystemTime) -> io::Result<HdrLog> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut ser = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment("loadgen latency log, values in microseconds")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut ser)?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        Ok(HdrLog { out, ser })
    }

    /// Appends one interval starting `start` after the log's BaseTime.
    pub fn write(&mut self, h: &Histogram<u64>, start: Duration, len: Duration) -> io::Result<()> {
        let mut w = IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.ser)?;
        w.write_histogram(h, start, len, Tag::new("latency"))
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.out.flush()
    }
}

/// One interval read back from a log, with its start in Unix time.
pub struct LogInterval {
    pub start: Duration,
    pub len: Duration,
    pub hist: Histogram<u64>,
}

/// Reads every interval of a log.
pub fn read(text: &[u8]) -> Result<Vec<LogInterval>, String> {
    let mut base = Duration::ZERO;
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(text) {
        match entry.map_err(|e| format!("not an HdrHistogram interval log: {e:?}"))? {
            LogEntry::BaseTime(t) => base = t,
            LogEntry::StartTime(t) if base.is_zero() => base = t,
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(i) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(i.encoded_histogram())
                    .map_err(|e| format!("bad histogram base64: {e}"))?;
                let h: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .map_err(|e| format!("bad histogram: {e:?}"))?;
                let mut hist = new_histogram();
                hist.add(&h)
                    .map_err(|e| format!("histogram out of range: {e:?}"))?;
                out.push(LogInterval {
                    start: base + i.start_timestamp(),
                    len: i.duration(),
                    hist,
                });
            }
        }
    }
    Ok(out)
}

/// Merges logs: intervals that start within the same period (the first interval's length) from
/// the earliest start are added together. Returns the merged intervals (Unix-time starts).
pub fn merge(logs: Vec<Vec<LogInterval>>) -> Vec<LogInterval> {
    let all: Vec<LogInterval> = logs.into_iter().flatten().collect();
    let Some(t0) = all.iter().map(|i| i.start).min() else {
        return Vec::new();
    };
    let period = all
        .iter()
        .map(|i| i.len)
        .find(|l| !l.is_zero())
        .unwrap_or(Duration::from_secs(1));
    let mut slots: std::collections::BTreeMap<u64, LogInterval> = Default::default();
    for i in all {
        let k = ((i.start - t0).as_secs_f64() / period.as_secs_f64()).round() as u64;
        match slots.get_mut(&k) {
            Some(s) => {
                let _ = s.hist.add(&i.hist);
                s.len = s.len.max(i.len);
            }
            None => {
                slots.insert(
                    k,
                    LogInterval {
                        start: t0 + period.mul_f64(k as f64),
                        ..i
                    },
                );
            }
        }
    }
    slots.into_values().collect()
}

/// Writes merged intervals as a new log.
pub fn write_merged(path: &Path, intervals: &[LogInterval]) -> io::Result<()> {
    let start = intervals.first().map_or(Duration::ZERO, |i| i.start);
    let mut log = HdrLog::create(path, UNIX_EPOCH + start)?;
    for i in intervals {
        log.write(&i.hist, i.start - start, i.len)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trips_and_merges_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut paths = Vec::new();
        for (n, v) in [(0, 100), (1, 900)] {
            let p = dir.path().join(format!("{n}.hlog"));
            let mut log = HdrLog::create(&p, start).unwrap();
            for s in 0..3 {
                let mut h = new_histogram();
                h.record(v + s).unwrap();
                log.write(&h, Duration::from_secs(s), Duration::from_secs(1))
                    .unwrap();
            }
            paths.push(p);
        }
        let logs: Vec<_> = paths
            .iter()
            .map(|p| read(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        assert_eq!(logs[0].len(), 3);
        let merged = merge(logs);
        assert_eq!(merged.len(), 3);
        assert!(merged.iter().all(|i| i.hist.len() == 2));
        assert_eq!(merged[2].hist.max(), 902);
    }
}
