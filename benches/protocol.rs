//! Protocol cost without sockets: HTTP request parse + response build, and echo throughput.
//! `cargo bench --bench protocol`.

use std::hint::black_box;

use c10k::date::HttpDate;
use c10k::proto::{Env, Proto, Session};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

struct BenchEnv {
    date: HttpDate,
}

impl Env for BenchEnv {
    fn http_date(&self) -> &[u8] {
        self.date.as_bytes()
    }
    fn stats_json(&self) -> String {
        "{}".into()
    }
    fn count_request(&mut self) {}
}

/// The request wrk sends.
const PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
/// A browser-like head with a dozen fields.
const BROWSER: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: none\r\nCache-Control: max-age=0\r\n\r\n";

fn http(c: &mut Criterion) {
    let mut env = BenchEnv {
        date: HttpDate::default(),
    };
    let mut group = c.benchmark_group("http");
    for (name, request) in [("plaintext", PLAINTEXT), ("browser_head", BROWSER)] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            let mut session = Session::new(Proto::Http);
            let mut out = Vec::with_capacity(4096);
            b.iter(|| {
                out.clear();
                let consumed = session.advance(black_box(request), &mut out, &mut env);
                black_box((consumed, out.len()))
            })
        });
    }
    // 16 pipelined requests in one buffer, as wrk-pipeline.lua sends them.
    let pipelined: Vec<u8> = PLAINTEXT.repeat(16);
    group.throughput(Throughput::Elements(16));
    group.bench_function("plaintext_pipelined_16", |b| {
        let mut session = Session::new(Proto::Http);
        let mut out = Vec::with_capacity(8192);
        b.iter(|| {
            out.clear();
            black_box(session.advance(black_box(&pipelined), &mut out, &mut env))
        })
    });
    group.finish();
}

fn echo(c: &mut Criterion) {
    let mut env = BenchEnv {
        date: HttpDate::default(),
    };
    let mut group = c.benchmark_group("echo");
    for size in [64usize, 4096, 65536] {
        let input = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |b| {
            let mut session = Session::new(Proto::Echo);
            b.iter_batched_ref(
                || Vec::with_capacity(size),
                |out| black_box(session.advance(&input, out, &mut env)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, http, echo);
criterion_main!(benches);
