//! The Markdown outputs: the table (stdout) and results.md (the table with the machine, the
//! command, the charts and what each column means).

use std::fmt::Write as _;

use super::{Results, Status, Step};

/// 12345.6 → "12,346".
fn thousands(v: f64) -> String {
    let s = (v.round() as u64).to_string();
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

fn row(s: &Step) -> String {
    let head = format!(
        "| {} | {} | {} ",
        s.backend,
        s.proto,
        thousands(s.conns as f64)
    );
    match (s.status, &s.metrics) {
        (Status::Ok, Some(m)) => {
            let sys = match m.syscalls_per_req {
                Some(v) if m.syscalls_source == "exit-summary" => format!("{v:.2}†"),
                Some(v) => format!("{v:.2}"),
                None => "—".into(),
            };
            let rss = m.rss_per_conn_kib.map_or("—".into(), |v| format!("{v:.1}"));
            format!(
                "{head}| {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {} | {} |",
                thousands(m.req_per_s),
                m.p50_us,
                m.p99_us,
                m.p99_9_us,
                m.connect_p99_us,
                m.errors,
                m.server_cpu_pct,
                m.server_cpu_us_per_req,
                rss,
                sys,
                cell(&s.notes.join("; "))
            )
        }
        (Status::Skipped, _) => format!(
            "{head}| — | — | — | — | — | — | — | — | — | — | skipped: {} |",
            cell(s.reason.as_deref().unwrap_or(""))
        ),
        _ => format!(
            "{head}| — | — | — | — | — | — | — | — | — | — | **failed**: {} |",
            cell(s.reason.as_deref().unwrap_or(""))
        ),
    }
}

/// The results table, with the backends the kernel lacks listed below it.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    out.push_str(
        "| backend | proto | conns | req/s | p50 µs | p99 µs | p99.9 µs | connect p99 µs | errors | server CPU % | CPU µs/req | RSS KiB/conn | syscalls/req | notes |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for s in &r.steps {
        out.push_str(&row(s));
        out.push('\n');
    }
    if r.steps.iter().any(|s| {
        s.metrics
            .as_ref()
            .is_some_and(|m| m.syscalls_source == "exit-summary")
    }) {
        out.push_str(
            "\n† from the counters the server logged at exit, over its whole life (warm-up and connection set-up included); echo: per 64-byte message. Others: `/stats` deltas over the measured window.\n",
        );
    }
    for b in &r.skipped_backends {
        let _ = writeln!(out, "\nSkipped backend {}: {}", b.backend, b.reason);
    }
    if r.interrupted {
        out.push_str("\nInterrupted: the sweep stopped early.\n");
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
        "- **Machine**: {} cores ({}), {:.1} GiB RAM, Linux {}; open-file limit {}",
        m.nproc,
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
        "- **Load average** (1, 5, 15 min): {} at the start, {} at the end (the machine may be shared: other work shows up as noise)",
        m.loadavg_start, m.loadavg_end
    );
    let _ = writeln!(out, "- **Date**: {}", m.date);
    let _ = writeln!(out, "- **Command**: `{}`", r.command);
    let _ = writeln!(
        out,
        "- **Steps**: a fresh server per (backend, protocol, connections){}; {} s measured after {} s of warm-up; loadgen in the same process as the comparison, {} event-loop thread{}, closed loop (one request in flight per connection); HTTP: keep-alive `GET {}`; echo: {}-byte messages, every byte verified",
        s.workers.map(|w| format!(" with --workers {w}")).unwrap_or_default(),
        s.duration_s,
        s.warmup_s,
        s.loadgen_threads,
        if s.loadgen_threads == 1 { "" } else { "s" },
        s.http_path,
        s.echo_size
    );
    let _ = writeln!(out, "- **Wall time**: {:.0} s", r.wall_s);
    out.push_str("\n## Results\n\n");
    out.push_str(&markdown(r));
    if !charts.is_empty() {
        out.push_str("\n## Charts\n\n");
        for (file, title) in charts {
            let _ = writeln!(out, "![{title}]({file})\n");
        }
    }
    out.push_str(COLUMNS);
    out
}

const COLUMNS: &str = "
## Columns

- **req/s**: requests (echo: messages) answered in the measured window, per second.
- **p50, p99, p99.9 µs**: latency from sending a request to the last byte of its answer (closed
  loop, so the same as service time). **connect p99**: from `connect()` to the socket being
  writable.
- **errors**: failed connects, timeouts, requests lost with their connection, protocol errors,
  corrupted echoes and non-2xx responses.
- **server CPU %**: user + system time of the server's processes (all threads) over the measured
  window, from `/proc/PID/stat`, as a percentage of one core. **CPU µs/req**: the same time
  divided by the requests answered.
- **RSS KiB/conn**: the server's peak resident memory during the step (`VmHWM`, summed over its
  processes) minus its resident memory before any connection (`VmRSS`), divided by the
  connections held at the end.
  With few connections the fixed costs met at the first connection (buffers, a thread's stack,
  io_uring's rings) dominate this figure; read it at 1,000 connections and more.
- **syscalls/req**: the server's own counters — readiness waits, interest changes (`epoll_ctl`,
  `fcntl`), reads, writes, accepts, realtime signals taken and overflow scans — divided by the
  requests (echo: 64-byte messages) it served. For io_uring, reads and writes are operations
  submitted (many per `io_uring_enter`, which is counted in waits); completions are left out
  (they are in results.json, by kind, with the rest).
- **notes**: what changes the meaning of a row: queued connections (pool), 5xx answers,
  refusals, timeouts, connections not held at the end (still connecting, or lost), and
  *loadgen saturated*: loadgen's event-loop thread was busy at least 90% of the time or woke
  late, so the row may measure loadgen rather than the server (loadgen and the server share
  this machine's cores; `--threads` gives loadgen more).
";
