//! The blocking comparison's outputs: its Markdown table and document, its JSON, and its chart.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::*;

/// What a run's way of handling blocking work was.
fn mode_cell(r: &BlockingRun) -> String {
    match (r.offload, has_own_threads(&r.backend)) {
        (Some(n), _) => format!("--offload {n}"),
        (None, true) => "its own threads".into(),
        (None, false) => "as built".into(),
    }
}

/// The Markdown table (stdout, and blocking.md around it).
pub fn markdown(r: &BlockingResults) -> String {
    let st = &r.settings;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Blocking work: one {} in every {} requests, {} connections, {} req/s\n",
        st.sleep_path,
        st.sleep_every,
        st.conns,
        thousands(st.rate)
    );
    let _ = writeln!(
        s,
        "| backend | blocking work | {FAST_PATH} p50 µs | p99 µs | p99.9 µs | {} p99 µs | sleeps on the serving thread / on helpers | achieved req/s | notes |",
        st.sleep_path
    );
    let _ = writeln!(s, "|---|---|--:|--:|--:|--:|--:|--:|---|");
    for run in &r.runs {
        let (fast, slow) = match (&run.fast, &run.slow) {
            (Some(f), Some(sl)) if run.status == Status::Ok => (
                format!(
                    "{} | {} | {}",
                    thousands(f.p50_us as f64),
                    thousands(f.p99_us as f64),
                    thousands(f.p99_9_us as f64)
                ),
                thousands(sl.p99_us as f64),
            ),
            _ => ("— | — | —".into(), "—".into()),
        };
        let mut notes = run.notes.clone();
        if let Some(why) = &run.reason {
            notes.insert(0, format!("{:?}: {why}", run.status));
        }
        let _ = writeln!(
            s,
            "| {} | {} | {fast} | {slow} | {} / {} | {} | {} |",
            run.backend,
            mode_cell(run),
            opt_count(run.blocking_inline),
            opt_count(run.blocking_offloaded),
            thousands(run.achieved_rate),
            notes.join("; ").replace('|', "\\|")
        );
    }
    for sk in &r.skipped {
        let _ = writeln!(s, "\nSkipped {}: {}", sk.subject, sk.reason);
    }
    s
}

/// blocking.md: the table with what it measured and how.
fn document(r: &BlockingResults) -> String {
    let st = &r.settings;
    let m = &r.machine;
    let mut s = String::from("# Blocking work\n\n");
    let _ = writeln!(
        s,
        "Open loop at {} req/s over {} keep-alive connections, `--mix {}`, {:.1} s measured after {:.1} s of warmup per run; a fresh server per run with `--blocking-routes`. Latency from each request's intended send time (corrected for coordinated omission), per path.\n",
        thousands(st.rate),
        st.conns,
        st.mix,
        st.duration_s,
        st.warmup_s
    );
    s.push_str(&markdown(r));
    let _ = writeln!(
        s,
        "\n![{FAST_PATH} p99 with one {} in every {} requests](blocking.svg)\n",
        st.sleep_path, st.sleep_every
    );
    let _ = writeln!(
        s,
        "Machine: {} ({} CPUs online, {} allowed to the comparison), {}, {}; load average {} at the start, {} at the end. Pinning: server on CPUs {}, loadgen on CPUs {}.\n",
        m.cpu,
        m.cpus_online,
        m.cpus_allowed,
        m.kernel,
        m.date,
        m.loadavg_start.trim(),
        m.loadavg_end.trim(),
        st.pinning.server_cpus.as_deref().unwrap_or("any"),
        st.pinning.loadgen_cpus.as_deref().unwrap_or("any")
    );
    let _ = writeln!(s, "Command: `{}` ({:.0} s)", r.command, r.wall_s);
    s
}

pub(super) fn write_outputs(dir: &Path, r: &BlockingResults) -> Result<(), Error> {
    let file_err = |p: &Path, e: String| Error::Io(format!("cannot write {}: {e}", p.display()));
    let svg = dir.join("blocking.svg");
    chart(r, &svg).map_err(|e| file_err(&svg, e))?;
    let md = dir.join("blocking.md");
    std::fs::write(&md, document(r)).map_err(|e| file_err(&md, e.to_string()))?;
    let json = dir.join("blocking.json");
    let text = serde_json::to_string_pretty(r).map_err(|e| file_err(&json, e.to_string()))?;
    std::fs::write(&json, text + "\n").map_err(|e| file_err(&json, e.to_string()))?;
    Ok(())
}

/// Milliseconds on the chart's axis: 0.25, 2.5, 25, 250.
fn ms_label(v: &f64) -> String {
    match *v {
        v if v >= 10.0 => format!("{v:.0}"),
        v if v >= 1.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// Bars of the fast path's p99 per backend (log scale, ms): as built, and with `--offload`; a
/// dashed line at the sleep time.
fn chart(r: &BlockingResults, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let st = &r.settings;
    let backends: Vec<&str> = st.backends.iter().map(String::as_str).collect();
    let ms = |us: u64| us.max(1) as f64 / 1000.0;
    let p99 = |backend: &str, offloaded: bool| {
        r.runs
            .iter()
            .find(|x| x.backend == backend && x.offload.is_some() == offloaded)
            .filter(|x| x.status == Status::Ok)
            .and_then(|x| x.fast.as_ref())
            .map(|f| ms(f.p99_us))
    };
    let sleep_ms = st.sleep_ms as f64;
    let measured = || {
        r.runs
            .iter()
            .filter_map(|x| x.fast.as_ref().map(|f| ms(f.p99_us)))
    };
    let top = measured().fold(sleep_ms, f64::max) * 3.0;
    let bottom = measured().fold(sleep_ms, f64::min) / 3.0;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot, legend) = root.split_horizontally(720);
    let n = backends.len().max(1);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!(
                "{FAST_PATH} p99 with one {} in every {} requests",
                st.sleep_path, st.sleep_every
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, (bottom..top).log_scale())
        .map_err(|e| err(&e))?;
    let names = backends.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            // A label at the middle of each backend's slot only.
            let slot = x.floor();
            if (x - slot - 0.5).abs() < 1e-6 {
                names
                    .get(slot as usize)
                    .map_or(String::new(), |b| b.to_string())
            } else {
                String::new()
            }
        })
        .y_desc(format!(
            "{FAST_PATH} p99 ms, from the intended send time (log scale)"
        ))
        .x_desc(format!(
            "{} req/s, {} connections",
            thousands(st.rate),
            st.conns
        ))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .y_label_formatter(&ms_label)
        .draw()
        .map_err(|e| err(&e))?;
    let inline_colour = RGBColor(214, 39, 40);
    let offload_colour = RGBColor(31, 119, 180);
    for (i, b) in backends.iter().enumerate() {
        let x = i as f64;
        if let Some(v) = p99(b, false) {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.12, bottom), (x + 0.5, v)],
                    inline_colour.filled(),
                )))
                .map_err(|e| err(&e))?;
        }
        if let Some(v) = p99(b, true) {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.5, bottom), (x + 0.88, v)],
                    offload_colour.filled(),
                )))
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, sleep_ms), (n as f64, sleep_ms)],
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(|e| err(&e))?;
    let entries = [
        (inline_colour, "as built: on the loop;".to_string()),
        (WHITE, "threads, pool: own threads;".to_string()),
        (WHITE, "coro: its helpers".to_string()),
        (offload_colour, format!("--offload {}", st.offload)),
    ];
    for (i, (c, label)) in entries.iter().enumerate() {
        let y = 60 + 26 * i as i32;
        if *c != WHITE {
            legend
                .draw(&Rectangle::new([(8, y - 7), (30, y + 7)], c.filled()))
                .map_err(|e| err(&e))?;
        }
        legend
            .draw(&Text::new(label.clone(), (38, y - 8), ("sans-serif", 15)))
            .map_err(|e| err(&e))?;
    }
    let y = 60 + 26 * entries.len() as i32;
    legend
        .draw(&PathElement::new(
            vec![(8, y), (30, y)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| err(&e))?;
    legend
        .draw(&Text::new(
            format!("the sleep: {} ms", st.sleep_ms),
            (38, y - 8),
            ("sans-serif", 15),
        ))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
