//! Protocols, sans-I/O: each encodes a request into a connection's output buffer and decodes the
//! responses from its input, one at a time, in order. The event loop ([`crate::engine`]) owns the
//! sockets, the clock and the statistics.

pub mod echo;
pub mod http;

/// How one response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status.
    Status(u16),
    /// An echo message whose every byte matched.
    Verified,
    /// An echo message with a wrong byte.
    Corrupted,
    /// An intact echo message out of its order.
    Reordered,
}

/// What one call to [`Client::decode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used; 0 with no outcome means "need more input".
    pub consumed: usize,
    pub outcome: Option<Outcome>,
    /// The peer said this response is its last on the connection (HTTP `Connection: close`,
    /// RFC 9112 §9.6): send nothing more on it; a new connection takes over.
    pub last: bool,
}

/// A response the client cannot parse: the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoError(pub String);

/// One protocol, one instance per event-loop thread.
pub trait Client {
    /// Per-connection state.
    type State;
    fn new_state(&self, conn_id: u32) -> Self::State;
    /// A fresh connection in the same slot.
    fn reset(&self, state: &mut Self::State);
    /// Appends one request to `out`.
    fn encode(&mut self, state: &mut Self::State, out: &mut Vec<u8>);
    /// The kinds of request this client sends that are recorded apart as well (HTTP: the
    /// paths of a `--mix`), in class order; empty when every request is alike.
    fn classes(&self) -> Vec<String> {
        Vec::new()
    }
    /// The class of the request numbered `seq` (the engine numbers them so that the sequence
    /// is the same on every run: see `Engine::issue`). 0 when there are no classes.
    fn class_of(&self, _seq: u64) -> u8 {
        0
    }
    /// Appends one request of `class` to `out`.
    fn encode_class(&mut self, state: &mut Self::State, _class: u8, out: &mut Vec<u8>) {
        self.encode(state, out)
    }
    /// Decodes at most one response from the front of `input`.
    fn decode(&mut self, state: &mut Self::State, input: &[u8]) -> Result<Decoded, ProtoError>;
    /// The peer closed: a response delimited by the close is complete now.
    fn on_eof(&mut self, _state: &mut Self::State) -> Option<Outcome> {
        None
    }
    /// Part of a response has been consumed (a body is being skipped).
    fn mid_response(&self, _state: &Self::State) -> bool {
        false
    }
    /// Close the connection after each response (and open a new one).
    fn close_after_response(&self) -> bool {
        false
    }
}
