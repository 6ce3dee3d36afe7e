//! One loopback round trip per backend: a keep-alive `GET /plaintext` on an established
//! connection, against the real server binary (so it includes the syscalls each I/O model
//! makes). `cargo bench --bench roundtrip`; `C10K_BENCH_BACKENDS=epoll,poll` to choose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use criterion::{criterion_group, criterion_main, Criterion};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(backend: &str) -> Option<(Server, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--listen", "127.0.0.1:0", "--backend", backend])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let addr = line
        .strip_prefix("listening on ")?
        .split_whitespace()
        .next()?
        .to_string();
    Some((Server(child), addr))
}

fn roundtrip(c: &mut Criterion) {
    let backends = std::env::var("C10K_BENCH_BACKENDS")
        .unwrap_or_else(|_| "epoll,poll,select,sigio,uring,threads,coro,pool".into());
    let mut group = c.benchmark_group("roundtrip");
    for backend in backends.split(',') {
        let Some((_server, addr)) = start(backend) else {
            eprintln!("skipping {backend}: it did not start here");
            continue;
        };
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let request = b"GET /plaintext HTTP/1.1\r\nHost: b\r\n\r\n";
        let mut buf = [0u8; 512];
        // The response's length, learnt once: every response to this request is the same size.
        stream.write_all(request).unwrap();
        let len = stream.read(&mut buf).unwrap();
        group.bench_function(backend, |b| {
            b.iter(|| {
                stream.write_all(request).unwrap();
                let mut got = 0;
                while got < len {
                    got += stream.read(&mut buf[got..]).unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
