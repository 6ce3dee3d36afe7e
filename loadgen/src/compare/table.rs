//! The Markdown outputs: the report (stdout) and results.md (the report with the machine, the
//! pinning, the command, the charts and what each column means).

use std::fmt::Write as _;

use super::probe::{Bound, Probe};
use super::results::{CapacityStep, Results, Status};

/// 12345.6 → "12,346".
pub fn thousands(v: f64) -> String {
    let s = (v.round().max(0.0) as u64).to_string();
    let first = match s.len() % 3 {
        0 => 3.min(s.len()),
        r => r,
    };
    let mut out = s[..first].to_string();
    for chunk in s.as_bytes()[first..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// The capacity cell: a number only when the server set it.
pub fn capacity_cell(s: &CapacityStep) -> String {
    match (s.status, s.bound, s.capacity) {
        (Status::Ok, Some(Bound::Server), Some(c)) => thousands(c),
        (Status::Ok, Some(Bound::Loadgen), Some(c)) => format!("≥ {} ‡", thousands(c)),
        (Status::Ok, Some(Bound::Loadgen), None) => "? ‡".into(),
        (Status::Ok, Some(Bound::MaxRate), Some(c)) => format!("≥ {}", thousands(c)),
        (Status::Ok, _, _) => "< min".into(),
        _ => "—".into(),
    }
}

fn probe_cells(p: Option<&Probe>) -> String {
    let Some(p) = p else {
        return "— | — | — | — | — | — | — | —".into();
    };
    let s = p.server.as_ref();
    format!(
        "{} | {} | {} | {} | {} | {} | {} | {:.1}",
        opt(s.map(|s| s.cpu_us_per_req).filter(|&c| c > 0.0), 1),
        opt(s.and_then(|s| s.syscalls_per_req), 2),
        opt(s.and_then(|s| s.uring_ops_per_req).filter(|v| *v > 0.0), 2),
        opt(
            s.and_then(|s| s.completions_per_req).filter(|v| *v > 0.0),
            2
        ),
        p.p50_us,
        p.p99_us,
        p.p99_9_us,
        p.loadgen_cpu_us_per_req
    )
}

fn notes(
    status: Status,
    reason: &Option<String>,
    notes: &[String],
    probe: Option<&Probe>,
) -> String {
    let mut all: Vec<String> = Vec::new();
    match status {
        Status::Skipped => all.push(format!("skipped: {}", reason.as_deref().unwrap_or(""))),
        Status::Failed => all.push(format!("**failed**: {}", reason.as_deref().unwrap_or(""))),
        Status::Ok => {}
    }
    all.extend(notes.iter().cloned());
    if let Some(p) = probe {
        if !p.pass {
            all.push(format!(
                "missed at this rate ({}): {:.0} req/s achieved",
                p.failed_on.join(", "),
                p.achieved_rate
            ));
        }
    }
    cell(&all.join("; "))
}

fn capacity_section(r: &Results, out: &mut String) {
    let bound_ms = r.settings.p99_bound_us as f64 / 1000.0;
    for &conns in &r.settings.conns {
        let steps: Vec<&CapacityStep> = r.capacity.iter().filter(|s| s.conns == conns).collect();
        if steps.is_empty() {
            continue;
        }
        let common = r.common_rates.iter().find(|c| c.conns == conns);
        let _ = writeln!(
            out,
            "\n### Capacity at {} connections\n",
            thousands(conns as f64)
        );
        let _ = writeln!(
            out,
            "Capacity: the highest open-loop rate with ≥ {:.0}% of it achieved and p99 ≤ {bound_ms} ms. {}\n",
            r.settings.achieved_share * 100.0,
            match common {
                Some(c) => format!(
                    "The other columns: every subject at {} req/s, half the smallest capacity.",
                    thousands(c.rate)
                ),
                None => "No common rate: no subject passed a probe.".into(),
            }
        );
        out.push_str("| subject | capacity req/s | CPU µs/req | syscalls/req | uring ops/req | completions/req | p50 µs | p99 µs | p99.9 µs | loadgen µs/req | notes |\n");
        out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
        for s in steps {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                s.subject,
                capacity_cell(s),
                probe_cells(s.at_common.as_ref()),
                notes(s.status, &s.reason, &s.notes, s.at_common.as_ref())
            );
        }
    }
    if r.capacity.iter().any(|s| s.bound == Some(Bound::Loadgen)) {
        out.push_str("\n‡ loadgen was the limit at the lowest failing rate (its event loops saturated, waited for their CPU, woke late, or were still connecting), even after a retry: the server kept up with at least this rate, and its capacity is higher. Not a server result.\n");
    }
}

fn idle_section(r: &Results, out: &mut String) {
    if r.idle.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Idle connections: {} active at {} req/s, plus idle ones\n",
        r.settings.active,
        thousands(r.settings.idle_rate.unwrap_or(0.0))
    );
    out.push_str("| subject | idle | achieved req/s | CPU µs/req | p99 µs | examined/req | syscalls/req | RSS KiB/conn | notes |\n");
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for s in &r.idle {
        let row = match &s.probe {
            Some(p) => {
                let srv = p.server.as_ref();
                format!(
                    "{} | {} | {} | {} | {} | {}",
                    thousands(p.achieved_rate),
                    opt(srv.map(|s| s.cpu_us_per_req).filter(|&c| c > 0.0), 1),
                    p.p99_us,
                    opt(srv.and_then(|s| s.examined_per_req), 1),
                    opt(srv.and_then(|s| s.syscalls_per_req), 2),
                    opt(s.rss_per_conn_kib, 1),
                )
            }
            None => "— | — | — | — | — | —".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {row} | {} |",
            s.subject,
            thousands(s.idle as f64),
            notes(s.status, &s.reason, &s.notes, s.probe.as_ref())
        );
    }
}

/// The report: the idle sweep, then capacity per connection count.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    idle_section(r, &mut out);
    capacity_section(r, &mut out);
    for b in &r.skipped {
        let _ = writeln!(out, "\nSkipped {}: {}", b.subject, b.reason);
    }
    out
}

/// results.md.
pub fn document(r: &Results, charts: &[(String, String)]) -> String {
    let m = &r.machine;
    let s = &r.settings;
    let mut out = String::new();
    out.push_str("# c10k backends compared\n\n");
    let _ = writeln!(
        out,
        "- **Machine**: {} CPUs online, {} allowed to the comparison ({}), {:.1} GiB RAM, Linux {}; open-file limit {}",
        m.cpus_online,
        m.cpus_allowed,
        if m.cpu.is_empty() {
            "unknown CPU"
        } else {
            &m.cpu
        },
        m.mem_total_kib as f64 / (1024.0 * 1024.0),
        m.kernel,
        m.nofile
    );
    let _ = writeln!(
        out,
        "- **Pinning**: server on CPU {}, loadgen on CPU {} ({} event-loop thread{}), with sched_setaffinity",
        s.pinning.server_cpus.as_deref().unwrap_or("any (not pinned)"),
        s.pinning.loadgen_cpus.as_deref().unwrap_or("any (not pinned)"),
        s.loadgen_threads,
        if s.loadgen_threads == 1 { "" } else { "s" }
    );
    if !s.cpu_wake_latency.is_empty() {
        let _ = writeln!(out, "- **CPU wake-up latency**: {}", s.cpu_wake_latency);
    }
    if !s.scheduling.is_empty() {
        let _ = writeln!(
            out,
            "- **Scheduling** of loadgen, the servers and the peers: {}",
            s.scheduling
        );
    }
    if r.interrupted {
        let _ = writeln!(
            out,
            "- **Interrupted** by a signal: the steps after it were not run, and this report is partial"
        );
    }
    let _ = writeln!(
        out,
        "- **Load average** (1, 5, 15 min): {} at the start, {} at the end (other work on the machine shows up as noise)",
        m.loadavg_start, m.loadavg_end
    );
    let _ = writeln!(out, "- **Date**: {}", m.date);
    let _ = writeln!(out, "- **Command**: `{}`", r.command);
    let _ = writeln!(
        out,
        "- **Probes**: open loop, keep-alive `GET {}`, {} s measured after {} s of warm-up (plus 50 µs per connection); a fresh server per step{}",
        s.http_path,
        s.duration_s,
        s.warmup_s,
        s.workers.map(|w| format!(" with --workers {w}")).unwrap_or_default()
    );
    let _ = writeln!(out, "- **Wall time**: {:.0} s", r.wall_s);
    let (idle_charts, other_charts): (Vec<_>, Vec<_>) =
        charts.iter().partition(|(f, _)| f.starts_with("idle"));
    out.push_str("\n## Idle connections\n");
    for (file, title) in &idle_charts {
        let _ = writeln!(out, "\n![{title}]({file})");
    }
    idle_section(r, &mut out);
    out.push_str("\n## Capacity\n");
    capacity_section(r, &mut out);
    if !other_charts.is_empty() {
        out.push_str("\n## Charts\n\n");
        for (file, title) in other_charts {
            let _ = writeln!(out, "![{title}]({file})\n");
        }
    }
    for b in &r.skipped {
        let _ = writeln!(out, "\nSkipped {}: {}", b.subject, b.reason);
    }
    out.push_str(COLUMNS);
    out
}

const COLUMNS: &str = "
## Columns

- **capacity req/s**: the highest offered rate (open loop, one global schedule) at which the
  server answered ≥ 99% of it with p99 within the bound. Latency is from each request's intended
  send time, so queueing in the server counts. Found by doubling the rate until a probe fails,
  then bisecting. **‡**: the lowest failing probe failed while loadgen was the limit over the
  measured window (its event loops busy, or, pinned, busy plus waiting for their CPU ≥ 90%;
  woken late; or connections still opening), even after a retry with more threads where it had
  CPUs for them: loadgen's ceiling, a lower bound on the server's capacity, never its capacity.
- **CPU µs/req**: the server's CPU time over the measured window (live threads' schedstat, plus
  what threads that exited used, from `/proc/PID/stat`), divided by the requests answered.
- **loadgen µs/req**: loadgen's event loops' CPU over the measured window (connecting
  excluded), divided by the requests answered.
- **syscalls/req**: the server's own counters (`/stats` deltas over the window): readiness waits
  (select, poll, epoll_wait, sigtimedwait, `io_uring_enter`), interest changes, reads, writes,
  accepts, realtime signals, overflow scans. **uring ops/req** and **completions/req** are apart:
  io_uring operations are submitted many per `io_uring_enter` and completions are read from
  shared memory, so neither is a syscall. The pool answers `/stats` only while a thread is free:
  its counters are not asked.
- **p50, p99, p99.9 µs**: from the intended send time to the last byte of the answer.
- **examined/req**: descriptors the I/O model looked at per request. select, poll and busy-poll
  hand every registered descriptor to each wait: waits × registered (connections + listener, per
  worker). sigio: signals taken, plus every descriptor per overflow scan. uring: completions.
  epoll, coro, threads and pool are told only of ready descriptors (or block on one): the reads
  and accepts that readiness led to.
- **RSS KiB/conn**: resident memory of the server's processes with every connection open, minus
  before any, divided by the connections.
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::probe::ServerSide;

    #[test]
    fn a_probe_that_answered_nothing_has_no_cpu_per_request() {
        let mut p = Probe {
            server: Some(ServerSide {
                cpu_us_per_req: 0.0,
                ..ServerSide::default()
            }),
            ..Probe::default()
        };
        assert!(probe_cells(Some(&p)).starts_with("— |"));
        p.server = Some(ServerSide {
            cpu_us_per_req: 12.34,
            ..ServerSide::default()
        });
        assert!(probe_cells(Some(&p)).starts_with("12.3 |"));
    }
}
