//! Feeds arbitrary bytes to the HTTP session, split into reads where the input says, with the
//! output drained at random points: it must never panic, never hold more than a bounded amount
//! of output, and every response it writes must start with a status line.
#![no_main]

use c10k::proto::{Env, Proto, Session, Status, OUTPUT_HIGH_WATER};
use libfuzzer_sys::fuzz_target;

struct FuzzEnv;

impl Env for FuzzEnv {
    fn http_date(&self) -> &[u8] {
        b"Sun, 06 Nov 1994 08:49:37 GMT"
    }
    fn stats_json(&self) -> String {
        "{}".into()
    }
    fn count_request(&mut self) {}
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the read size, so that the fuzzer explores splits too.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(split).max(1);
    let mut session = Session::new(Proto::Http);
    let mut env = FuzzEnv;
    let mut input: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut first_output = true;
    for chunk in data.chunks(step) {
        input.extend_from_slice(chunk);
        loop {
            let before = out.len();
            let consumed = session.advance(&input, &mut out, &mut env);
            assert!(consumed <= input.len());
            input.drain(..consumed);
            assert!(out.len() <= OUTPUT_HIGH_WATER + 64 * 1024, "output grew to {}", out.len());
            if first_output && !out.is_empty() {
                assert!(out.starts_with(b"HTTP/1.1 "), "response does not start with a status line");
                first_output = false;
            }
            let progressed = consumed > 0 || out.len() > before;
            out.clear(); // the driver wrote it all
            if !progressed && !session.has_pending_output() {
                break;
            }
            if session.status() == Status::CloseAfterFlush && input.is_empty() {
                break;
            }
        }
    }
});
