//! Protocols, sans-I/O: bytes in, bytes out, and a decision to keep or close.
//!
//! Nothing in this module touches a file descriptor or imports a backend, so every protocol is
//! unit-tested and benchmarked without sockets. A driver (the reactor, the thread-per-connection
//! loop, the io_uring loop) owns the socket and the buffers and calls [`Session::advance`] whenever
//! it has new input or has made room in the output.
//!
//! The contract every driver keeps:
//! - `input` is every byte received and not yet consumed, in order; `advance` returns how many
//!   bytes of it were consumed (the driver drops them from the front).
//! - `advance` appends to `out` and stops producing once `out.len() >= OUTPUT_HIGH_WATER`; the
//!   driver calls it again when the output has drained. That is how a 1 GiB `/bytes/N` body streams
//!   through a 64 KiB window, and how a client that does not read stops being read from.
//! - After the peer's EOF the driver keeps calling `advance` until it consumes nothing and the
//!   output is flushed, then closes: echo finishes echoing what was sent before the half-close.
//! - [`Session::status`] says whether to keep reading, or to flush, shut down writing and drain
//!   (after an HTTP error or `Connection: close`), so the client reads the response, not a reset.
//! - When [`Session::blocking_work`] shows work (a `/sleep` or `/work` request, with
//!   `--blocking-routes`), the session is paused: `advance` consumes and produces nothing until
//!   the driver has run the work, here or elsewhere, and handed its result to
//!   [`Session::resume`]. Requests behind it wait in the input, so responses stay in order.
//!
//! One optional extension, for drivers that can send from memory they do not own (a gather
//! write): **lent output.** A driver opts in per connection ([`Session::with_lent_output`]);
//! from then on `advance` stops before output that lies in static memory (a `/bytes/N` body)
//! instead of copying it, and [`Session::static_output`] lends it, up to [`STATIC_WINDOW`] at a
//! time (empty when there is none). It comes after everything already in `out`: the driver sends
//! `out` first (`writev` of both, or the window alone once `out` is empty) and reports how much
//! of the window went with [`Session::static_output_sent`]. While the window is not empty the
//! driver treats the connection as a full output buffer (write interest, the write timeout, no
//! reading, no `advance`): the body streams with no copy and no per-connection buffer, and a
//! client that does not read holds the server to the same bound as before. A driver that does
//! not opt in gets the same bytes, copied, from `advance`, and needs no change.

pub mod blocking;
pub mod echo;
pub mod http;

/// Stop producing output past this many pending bytes; resume when the driver has written it.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// The most lent output ([`Session::static_output`]) offered at once: as much as cepoll (the
/// minimal C loop of benches/peers) writes in one call. Static memory, so no connection's
/// buffer grows with it.
pub const STATIC_WINDOW: usize = 256 * 1024;

/// Which protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Echo,
    Http,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Echo => "echo",
            Proto::Http => "http",
        }
    }
}

/// What the connection should do next, as far as the protocol is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Keep the connection: read more input when there is room for output.
    Open,
    /// Write what is pending, shut down the write side, drain input briefly, then close.
    CloseAfterFlush,
}

/// What a protocol needs from the server around it; the driver implements it.
pub trait Env {
    /// The current `Date` header value (29 bytes, IMF-fixdate), cached and refreshed once a second.
    fn http_date(&self) -> &[u8];
    /// Name put in the `Server` header.
    fn server_name(&self) -> &str {
        "c10k"
    }
    /// The body of `GET /stats`: a JSON document.
    fn stats_json(&self) -> String;
    /// Called once per complete HTTP request (echo has no message boundaries and never calls it).
    fn count_request(&mut self);
    /// Whether `GET /sleep/MS` and `GET /work/N` are served (`--blocking-routes`); otherwise
    /// they are 404 like any unknown path.
    fn blocking_routes(&self) -> bool {
        false
    }
}

/// One connection's protocol state. An enum rather than a trait object: no allocation per
/// connection, and the size stays small for the memory-per-idle-connection budget.
#[derive(Debug)]
pub enum Session {
    Echo(echo::EchoSession),
    Http(http::HttpSession),
}

impl Session {
    pub fn new(proto: Proto) -> Session {
        match proto {
            Proto::Echo => Session::Echo(echo::EchoSession::new()),
            Proto::Http => Session::Http(http::HttpSession::new()),
        }
    }

    /// Consume what it can of `input`, append responses to `out`; returns bytes consumed.
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>, env: &mut dyn Env) -> usize {
        match self {
            Session::Echo(s) => s.advance(input, out),
            Session::Http(s) => s.advance(input, out, env),
        }
    }

    pub fn status(&self) -> Status {
        match self {
            Session::Echo(s) => s.status(),
            Session::Http(s) => s.status(),
        }
    }

    /// The server is shutting down (RFC 9112 §9.6). HTTP: the request in progress, or the next
    /// one to arrive, is answered with `Connection: close` and is the last. Echo: what has been
    /// received is echoed, then the connection closes. Either way the status then turns to
    /// `CloseAfterFlush`, and the driver flushes, shuts down writing and lingers as after any
    /// final response. A driver decides itself how long an idle connection may wait for that
    /// next request (the keep-alive drain window).
    pub fn drain(&mut self) {
        match self {
            Session::Echo(s) => s.drain(),
            Session::Http(s) => s.drain(),
        }
    }

    /// True while the session has output to produce that does not depend on new input
    /// (a streamed body): the driver calls `advance` again once output has drained.
    pub fn has_pending_output(&self) -> bool {
        match self {
            Session::Echo(_) => false,
            Session::Http(s) => s.has_pending_output(),
        }
    }

    /// Opts this connection in to lent output (see the module docs): the driver promises to
    /// send [`Session::static_output`] after `out`, since `advance` no longer copies it.
    pub fn with_lent_output(mut self) -> Session {
        if let Session::Http(s) = &mut self {
            s.lend_output();
        }
        self
    }

    /// Lent output (the zero-copy extension, see the module docs): the next bytes the session
    /// produces, when they are static, to be sent after everything pending in `out`. Empty when
    /// there are none.
    #[inline]
    pub fn static_output(&self) -> &'static [u8] {
        match self {
            Session::Echo(_) => &[],
            Session::Http(s) => s.static_output(),
        }
    }

    /// The driver sent the first `n` bytes of [`Session::static_output`] (after all of `out`);
    /// the stream goes on after them. Panics if `n` is more than was lent.
    #[inline]
    pub fn static_output_sent(&mut self, n: usize) {
        match self {
            Session::Echo(_) => assert_eq!(n, 0, "echo lends no output"),
            Session::Http(s) => s.static_output_sent(n),
        }
    }

    /// Blocking work the session is paused on: the driver runs it (`BlockingWork::run`), on
    /// this thread or another, and gives the result to [`Session::resume`]. Until then the
    /// session consumes and produces nothing. Echo never asks for any.
    pub fn blocking_work(&self) -> Option<blocking::BlockingWork> {
        match self {
            Session::Echo(_) => None,
            Session::Http(s) => s.blocking_work(),
        }
    }

    /// The blocking work shown by [`Session::blocking_work`] is done: writes its response to
    /// `out` and un-pauses the session. Does nothing if no work was waiting.
    pub fn resume(&mut self, done: blocking::WorkDone, out: &mut Vec<u8>, env: &mut dyn Env) {
        if let Session::Http(s) = self {
            s.resume(done, out, env);
        }
    }

    /// True between requests or while a request head is arriving — the times when the header
    /// timeout, not the idle timeout, applies to buffered input. Echo has no requests: never.
    pub fn awaiting_head(&self) -> bool {
        match self {
            Session::Echo(_) => false,
            Session::Http(s) => s.awaiting_head(),
        }
    }

    /// The header timeout expired with part of a request received: HTTP answers 408 and turns
    /// to `CloseAfterFlush`; echo has nothing to say.
    pub fn request_timeout(&mut self, out: &mut Vec<u8>, env: &dyn Env) {
        if let Session::Http(s) = self {
            s.request_timeout(out, env);
        }
    }

    /// Written before the connection is closed because the server is full (`--max-conns`) or
    /// cannot take it (thread creation failed): HTTP gets a 503, echo gets nothing.
    pub fn refusal(proto: Proto, env: &dyn Env) -> Vec<u8> {
        match proto {
            Proto::Echo => Vec::new(),
            Proto::Http => http::service_unavailable(env),
        }
    }
}
