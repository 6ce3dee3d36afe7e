//! SVG charts (plotters' SVG backend): one per (metric, protocol), connections on a log-scale x
//! axis, one line per backend, each backend in the same colour on every chart.

use std::path::Path;

use plotters::prelude::*;

use super::{Metrics, Results, Status};
use crate::Error;

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

struct Chart {
    file: &'static str,
    title: &'static str,
    y_desc: &'static str,
    log_y: bool,
    value: fn(&Metrics) -> Option<f64>,
}

const CHARTS: &[Chart] = &[
    Chart {
        file: "throughput",
        title: "Throughput",
        y_desc: "requests per second",
        log_y: false,
        value: |m| Some(m.req_per_s),
    },
    Chart {
        file: "p99",
        title: "p99 latency",
        y_desc: "p99 latency (µs, log scale)",
        log_y: true,
        value: |m| Some(m.p99_us as f64),
    },
    Chart {
        file: "memory",
        title: "Server memory per connection",
        y_desc: "KiB of RSS per connection",
        log_y: false,
        value: |m| m.rss_per_conn_kib,
    },
    Chart {
        file: "syscalls",
        title: "Server syscalls per request",
        y_desc: "syscalls per request",
        log_y: false,
        value: |m| m.syscalls_per_req,
    },
];

fn colour(backend: &str) -> RGBColor {
    let i = c10k::backend::BACKENDS
        .iter()
        .position(|b| b.name == backend)
        .unwrap_or(COLOURS.len() - 1);
    let (r, g, b) = COLOURS[i % COLOURS.len()];
    RGBColor(r, g, b)
}

/// Writes every chart into `dir`; returns (file name, title) of each.
pub fn write_all(r: &Results, dir: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for proto in &r.settings.protos {
        for c in CHARTS {
            // (backend, [(conns, value)]) in the order of the sweep.
            let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
            for s in r.steps.iter().filter(|s| &s.proto == proto) {
                let Some(v) = s
                    .metrics
                    .as_ref()
                    .filter(|_| s.status == Status::Ok)
                    .and_then(c.value)
                    .filter(|v| v.is_finite() && (!c.log_y || *v > 0.0))
                else {
                    continue;
                };
                match series.iter_mut().find(|(b, _)| b == &s.backend) {
                    Some((_, pts)) => pts.push((s.conns as f64, v)),
                    None => series.push((s.backend.clone(), vec![(s.conns as f64, v)])),
                }
            }
            let file = format!("{}-{proto}.svg", c.file);
            let unit = if proto == "echo" {
                c.y_desc.replace("request", "message")
            } else {
                c.y_desc.to_string()
            };
            let title = format!("{} — {proto}", c.title);
            let path = dir.join(&file);
            draw(&path, &title, &unit, c.log_y, &r.settings.conns, &series)
                .map_err(|e| Error::Io(format!("cannot draw {}: {e}", path.display())))?;
            out.push((file, title));
        }
    }
    Ok(out)
}

fn draw(
    path: &Path,
    title: &str,
    y_desc: &str,
    log_y: bool,
    conns: &[u64],
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot, legend) = root.split_horizontally(740);
    let lo = conns.iter().copied().min().unwrap_or(1).max(1) as f64;
    let hi = conns.iter().copied().max().unwrap_or(1).max(1) as f64;
    let (x0, x1) = (lo / 1.5, hi * 1.5);
    let values = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, v)| v));
    let max = values.clone().fold(0.0f64, f64::max);
    let min = values.fold(f64::INFINITY, f64::min);
    let mut builder = ChartBuilder::on(&plot);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(80);
    let x_fmt = |v: &f64| {
        if *v >= 1000.0 {
            format!("{}k", (*v / 1000.0).round())
        } else {
            format!("{}", v.round())
        }
    };
    let y_fmt = |v: &f64| {
        if *v >= 1e6 {
            format!("{:.1}M", v / 1e6)
        } else if *v >= 1e4 {
            format!("{:.0}k", v / 1e3)
        } else if *v >= 10.0 || *v == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    let style = |i: &str| ShapeStyle::from(&colour(i)).stroke_width(2);
    if log_y {
        let (y0, y1) = if max > 0.0 {
            (min.max(1.0) / 2.0, max * 2.0)
        } else {
            (1.0, 10.0)
        };
        let mut chart = builder
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("connections (log scale)")
            .y_desc(y_desc)
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.12))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(|e| err(&e))?;
        for (b, pts) in series {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), style(b)).point_size(4))
                .map_err(|e| err(&e))?;
        }
    } else {
        let y1 = if max > 0.0 { max * 1.1 } else { 1.0 };
        let mut chart = builder
            .build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("connections (log scale)")
            .y_desc(y_desc)
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.12))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(|e| err(&e))?;
        for (b, pts) in series {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), style(b)).point_size(4))
                .map_err(|e| err(&e))?;
        }
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
            .draw(&Text::new(b.clone(), (46, y - 8), ("sans-serif", 16)))
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
