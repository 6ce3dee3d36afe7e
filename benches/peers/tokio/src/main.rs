//! tokio peer for `loadgen compare --peers`: HTTP/1.1 keep-alive on tokio, the runtime most Rust
//! servers use, answering every request head with a fixed 200. `--threads 1` (what compare
//! asks) runs the current-thread runtime: one core, like the other peers.
//!
//! Build: cargo build --release --manifest-path benches/peers/tokio/Cargo.toml
//! Run:   benches/peers/tokio/target/release/tokio-peer --port 0 [--threads N]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: tokio\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
const MAX_HEAD: usize = 16384;

async fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut start = 0;
        while let Some(end) = buf[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            start += end + 4;
            out.extend_from_slice(RESPONSE);
        }
        buf.drain(..start);
        if buf.len() > MAX_HEAD {
            return;
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn run(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {} peer=tokio", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                if let Ok((s, _)) = conn {
                    tokio::spawn(serve(s));
                }
            }
            _ = term.recv() => return Ok(()),
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut port = 8080u16;
    let mut threads = 1usize;
    let args: Vec<String> = std::env::args().collect();
    for pair in args[1..].windows(2) {
        match pair[0].as_str() {
            "--port" => port = pair[1].parse().expect("--port N"),
            "--threads" => threads = pair[1].parse().expect("--threads N"),
            _ => {}
        }
    }
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(port))
}
