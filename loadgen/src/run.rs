//! One process's part of a run: one event-loop thread per `--threads`, each with its share of
//! the connections, the schedule and the request budget; their snapshots merged as they come,
//! their statistics merged at the end.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::echo::Echo;
use crate::client::http::Http;
use crate::config::{split, Config, EngineKind, Mode};
use crate::engine::{run_thread, ConnPlan, Schedule, ThreadPlan};
use crate::error::Error;
use crate::interval::{Aggregator, Feed, Snapshot};
use crate::report::{Report, Setup};
use crate::stats::Stats;

pub(crate) fn run_local(
    cfg: &Config,
    on_interval: &mut dyn FnMut(&Snapshot),
) -> Result<Report, Error> {
    let share = cfg.share();
    let threads = cfg.effective_threads();
    let slots = share.of * threads;
    let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX / 2)) as u64;
    let start = Instant::now();
    let origin = match cfg.start_at {
        None => 0,
        Some(at) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            if at < now {
                return Err(Error::Config(format!(
                    "--start-at {at:.3} is {:.3} s in the past: this run would not be on the \
                     others' schedule",
                    now - at
                )));
            }
            ns(Duration::from_secs_f64(at - now))
        }
    };
    if cfg.engine == EngineKind::Uring {
        crate::engine::probe_uring()
            .map_err(|why| Error::Config(format!("--engine uring: {why}")))?;
    }
    let cpu0 = c10k::sys::process_cpu_time();
    let (tx, rx) = mpsc::channel();
    let mut plans: Vec<ThreadPlan> = (0..threads)
        .map(|t| {
            let slot = share.index * threads + t;
            ThreadPlan {
                thread: t,
                start,
                origin,
                target: cfg.target,
                sources: cfg.sources.clone(),
                source_ports: cfg.source_ports,
                conns: Vec::new(),
                pipeline: cfg.pipeline,
                timeout: ns(cfg.timeout),
                warmup: ns(cfg.warmup),
                duration: cfg.duration.map(ns),
                requests: cfg.requests.map(|n| split(n, slots, slot)),
                schedule: cfg.rate.map(|rate| Schedule {
                    rate,
                    stride: slots as u64,
                    offset: slot as u64,
                    origin,
                    tick: ns(cfg.schedule_tick),
                }),
                reconnect: !matches!(cfg.mode, Mode::Hold(_)),
                hold: matches!(cfg.mode, Mode::Hold(_)),
                ping: match &cfg.mode {
                    Mode::Hold(h) => h.ping_interval.map(ns),
                    _ => None,
                },
                interval: ns(cfg.interval),
                snapshots: tx.clone(),
            }
        })
        .collect();
    drop(tx);
    let hold = matches!(cfg.mode, Mode::Hold(_));
    for g in (share.index..cfg.conns).step_by(share.of) {
        let t = (g / share.of) % threads;
        plans[t].conns.push(ConnPlan {
            global: g,
            // A hold's ramp is what it measures: it starts at the start instant. Other runs
            // connect before it, so that their requests start on the schedule.
            connect_at: cfg.connect_rate.map_or(0, |r| (g as f64 * 1e9 / r) as u64)
                + if hold { origin } else { 0 },
        });
    }
    let mut handles = Vec::new();
    for plan in plans {
        let mode = cfg.mode.clone();
        let name = format!("loadgen-{}", plan.thread);
        let (thread, done) = (plan.thread, plan.snapshots.clone());
        let engine = cfg.engine;
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let stats = match mode {
                    Mode::Http(o) => run_thread(Http::new(&o), plan, engine),
                    Mode::Echo { size } => run_thread(Echo::new(size), plan, engine),
                    Mode::Hold(h) => run_thread(Echo::new(h.ping_size), plan, engine),
                };
                // The threads still running go on reporting intervals without this one.
                let _ = done.send((thread, Feed::Done));
                stats
            })
            .map_err(|e| Error::Io(format!("cannot start a thread: {e}")))?;
        handles.push(h);
    }
    let mut agg = Aggregator::new(threads);
    for (thread, feed) in rx {
        agg.feed(thread, feed, on_interval);
    }
    agg.finish(on_interval);
    let mut stats = Stats::default();
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.add(&s),
            Ok(Err(e)) => return Err(Error::Io(format!("event loop failed: {e}"))),
            Err(_) => return Err(Error::Io("an event-loop thread panicked".into())),
        }
    }
    let (u1, s1) = c10k::sys::process_cpu_time();
    stats.this.process_user_us = u1.saturating_sub(cpu0.0).as_micros() as u64;
    stats.this.process_sys_us = s1.saturating_sub(cpu0.1).as_micros() as u64;
    stats.this.processes = 1;
    let setup = Setup {
        conns: split(cfg.conns as u64, share.of, share.index),
        threads: threads as u64,
        procs: 1,
        pipeline: cfg.pipeline as u64,
        target_rate: cfg.rate.map(|r| r / share.of as f64),
        duration_s: cfg.duration.map(|d| d.as_secs_f64()),
        requests: cfg.requests.map(|n| split(n, share.of, share.index)),
        warmup_s: cfg.warmup.as_secs_f64(),
        timeout_s: cfg.timeout.as_secs_f64(),
        sources: cfg.sources.iter().map(ToString::to_string).collect(),
        merged_runs: 1,
        engine: cfg.engine.name().into(),
    };
    Ok(Report::new(
        cfg.mode.name(),
        &cfg.target.to_string(),
        setup,
        &stats,
    ))
}
