//! What a request asks for and how it is answered: the method and route of a complete head,
//! and the start of its response (canned answers, `/stats`, streamed `/bytes`, echoed bodies,
//! blocking work handed to the driver).

use super::*;

impl HttpSession {
    /// A complete request head as httparse read it: route it and start the response.
    pub(super) fn on_request(
        &mut self,
        req: &httparse::Request<'_, '_>,
        version: u8,
        out: &mut Vec<u8>,
        env: &mut dyn Env,
    ) {
        let head = SimpleHead {
            len: 0,
            method: req.method.unwrap_or("").as_bytes(),
            target: req.path.unwrap_or("").as_bytes(),
            minor: version,
            fields: Fields::read(req.headers, version),
        };
        self.answer(head, out, env);
    }

    /// A complete request head, however it was read: route it and start the response.
    pub(super) fn answer(&mut self, head: SimpleHead<'_>, out: &mut Vec<u8>, env: &mut dyn Env) {
        env.count_request();
        let version = head.minor;
        let Some(method) = method(head.method) else {
            return self.reject(out, env, response::NOT_IMPLEMENTED, false);
        };
        let head_only = method == Method::Head;
        let f = match head.fields {
            Ok(f) => f,
            Err(c) => return self.reject(out, env, c, head_only),
        };
        let Some(path) = target_path(head.target, method) else {
            return self.reject(out, env, response::BAD_REQUEST, head_only);
        };
        let body = match (f.content_length, f.chunked) {
            (Some(_), true) => return self.reject(out, env, response::BAD_REQUEST, head_only),
            (Some(n), false) => match u32::try_from(n) {
                Ok(n) if n as usize <= MAX_BODY => BodyLen::Length(n),
                _ => return self.reject(out, env, response::CONTENT_TOO_LARGE, head_only),
            },
            (None, true) => BodyLen::Chunked,
            (None, false) => BodyLen::Length(0),
        };
        let expect = f.expect_continue && version == 1;
        let keep = if version == 0 {
            f.keep_alive && !f.close
        } else {
            !f.close
        };
        self.conn = match (keep, version) {
            (false, _) => ConnectionHeader::Close,
            (true, 0) => ConnectionHeader::KeepAlive,
            (true, _) => ConnectionHeader::Default,
        };
        if self.draining {
            self.conn = ConnectionHeader::Close;
        }
        let route = match route(path) {
            Route::Sleep(_) | Route::Work(_) if !env.blocking_routes() => Route::NotFound,
            route => route,
        };

        if route == Route::Echo && method == Method::Post {
            match body {
                BodyLen::Chunked => {
                    if expect {
                        out.extend_from_slice(response::CONTINUE);
                    }
                    self.state = State::Chunked(Box::default());
                }
                BodyLen::Length(n) => {
                    response::head(
                        out,
                        env,
                        b"200 OK",
                        response::OCTETS,
                        n.into(),
                        self.conn,
                        None,
                    );
                    if n > 0 {
                        self.state = State::Body {
                            remaining: n,
                            echo: true,
                        };
                    } else {
                        self.finish();
                    }
                }
            }
            return;
        }

        // Any other route is answered now, before its request body (if any) is read. Skip a
        // Content-Length body; anything else means closing afterwards.
        let streams = matches!(route, Route::Bytes(n) if n > 0) && method == Method::Get;
        let discard = match body {
            BodyLen::Length(0) => 0,
            BodyLen::Length(n) if !expect && !streams => n,
            _ => {
                self.conn = ConnectionHeader::Close;
                0
            }
        };
        let allow_get: Option<&[u8]> = Some(b"GET, HEAD");
        let get = matches!(method, Method::Get | Method::Head);
        match route {
            Route::Echo => response::canned(
                out,
                env,
                response::METHOD_NOT_ALLOWED,
                self.conn,
                Some(b"POST"),
                head_only,
            ),
            Route::NotFound => {
                response::canned(out, env, response::NOT_FOUND, self.conn, None, head_only)
            }
            // `OPTIONS *` (only OPTIONS reaches here): what the server as a whole supports.
            Route::Server => response::head(
                out,
                env,
                b"200 OK",
                response::TEXT,
                0,
                self.conn,
                Some(b"GET, HEAD, POST"),
            ),
            _ if !get => response::canned(
                out,
                env,
                response::METHOD_NOT_ALLOWED,
                self.conn,
                allow_get,
                head_only,
            ),
            Route::Hello if !head_only && self.conn == ConnectionHeader::Default => {
                response::hello(out, env)
            }
            Route::Hello => {
                response::head(
                    out,
                    env,
                    b"200 OK",
                    response::TEXT,
                    HELLO.len() as u64,
                    self.conn,
                    None,
                );
                if !head_only {
                    out.extend_from_slice(HELLO);
                }
            }
            Route::Stats => {
                let json = env.stats_json();
                response::head(
                    out,
                    env,
                    b"200 OK",
                    response::JSON,
                    json.len() as u64,
                    self.conn,
                    None,
                );
                if !head_only {
                    out.extend_from_slice(json.as_bytes());
                }
            }
            Route::Sleep(ms) => {
                return match ms.filter(|&ms| ms <= MAX_SLEEP_MS.into()) {
                    // ms <= MAX_SLEEP_MS, a u32
                    Some(ms) => {
                        self.block(BlockingWork::Sleep { ms: ms as u32 }, discard, head_only)
                    }
                    None => self.reject(out, env, response::BAD_REQUEST, head_only),
                };
            }
            Route::Work(n) => {
                return match n.filter(|&n| n <= MAX_WORK_ITERATIONS.into()) {
                    // n <= MAX_WORK_ITERATIONS, a u32
                    Some(n) => self.block(
                        BlockingWork::Hash {
                            iterations: n as u32,
                        },
                        discard,
                        head_only,
                    ),
                    None => self.reject(out, env, response::BAD_REQUEST, head_only),
                };
            }
            Route::Bytes(n) if n > MAX_BYTES => {
                return self.reject(out, env, response::BAD_REQUEST, head_only)
            }
            Route::Bytes(n) => {
                response::head(out, env, b"200 OK", response::OCTETS, n, self.conn, None);
                if streams {
                    // n <= MAX_BYTES < u32::MAX
                    self.state = State::Bytes {
                        remaining: n as u32,
                        phase: 0,
                    };
                    return;
                }
            }
        }
        self.after_response(discard);
    }
}

pub(super) fn method(m: &[u8]) -> Option<Method> {
    Some(match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"OPTIONS" => Method::Options,
        b"PUT" | b"DELETE" | b"PATCH" | b"TRACE" => Method::Other,
        // CONNECT (RFC 9110 §9.3.6) asks for a tunnel, which only a proxy provides: like an
        // unknown method it is 501, and closes, since what follows its head may already be
        // tunnel data, not a request.
        _ => return None,
    })
}

pub(super) fn route(target: &[u8]) -> Route {
    let path = match find_byte(b'?', target) {
        Some(q) => &target[..q],
        None => target,
    };
    match path {
        b"*" => Route::Server,
        // An absolute-form target with an empty path means "/" (RFC 9112 §3.2.2, §3.3).
        b"" | b"/" | b"/plaintext" => Route::Hello,
        b"/stats" => Route::Stats,
        b"/echo" => Route::Echo,
        _ => {
            if let Some(n) = path.strip_prefix(b"/bytes/") {
                parse_length(n).map_or(Route::NotFound, Route::Bytes)
            } else if let Some(ms) = path.strip_prefix(b"/sleep/") {
                Route::Sleep(parse_length(ms))
            } else if let Some(n) = path.strip_prefix(b"/work/") {
                Route::Work(parse_length(n))
            } else {
                Route::NotFound
            }
        }
    }
}
