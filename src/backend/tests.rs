//! One suite over every readiness backend: a new backend is tested by adding it to `ALL`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::*;

type NewPoller = fn() -> io::Result<Box<dyn Poller>>;

const ALL: &[(&str, NewPoller)] = &[
    ("select", || Ok(Box::new(select::Select::new()))),
    ("poll", || Ok(Box::new(poll::Poll::new()))),
    ("epoll", || Ok(Box::new(epoll::Epoll::new(false)?))),
    ("epoll-edge", || Ok(Box::new(epoll::Epoll::new(true)?))),
    ("sigio", || Ok(Box::new(sigio::Sigio::new()?))),
    ("busy-poll", || Ok(Box::new(busy_poll::BusyPoll::new()?))),
];

/// The one documented exception: busy-poll reports every registered descriptor as ready for its
/// interest on every pass, by design (the reactor's non-blocking calls find out what really is).
/// Where a test checks that *only* ready descriptors are reported, busy-poll is held instead to
/// reporting exactly the registered ones, with their current token and interest.
fn reports_everything(poller: &dyn Poller) -> bool {
    poller.name() == "busy-poll"
}

const SHORT: Option<Duration> = Some(Duration::from_millis(200));

fn pollers() -> impl Iterator<Item = (String, Box<dyn Poller>)> {
    ALL.iter()
        .map(|&(label, new)| (label.to_string(), new().expect("create poller")))
}

fn wait(poller: &mut dyn Poller, timeout: Option<Duration>) -> Vec<Event> {
    let mut events = Vec::new();
    poller.poll(&mut events, timeout).expect("poll");
    events
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

#[test]
fn reports_readable_only_after_data_arrives() {
    for (name, mut poller) in pollers() {
        let (a, mut b) = pair();
        poller.register(a.as_raw_fd(), 7, Interest::READ).unwrap();
        let quiet = wait(&mut *poller, Some(Duration::ZERO));
        if reports_everything(&*poller) {
            assert_eq!(quiet.len(), 1, "{name}: {quiet:?}");
        } else {
            assert!(
                quiet.iter().all(|e| !e.readable),
                "{name}: readable before any data: {quiet:?}"
            );
        }
        b.write_all(b"x").unwrap();
        let events = wait(&mut *poller, SHORT);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0].token, 7, "{name}");
        assert!(
            events[0].readable && !events[0].writable,
            "{name}: {events:?}"
        );
    }
}

#[test]
fn reports_writable_when_asked() {
    for (name, mut poller) in pollers() {
        let (a, _b) = pair();
        poller.register(a.as_raw_fd(), 3, Interest::WRITE).unwrap();
        let events = wait(&mut *poller, SHORT);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert!(
            events[0].writable && !events[0].readable,
            "{name}: {events:?}"
        );
    }
}

#[test]
fn deregistered_descriptors_are_silent() {
    for (name, mut poller) in pollers() {
        let (a, mut b) = pair();
        poller.register(a.as_raw_fd(), 1, Interest::BOTH).unwrap();
        poller.deregister(a.as_raw_fd()).unwrap();
        b.write_all(b"x").unwrap();
        let events = wait(&mut *poller, Some(Duration::from_millis(20)));
        assert!(events.is_empty(), "{name}: {events:?}");
        assert!(
            poller.deregister(a.as_raw_fd()).is_err(),
            "{name}: double deregister accepted"
        );
    }
}

#[test]
fn reregister_changes_token_and_interest() {
    for (name, mut poller) in pollers() {
        let (a, mut b) = pair();
        poller.register(a.as_raw_fd(), 1, Interest::WRITE).unwrap();
        poller.reregister(a.as_raw_fd(), 2, Interest::READ).unwrap();
        let events = wait(&mut *poller, Some(Duration::from_millis(20)));
        if reports_everything(&*poller) {
            assert_eq!(
                events,
                [Event {
                    token: 2,
                    readable: true,
                    writable: false,
                    hangup: false
                }],
                "{name}"
            );
            continue;
        }
        assert!(
            events.is_empty(),
            "{name}: still writable-registered: {events:?}"
        );
        b.write_all(b"x").unwrap();
        let events = wait(&mut *poller, SHORT);
        assert_eq!(
            events.iter().map(|e| e.token).collect::<Vec<_>>(),
            [2],
            "{name}"
        );
    }
}

#[test]
fn adding_an_interest_reports_readiness_that_came_before() {
    // Signal-driven backends hear of a change only while the interest is on: they must check.
    for (name, mut poller) in pollers() {
        let (a, mut b) = pair();
        poller.register(a.as_raw_fd(), 6, Interest::NONE).unwrap();
        let events = wait(&mut *poller, Some(Duration::from_millis(20)));
        assert!(events.is_empty(), "{name}: no interest, yet {events:?}");
        b.write_all(b"early").unwrap();
        let events = wait(&mut *poller, Some(Duration::from_millis(20)));
        assert!(events.is_empty(), "{name}: no interest, yet {events:?}");
        poller.reregister(a.as_raw_fd(), 8, Interest::READ).unwrap();
        let events = wait(&mut *poller, SHORT);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert!(
            events[0].token == 8 && events[0].readable,
            "{name}: {events:?}"
        );
    }
}

#[test]
fn peer_close_is_reported_as_readable_hangup() {
    for (name, mut poller) in pollers() {
        let (a, b) = pair();
        poller.register(a.as_raw_fd(), 9, Interest::READ).unwrap();
        drop(b);
        let events = wait(&mut *poller, SHORT);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert!(events[0].readable, "{name}: {events:?}");
    }
}

#[test]
fn many_descriptors_report_only_the_ready_ones() {
    for (name, mut poller) in pollers() {
        let pairs: Vec<_> = (0..64).map(|_| pair()).collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            poller
                .register(a.as_raw_fd(), i as Token, Interest::READ)
                .unwrap();
        }
        for i in [5usize, 17, 63] {
            (&pairs[i].1).write_all(b"y").unwrap();
        }
        let mut tokens: Vec<Token> = wait(&mut *poller, SHORT).iter().map(|e| e.token).collect();
        tokens.sort();
        if reports_everything(&*poller) {
            assert_eq!(tokens, (0..64).collect::<Vec<Token>>(), "{name}");
            poller.deregister(pairs[5].0.as_raw_fd()).unwrap();
            let mut tokens: Vec<Token> =
                wait(&mut *poller, SHORT).iter().map(|e| e.token).collect();
            tokens.sort();
            let expected: Vec<Token> = (0..64).filter(|&t| t != 5).collect();
            assert_eq!(tokens, expected, "{name}");
            continue;
        }
        assert_eq!(tokens, [5, 17, 63], "{name}");
        // Deregistering from the middle keeps the others intact (poll's swap_remove).
        poller.deregister(pairs[5].0.as_raw_fd()).unwrap();
        let mut tokens: Vec<Token> = wait(&mut *poller, SHORT).iter().map(|e| e.token).collect();
        tokens.sort();
        let expected: &[Token] = if name.ends_with("-edge") {
            &[]
        } else {
            &[17, 63]
        };
        assert_eq!(tokens, expected, "{name}");
    }
}

#[test]
fn level_triggered_repeats_and_edge_triggered_does_not() {
    for (name, mut poller) in pollers() {
        let (mut a, mut b) = pair();
        poller.register(a.as_raw_fd(), 4, Interest::READ).unwrap();
        b.write_all(b"abc").unwrap();
        assert_eq!(wait(&mut *poller, SHORT).len(), 1, "{name}");
        let again = wait(&mut *poller, Some(Duration::from_millis(20)));
        if poller.features().edge_triggered {
            assert!(again.is_empty(), "{name}: edge reported twice: {again:?}");
        } else {
            assert_eq!(again.len(), 1, "{name}: level-triggered must repeat");
        }
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).unwrap(), 3);
    }
}

#[test]
fn descriptors_above_fd_setsize_work() {
    // glibc's FD_SET aborts for fd >= 1024; select must use its own bitmap.
    let limit = crate::sys::raise_nofile_limit().unwrap_or(1024);
    if limit < 1600 {
        eprintln!("skipped: RLIMIT_NOFILE {limit} is below 1600");
        return;
    }
    for (name, mut poller) in pollers() {
        let (a, mut b) = pair();
        let high =
            nix::fcntl::fcntl(a.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1500)).unwrap();
        assert!(high >= 1500);
        poller.register(high, 1500, Interest::READ).unwrap();
        b.write_all(b"z").unwrap();
        let events = wait(&mut *poller, SHORT);
        assert_eq!(
            events.iter().map(|e| e.token).collect::<Vec<_>>(),
            [1500],
            "{name}"
        );
        poller.deregister(high).unwrap();
        nix::unistd::close(high).unwrap();
    }
}

#[test]
fn counts_waits() {
    for (name, mut poller) in pollers() {
        for _ in 0..3 {
            wait(&mut *poller, Some(Duration::ZERO));
        }
        assert_eq!(poller.counters().waits, 3, "{name}");
    }
}
