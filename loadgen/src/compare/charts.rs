//! SVG charts (plotters' SVG backend), one line per subject, each subject in the same colour on
//! every chart: CPU per request and p99 against idle connections, p99 against offered load (the
//! hockey stick), capacity against connections, memory per connection.

use std::path::Path;

use plotters::prelude::*;

use super::probe::Bound;
use super::results::{Results, Status};
use crate::error::Error;

/// Colours by position in c10k's backend table (Tableau 10).
const COLOURS: &[(u8, u8, u8)] = &[
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn colour(backend: &str) -> RGBColor {
    // Backends by their place in c10k's table, peers and the rest after them.
    let i = c10k::models::BACKENDS
        .iter()
        .position(|b| b.name == backend)
        .unwrap_or(match backend {
            "peer:cepoll" => 9,
            "peer:tokio" => 8,
            "peer:asyncio" => 5,
            "peer:nginx" => 6,
            _ => 7,
        });
    let (r, g, b) = COLOURS[i % COLOURS.len()];
    RGBColor(r, g, b)
}

type Series = Vec<(String, Vec<(f64, f64)>)>;

fn push(series: &mut Series, name: &str, x: f64, y: f64) {
    if !(x.is_finite() && y.is_finite()) {
        return;
    }
    match series.iter_mut().find(|(n, _)| n == name) {
        Some((_, pts)) => pts.push((x, y)),
        None => series.push((name.to_string(), vec![(x, y)])),
    }
}

struct Axes<'a> {
    x_desc: &'a str,
    y_desc: &'a str,
    log_x: bool,
    log_y: bool,
}

/// Writes every chart into `dir`; returns (file name, title) of each.
pub fn write_all(r: &Results, dir: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    let mut chart = |file: String, title: String, axes: Axes, series: Series| {
        let path = dir.join(&file);
        draw(&path, &title, &axes, &series)
            .map_err(|e| Error::Io(format!("cannot draw {}: {e}", path.display())))?;
        out.push((file, title));
        Ok::<(), Error>(())
    };
    if !r.idle.is_empty() {
        let active = r.settings.active;
        let (mut cpu, mut p99, mut examined) = (Series::new(), Series::new(), Series::new());
        for s in r.idle.iter().filter(|s| s.status == Status::Ok) {
            let Some(p) = &s.probe else { continue };
            let x = (s.idle + active) as f64;
            if let Some(srv) = &p.server {
                // 0: nothing was answered in the window to divide by.
                if srv.cpu_us_per_req > 0.0 {
                    push(&mut cpu, &s.subject, x, srv.cpu_us_per_req);
                }
                if let Some(e) = srv.examined_per_req.filter(|e| *e > 0.0) {
                    push(&mut examined, &s.subject, x, e);
                }
            }
            push(&mut p99, &s.subject, x, p.p99_us.max(1) as f64);
        }
        let x_desc = format!("connections: {active} active + idle (log scale)");
        chart(
            "idle-cpu.svg".into(),
            format!("Server CPU per request, {active} active connections + idle ones"),
            Axes {
                x_desc: &x_desc,
                y_desc: "CPU µs per request (log scale)",
                log_x: true,
                log_y: true,
            },
            cpu,
        )?;
        chart(
            "idle-examined.svg".into(),
            "Descriptors examined per request".into(),
            Axes {
                x_desc: &x_desc,
                y_desc: "descriptors per request (log scale)",
                log_x: true,
                log_y: true,
            },
            examined,
        )?;
        chart(
            "idle-p99.svg".into(),
            "p99 latency with idle connections".into(),
            Axes {
                x_desc: &x_desc,
                y_desc: "p99 µs (log scale)",
                log_x: true,
                log_y: true,
            },
            p99,
        )?;
        let mut memory = Series::new();
        for s in r.idle.iter().filter(|s| s.idle > 0) {
            if let Some(m) = s.rss_per_conn_kib.filter(|m| *m > 0.0) {
                push(&mut memory, &s.subject, (s.idle + active) as f64, m);
            }
        }
        chart(
            "memory.svg".into(),
            "Server memory per connection".into(),
            Axes {
                x_desc: "connections (log scale)",
                y_desc: "KiB of RSS per connection (log scale)",
                log_x: true,
                log_y: true,
            },
            memory,
        )?;
    }
    // The hockey stick: every probe of the search, by offered rate.
    for &conns in &r.settings.conns {
        let mut series = Series::new();
        for s in r.capacity.iter().filter(|s| s.conns == conns) {
            let Some(search) = &s.search else { continue };
            let mut probes: Vec<_> = search.probes.iter().filter(|p| !p.loadgen_bound).collect();
            probes.sort_by(|a, b| a.target_rate.total_cmp(&b.target_rate));
            for p in probes {
                push(
                    &mut series,
                    &s.subject,
                    p.target_rate,
                    p.p99_us.max(1) as f64,
                );
            }
        }
        chart(
            format!("p99-load-{conns}.svg"),
            format!("p99 against offered load, {conns} connections"),
            Axes {
                x_desc: "offered requests per second (probes loadgen could not make are left out)",
                y_desc: "p99 µs (log scale)",
                log_x: false,
                log_y: true,
            },
            series,
        )?;
    }
    if r.settings.conns.len() > 1 {
        let mut series = Series::new();
        for s in &r.capacity {
            match (s.bound, s.capacity) {
                (Some(Bound::Server), Some(c)) => push(&mut series, &s.subject, s.conns as f64, c),
                (Some(Bound::Loadgen), Some(c)) => {
                    push(&mut series, "loadgen ceiling (≥)", s.conns as f64, c)
                }
                _ => {}
            }
        }
        chart(
            "capacity.svg".into(),
            "Capacity against connections".into(),
            Axes {
                x_desc: "connections (log scale)",
                y_desc: "capacity, requests per second (log scale)",
                log_x: true,
                log_y: true,
            },
            series,
        )?;
    }
    Ok(out)
}

fn range(values: impl Iterator<Item = f64> + Clone, log: bool) -> (f64, f64) {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    let min = values.fold(f64::INFINITY, f64::min);
    if !max.is_finite() {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        (min.max(1e-3) / 2.0, max.max(min * 1.01) * 2.0)
    } else {
        (0.0, (max * 1.1).max(1.0))
    }
}

fn fmt(v: &f64) -> String {
    if *v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if *v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if *v >= 10.0 || *v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn draw(path: &Path, title: &str, axes: &Axes, series: &Series) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot, legend) = root.split_horizontally(720);
    let (x0, x1) = range(
        series.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x)),
        axes.log_x,
    );
    let (y0, y1) = range(
        series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y)),
        axes.log_y,
    );
    let mut builder = ChartBuilder::on(&plot);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(80);
    let style = |i: &str| ShapeStyle::from(&colour(i)).stroke_width(2);
    // One body for the three axis combinations (their coordinate types differ).
    macro_rules! plot {
        ($x:expr, $y:expr) => {{
            let mut chart = builder.build_cartesian_2d($x, $y).map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(axes.x_desc)
                .y_desc(axes.y_desc)
                .light_line_style(TRANSPARENT)
                .bold_line_style(BLACK.mix(0.12))
                .x_label_formatter(&fmt)
                .y_label_formatter(&fmt)
                .draw()
                .map_err(|e| err(&e))?;
            for (b, pts) in series {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), style(b)).point_size(4))
                    .map_err(|e| err(&e))?;
            }
        }};
    }
    match (axes.log_x, axes.log_y) {
        (true, true) => plot!((x0..x1).log_scale(), (y0..y1).log_scale()),
        (true, false) => plot!((x0..x1).log_scale(), y0..y1),
        (false, true) => plot!(x0..x1, (y0..y1).log_scale()),
        (false, false) => plot!(x0..x1, y0..y1),
    }
    // The legend beside the plot, so that it never hides a line.
    for (i, (b, _)) in series.iter().enumerate() {
        let y = 60 + 26 * i as i32;
        legend
            .draw(&PathElement::new(vec![(8, y), (38, y)], style(b)))
            .map_err(|e| err(&e))?;
        legend
            .draw(&Circle::new(
                (23, y),
                4,
                ShapeStyle::from(&colour(b)).filled(),
            ))
            .map_err(|e| err(&e))?;
        legend
            .draw(&Text::new(b.clone(), (46, y - 8), ("sans-serif", 15)))
            .map_err(|e| err(&e))?;
    }
    if series.is_empty() {
        legend
            .draw(&Text::new("no data", (8, 60), ("sans-serif", 16)))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
