//! Echo client: fixed-size messages that carry a sequence number, the connection's id and a
//! checksum, with a payload derived from both; every echoed byte is compared with what was sent.
//!
//! Layout (little-endian): `[0..8)` sequence number, `[8..12)` connection id, `[12..16)` FNV-1a
//! checksum of the first 12 bytes, then the payload. The payload of message `seq` of connection
//! `conn` is a slice of one pattern computed once per thread, starting at an offset derived from
//! both: building a message is a copy and verifying it is a comparison of slices (memcmp speed,
//! many GB per CPU-second), where a byte-by-byte rebuild topped out near 0.2 GB/s. Consecutive
//! messages of a connection start at different offsets, so a duplicated or swapped payload is
//! caught as well as a flipped byte.
//!
//! A message that differs from the expected one is *reordered* when it is intact (header
//! checksum good, our connection, the payload of its own sequence number) but carries another
//! sequence number of this connection, and *corrupted* otherwise.

use super::{Client, Decoded, Outcome, ProtoError};
use crate::config::ECHO_HEADER;

/// Payload offsets run over this many positions of the pattern (a prime, so that the offsets
/// of consecutive sequence numbers do not fall into a short cycle).
const OFFSETS: usize = 251;

pub struct Echo {
    size: usize,
    /// `size - ECHO_HEADER + OFFSETS` bytes of an aperiodic sequence: every payload is a slice.
    pattern: Vec<u8>,
}

#[derive(Debug)]
pub struct State {
    conn_id: u32,
    next_send: u64,
    next_recv: u64,
}

impl Echo {
    pub fn new(size: usize) -> Echo {
        assert!(
            size >= ECHO_HEADER,
            "echo messages hold a {ECHO_HEADER}-byte header"
        );
        Echo {
            size,
            pattern: pattern(size - ECHO_HEADER + OFFSETS),
        }
    }

    /// The payload message `seq` of connection `conn` carries.
    fn payload(&self, conn: u32, seq: u64) -> &[u8] {
        let at = offset(conn, seq);
        &self.pattern[at..at + self.size - ECHO_HEADER]
    }
}

/// `len` bytes of xorshift32: no period shorter than the pattern, so two offsets never give
/// the same payload.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Where the payload of message `seq` of connection `conn` starts in the pattern.
fn offset(conn: u32, seq: u64) -> usize {
    ((seq.wrapping_mul(97) ^ u64::from(conn).wrapping_mul(0x9e37_79b9)) % OFFSETS as u64) as usize
}

/// Appends message `seq` of connection `conn` to `out`.
pub fn build(echo: &Echo, conn: u32, seq: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&conn.to_le_bytes());
    let sum = checksum(&out[start..start + 12]);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(echo.payload(conn, seq));
}

/// FNV-1a over the header's sequence number and connection id.
fn checksum(head: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in &head[..12] {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

fn field<const N: usize>(msg: &[u8], at: usize) -> [u8; N] {
    msg[at..at + N].try_into().expect("slice of N bytes")
}

/// The 16-byte header of message `seq` of connection `conn`.
fn header(conn: u32, seq: u64) -> [u8; ECHO_HEADER] {
    let mut h = [0; ECHO_HEADER];
    h[..8].copy_from_slice(&seq.to_le_bytes());
    h[8..12].copy_from_slice(&conn.to_le_bytes());
    let sum = checksum(&h);
    h[12..].copy_from_slice(&sum.to_le_bytes());
    h
}

impl Client for Echo {
    type State = State;

    fn new_state(&self, conn_id: u32) -> State {
        State {
            conn_id,
            next_send: 0,
            next_recv: 0,
        }
    }

    fn reset(&self, state: &mut State) {
        state.next_send = 0;
        state.next_recv = 0;
    }

    fn encode(&mut self, state: &mut State, out: &mut Vec<u8>) {
        build(self, state.conn_id, state.next_send, out);
        state.next_send += 1;
    }

    fn decode(&mut self, state: &mut State, input: &[u8]) -> Result<Decoded, ProtoError> {
        if input.len() < self.size {
            return Ok(Decoded {
                consumed: 0,
                outcome: None,
                last: false,
            });
        }
        let got = &input[..self.size];
        let (head, body) = got.split_at(ECHO_HEADER);
        let expected = header(state.conn_id, state.next_recv);
        let outcome = if head == expected && body == self.payload(state.conn_id, state.next_recv) {
            Outcome::Verified
        } else {
            let seq = u64::from_le_bytes(field(got, 0));
            let conn = u32::from_le_bytes(field(got, 8));
            let sum = u32::from_le_bytes(field(got, 12));
            let intact =
                sum == checksum(head) && conn == state.conn_id && body == self.payload(conn, seq);
            if intact && seq != state.next_recv && seq < state.next_send {
                Outcome::Reordered
            } else {
                Outcome::Corrupted
            }
        };
        state.next_recv += 1;
        Ok(Decoded {
            consumed: self.size,
            outcome: Some(outcome),
            last: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(c: &mut Echo, st: &mut State, msg: &[u8]) -> Outcome {
        c.decode(st, msg).unwrap().outcome.unwrap()
    }

    #[test]
    fn verifies_and_classifies() {
        let mut c = Echo::new(40);
        let mut st = c.new_state(7);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.encode(&mut st, &mut a);
        c.encode(&mut st, &mut b);
        assert_eq!(c.decode(&mut st, &a[..39]).unwrap().outcome, None);
        // b before a: both intact, both out of order.
        assert_eq!(decode_one(&mut c, &mut st, &b), Outcome::Reordered);
        assert_eq!(decode_one(&mut c, &mut st, &a), Outcome::Reordered);
        let mut st = c.new_state(7);
        let mut m = Vec::new();
        c.encode(&mut st, &mut m);
        let mut flipped = m.clone();
        flipped[30] ^= 1;
        assert_eq!(decode_one(&mut c, &mut st, &flipped), Outcome::Corrupted);
        let mut st = c.new_state(7);
        c.encode(&mut st, &mut Vec::new());
        assert_eq!(decode_one(&mut c, &mut st, &m), Outcome::Verified);
    }

    /// The payload is a slice of the thread's one pattern (so that verifying is a slice
    /// comparison), at an offset that differs between consecutive messages: a payload echoed
    /// in the place of its neighbour's (intact header) is caught.
    #[test]
    fn payloads_are_slices_of_one_pattern() {
        let size = 4096;
        let mut c = Echo::new(size);
        assert_eq!(c.pattern.len(), size - ECHO_HEADER + OFFSETS);
        let mut st = c.new_state(3);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.encode(&mut st, &mut a);
        c.encode(&mut st, &mut b);
        let at = offset(3, 1);
        assert_eq!(&b[ECHO_HEADER..], &c.pattern[at..at + size - ECHO_HEADER]);
        assert_ne!(a[ECHO_HEADER..], b[ECHO_HEADER..]);
        let mut swapped = a.clone();
        swapped[ECHO_HEADER..].copy_from_slice(&b[ECHO_HEADER..]);
        assert_eq!(decode_one(&mut c, &mut st, &swapped), Outcome::Corrupted);
        // Every byte counts, the last one too.
        let mut last = b.clone();
        *last.last_mut().unwrap() ^= 0x80;
        assert_eq!(decode_one(&mut c, &mut st, &last), Outcome::Corrupted);
    }

    /// Not a timed assertion: prints how many bytes of 64 KiB messages one CPU-second verifies
    /// (`cargo test --release -p loadgen --lib echo_verification_rate -- --nocapture`).
    #[test]
    fn echo_verification_rate() {
        let size = 64 << 10;
        let count = 4096u64; // 256 MiB
        let mut c = Echo::new(size);
        let mut sender = c.new_state(1);
        let mut receiver = c.new_state(1);
        let mut msgs = Vec::with_capacity(size * 16);
        let cpu0 = crate::sys::thread_cpu_time();
        let mut verified = 0;
        for _ in 0..count / 16 {
            msgs.clear();
            for _ in 0..16 {
                c.encode(&mut sender, &mut msgs);
            }
            // The decode of the engine, one message at a time from a received buffer.
            let mut at = 0;
            while at < msgs.len() {
                let d = c.decode(&mut receiver, &msgs[at..]).unwrap();
                verified += u64::from(d.outcome == Some(Outcome::Verified));
                at += d.consumed;
            }
        }
        let cpu = crate::sys::thread_cpu_time().saturating_sub(cpu0);
        assert_eq!(verified, count);
        let gb = (count * size as u64) as f64 / 1e9;
        println!(
            "echo: built and verified {gb:.2} GB of {size}-byte messages in {:.3} CPU-s: {:.1} GB per CPU-second",
            cpu.as_secs_f64(),
            gb / cpu.as_secs_f64().max(1e-9)
        );
    }
}
