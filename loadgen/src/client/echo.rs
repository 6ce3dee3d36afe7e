//! Echo client: fixed-size messages that carry a sequence number, the connection's id and a
//! checksum, with a payload derived from both; every echoed byte is compared with what was sent.
//!
//! Layout (little-endian): `[0..8)` sequence number, `[8..12)` connection id, `[12..16)` FNV-1a
//! checksum of the other bytes, then the payload. A message that differs from the expected one is
//! *reordered* when it is intact (checksum good, our connection) but carries another sequence
//! number of this connection, and *corrupted* otherwise.

use super::{Client, Decoded, Outcome, ProtoError};
use crate::config::ECHO_HEADER;

pub struct Echo {
    size: usize,
    /// The expected message, rebuilt for each comparison (one buffer per thread).
    scratch: Vec<u8>,
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
            scratch: Vec::with_capacity(size),
        }
    }
}

/// Appends message `seq` of connection `conn` to `out`.
pub fn build(conn: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&conn.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let seed = (seq as u32).wrapping_mul(0x9e37_79b9) ^ conn;
    out.extend((0..size - ECHO_HEADER).map(|i| (seed.wrapping_add(i as u32 * 7) >> 3) as u8));
    let sum = checksum(&out[start..]);
    out[start + 12..start + 16].copy_from_slice(&sum.to_le_bytes());
}

/// FNV-1a over the message with its checksum field skipped.
fn checksum(msg: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in msg[..12].iter().chain(&msg[16..]) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

fn field<const N: usize>(msg: &[u8], at: usize) -> [u8; N] {
    msg[at..at + N].try_into().expect("slice of N bytes")
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
        build(state.conn_id, state.next_send, self.size, out);
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
        self.scratch.clear();
        build(state.conn_id, state.next_recv, self.size, &mut self.scratch);
        let outcome = if got == &self.scratch[..] {
            Outcome::Verified
        } else {
            let seq = u64::from_le_bytes(field(got, 0));
            let conn = u32::from_le_bytes(field(got, 8));
            let sum = u32::from_le_bytes(field(got, 12));
            let intact = sum == checksum(got) && conn == state.conn_id;
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
}
