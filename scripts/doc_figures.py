#!/usr/bin/env python3
"""Draws the SVG figures of docs/concepts.md into docs/img/ (plain SVG, no external tool needed
to view them; python3's standard library only to redraw them).

    python3 scripts/doc_figures.py          # rewrites docs/img/*.svg

Each figure is a small list of shapes written out by hand below; the helpers only keep the
style (fonts, arrow heads, colours) the same across figures.
"""
import os
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "img")

FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
BLUE, RED, GREEN, GREY, ORANGE = "#1f5fa8", "#b03030", "#2e7d32", "#777", "#c06000"


class Svg:
    def __init__(self, width, height, title):
        self.width, self.height = width, height
        self.parts = [
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' {FONT} font-size='13'>",
            f"<title>{escape(title)}</title>",
            "<defs>"
            + "".join(
                f"<marker id='a{name}' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' "
                f"markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
                f"fill='{colour}'/></marker>"
                for name, colour in (("k", "#000"), ("b", BLUE), ("r", RED), ("g", GREEN),
                                     ("o", ORANGE), ("y", GREY))
            )
            + "</defs>",
            f"<rect width='{width}' height='{height}' fill='white'/>",
        ]

    def text(self, x, y, s, size=13, anchor="start", colour="#000", bold=False, italic=False):
        weight = " font-weight='bold'" if bold else ""
        style = " font-style='italic'" if italic else ""
        self.parts.append(
            f"<text x='{x}' y='{y}' font-size='{size}' text-anchor='{anchor}' fill='{colour}'"
            f"{weight}{style}>{escape(s)}</text>"
        )

    def line(self, x1, y1, x2, y2, colour="#000", arrow=None, dash=False, width=1.5, start_arrow=False):
        marker = f" marker-end='url(#a{arrow})'" if arrow else ""
        if start_arrow and arrow:
            marker += f" marker-start='url(#a{arrow})'"
        dashed = " stroke-dasharray='5,4'" if dash else ""
        self.parts.append(
            f"<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2}' stroke='{colour}' "
            f"stroke-width='{width}'{marker}{dashed}/>"
        )

    def path(self, d, colour="#000", arrow=None, dash=False, width=1.5):
        marker = f" marker-end='url(#a{arrow})'" if arrow else ""
        dashed = " stroke-dasharray='5,4'" if dash else ""
        self.parts.append(
            f"<path d='{d}' fill='none' stroke='{colour}' stroke-width='{width}'{marker}{dashed}/>"
        )

    def rect(self, x, y, w, h, fill="none", stroke="#000", rx=4, dash=False):
        dashed = " stroke-dasharray='5,4'" if dash else ""
        self.parts.append(
            f"<rect x='{x}' y='{y}' width='{w}' height='{h}' rx='{rx}' fill='{fill}' "
            f"stroke='{stroke}' stroke-width='1.3'{dashed}/>"
        )

    def box(self, x, y, w, h, label, fill="#eef3fa", stroke=BLUE, size=12, lines=None):
        self.rect(x, y, w, h, fill=fill, stroke=stroke)
        rows = lines or [label]
        top = y + h / 2 - (len(rows) - 1) * (size + 2) / 2 + size / 3
        for i, row in enumerate(rows):
            self.text(x + w / 2, top + i * (size + 2), row, size=size, anchor="middle")

    def write(self, name):
        self.parts.append("</svg>")
        with open(os.path.join(OUT, name), "w") as f:
            f.write("\n".join(self.parts) + "\n")


# ---------------------------------------------------------------------------------------------
# Stevens' five models, as timelines: application on the left, kernel on the right, time down.

APP_X, KERNEL_X = 190, 470


def timeline(name, title, subtitle, calls, phases, note):
    """calls: (y_from, y_to, label, colour, direction) arrows between the two columns
    ('k' app→kernel, 'a' kernel→app); phases: (y_from, y_to, label, colour) brackets on the
    kernel side; note: text under the figure."""
    height = max(y for c in calls for y in c[:2]) + 80
    svg = Svg(720, height, title)
    svg.text(20, 26, title, size=16, bold=True)
    svg.text(20, 46, subtitle, size=12, colour=GREY)
    svg.text(APP_X, 74, "application (c10k)", anchor="middle", bold=True)
    svg.text(KERNEL_X, 74, "kernel", anchor="middle", bold=True)
    svg.line(APP_X, 82, APP_X, height - 50, colour=GREY, width=1)
    svg.line(KERNEL_X, 82, KERNEL_X, height - 50, colour=GREY, width=1)
    svg.line(20, 90, 20, height - 54, colour=GREY, arrow="y", width=1)
    svg.text(26, height - 58, "time", size=11, colour=GREY)
    for y1, y2, label, colour, direction in calls:
        key = {"#000": "k", BLUE: "b", RED: "r", GREEN: "g", ORANGE: "o"}[colour]
        if direction == "k":
            svg.line(APP_X, y1, KERNEL_X, y2, colour=colour, arrow=key)
            svg.text(APP_X - 8, y1 + 4, label, anchor="end", colour=colour, size=12)
        else:
            svg.line(KERNEL_X, y1, APP_X, y2, colour=colour, arrow=key)
            svg.text(APP_X - 8, y2 + 4, label, anchor="end", colour=colour, size=12)
    for y1, y2, label, colour in phases:
        svg.line(KERNEL_X + 12, y1, KERNEL_X + 12, y2, colour=colour, width=3)
        svg.line(KERNEL_X + 8, y1, KERNEL_X + 16, y1, colour=colour, width=2)
        svg.line(KERNEL_X + 8, y2, KERNEL_X + 16, y2, colour=colour, width=2)
        for i, row in enumerate(label.split("\n")):
            svg.text(KERNEL_X + 24, (y1 + y2) / 2 + 4 + i * 15 - (label.count("\n") * 7), row,
                     size=12, colour=colour)
    for i, row in enumerate(note.split("\n")):
        svg.text(20, height - 28 + i * 15, row, size=11, colour=GREY)
    svg.write(name)


def five_models():
    wait, copy = "phase 1: wait for data", "phase 2: copy data\nto the user buffer"
    timeline(
        "model-1-blocking.svg",
        "1. Blocking I/O — backend threads",
        "one thread per connection; the blocking read() is the wait",
        [(110, 112, "read(fd, buf, 4096)", "#000", "k"),
         (300, 302, "returns n bytes", "#000", "a"),
         (316, 330, "send(fd, response)", "#000", "k")],
        [(114, 240, wait + "\n(thread asleep on the\nsocket's wait queue)", RED),
         (244, 298, copy, GREEN)],
        "The thread is blocked through both phases. Synchronous I/O. Cost: a thread (stack) per\n"
        "connection and a context switch per wake-up.",
    )
    timeline(
        "model-2-nonblocking.svg",
        "2. Non-blocking I/O — backend busy-poll",
        "O_NONBLOCK sockets, every connection tried in turn, no wait syscall",
        [(110, 112, "read(fd) ", "#000", "k"), (120, 132, "EAGAIN", RED, "a"),
         (150, 152, "read(fd) (next pass)", "#000", "k"), (160, 172, "EAGAIN", RED, "a"),
         (190, 192, "read(fd) (next pass)", "#000", "k"), (200, 212, "EAGAIN", RED, "a"),
         (240, 242, "read(fd)", "#000", "k"),
         (300, 302, "returns n bytes", "#000", "a")],
        [(112, 232, wait + "\n(the process spins;\nno data yet)", RED), (244, 298, copy, GREEN)],
        "Phase 1 is paid in CPU: a read per connection per pass, ready or not. Phase 2 still blocks\n"
        "the caller (the copy happens inside read()). Synchronous I/O.",
    )
    timeline(
        "model-3-multiplexing.svg",
        "3. I/O multiplexing — backends select, poll, epoll (the reactor)",
        "one wait for many descriptors, then a non-blocking read of the ready one",
        [(110, 112, "epoll_wait(epfd, events)", "#000", "k"),
         (230, 232, "returns {token, EPOLLIN}", BLUE, "a"),
         (246, 248, "read(fd, buf, 64 KiB)", "#000", "k"),
         (312, 314, "returns n bytes", "#000", "a")],
        [(114, 228, wait + "\n(for every registered\ndescriptor at once)", RED),
         (250, 310, copy, GREEN)],
        "The process blocks in the wait (phase 1, shared by all connections) and again in read()\n"
        "(phase 2). Two syscalls where blocking I/O had one; the win is one thread for all. Synchronous.",
    )
    timeline(
        "model-4-signal.svg",
        "4. Signal-driven I/O — backend sigio",
        "fcntl(F_SETSIG, O_ASYNC) once; the kernel queues a realtime signal at each change",
        [(100, 102, "fcntl(F_SETSIG / F_SETOWN_EX / O_ASYNC)", "#000", "k"),
         (112, 122, "returns", "#000", "a"),
         (150, 152, "sigtimedwait(set)", "#000", "k"),
         (232, 234, "signal: si_fd, si_band=POLLIN", ORANGE, "a"),
         (248, 250, "read(fd, buf, 64 KiB)", "#000", "k"),
         (312, 314, "returns n bytes", "#000", "a")],
        [(124, 228, wait + "\n(a program could run;\nc10k waits in sigtimedwait)", RED),
         (252, 310, copy, GREEN)],
        "The kernel notifies readiness (phase 1 done); the read still copies synchronously. When the\n"
        "realtime queue is full the kernel sends plain SIGIO instead: readiness is lost (the overflow figure).",
    )
    timeline(
        "model-5-async.svg",
        "5. Asynchronous I/O — backend uring (io_uring)",
        "submit the operation, get its completion; the kernel does both phases",
        [(110, 112, "io_uring_enter: submit RECV", "#000", "k"),
         (124, 134, "returns at once", "#000", "a"),
         (298, 300, "io_uring_enter: reap", "#000", "k"),
         (306, 316, "CQE: n bytes in buffer #id", BLUE, "a")],
        [(136, 230, wait + "\n(the app runs other\nconnections meanwhile)", RED),
         (234, 292, copy + "\n(into a provided buffer)", GREEN)],
        "The application is not blocked in either phase for this operation: POSIX's definition of\n"
        "asynchronous I/O. One enter submits and reaps many operations at once.",
    )


# ---------------------------------------------------------------------------------------------
# Mechanism pictures.


def epoll_oready():
    svg = Svg(900, 430, "select/poll rescan every descriptor; epoll keeps a ready list")
    svg.text(20, 26, "Why select and poll are O(n) per wait and epoll is O(ready)", size=16, bold=True)
    # Left: select/poll.
    svg.text(30, 62, "select(2) / poll(2): every call", bold=True)
    svg.box(30, 76, 170, 40, "", lines=["user: fd set / pollfd[n]", "(built every call)"])
    svg.line(200, 96, 250, 96, arrow="k")
    svg.text(206, 88, "copy in", size=11)
    svg.box(255, 70, 160, 210, "", fill="#fbeeee", stroke=RED,
            lines=["kernel loops over", "all n descriptors:", "", "for fd in set:", "  f_op->poll(fd)",
                   "  (and, if none ready,", "  join fd's wait", "  queue, sleep,", "  wake, loop again)"])
    svg.line(255, 260, 200, 260, arrow="k")
    svg.text(30, 256, "copy out n bits / n entries;", size=11)
    svg.text(30, 272, "the program scans them all", size=11)
    svg.text(30, 310, "Cost per wait: O(n) copies + O(n) poll calls,", size=12, colour=RED)
    svg.text(30, 326, "idle connections included.", size=12, colour=RED)
    # Right: epoll.
    x = 470
    svg.text(x, 62, "epoll(7): registered once, reported when ready", bold=True)
    svg.box(x, 76, 190, 44, "", lines=["interest list (red-black", "tree of epitems)"])
    svg.text(x + 200, 92, "epoll_ctl(ADD) once:", size=11)
    svg.text(x + 200, 106, "hooks ep_poll_callback", size=11)
    svg.text(x + 200, 120, "into the socket's wait queue", size=11)
    for i in range(4):
        y = 150 + i * 34
        svg.box(x, y, 120, 26, f"socket {i + 3}", fill="#f6f6f6", stroke=GREY)
        svg.text(x + 126, y + 17, "wait queue → callback", size=10, colour=GREY)
    svg.line(x + 60, 148, x + 60, 122, colour=GREY, dash=True, width=1)
    svg.text(x - 48, 190, "packet", size=11, colour=ORANGE)
    svg.text(x - 48, 218, "arrives", size=11, colour=ORANGE)
    svg.line(x - 48, 197, x - 2, 197, colour=ORANGE, arrow="o")
    svg.path(f"M{x + 250},190 C{x + 320},200 {x + 330},270 {x + 300},300", colour=ORANGE, arrow="o")
    svg.text(x + 322, 240, "callback appends", size=11, colour=ORANGE)
    svg.text(x + 322, 254, "the epitem", size=11, colour=ORANGE)
    svg.box(x + 140, 300, 230, 36, "", fill="#eef7ee", stroke=GREEN,
            lines=["ready list (rdllist): only the", "descriptors that became ready"])
    svg.line(x + 140, 318, x + 60, 360, colour=GREEN, arrow="g")
    svg.box(x - 10, 362, 160, 36, "", lines=["epoll_wait: copy out", "the ready list only"])
    svg.text(x, 418, "Cost per wait: O(ready). Idle sockets cost nothing until they fire.", size=12,
             colour=GREEN)
    svg.text(30, 360, "c10k's counter examined_per_req shows it", size=12)
    svg.text(30, 376, "(docs/results.md): select and poll look at every", size=12)
    svg.text(30, 392, "registered descriptor, epoll at the ready ones.", size=12)
    svg.write("epoll-oready.svg")


def lt_et():
    svg = Svg(900, 470, "Level- and edge-triggered readiness, with the FIN edge")
    svg.text(20, 26, "Level- vs edge-triggered epoll, and the FIN that arrives with the data",
             size=16, bold=True)
    x0, x1 = 170, 860
    # Socket state band.
    svg.text(20, 80, "receive buffer", bold=True)
    svg.line(x0, 96, x1, 96, colour=GREY, width=1)
    segments = [(170, 250, "empty", "#f6f6f6"), (250, 400, "request bytes", "#eef3fa"),
                (400, 480, "empty", "#f6f6f6"), (480, 640, "bytes + FIN", "#fdf1e3"),
                (640, 860, "FIN only (read → 0)", "#fbeeee")]
    for a, b, label, fill in segments:
        svg.rect(a, 66, b - a, 24, fill=fill, stroke=GREY, rx=0)
        svg.text((a + b) / 2, 83, label, size=11, anchor="middle")
    for x, label, colour in ((250, "data arrives", ORANGE), (480, "data + FIN arrive together", ORANGE)):
        svg.line(x, 100, x, 430, colour=colour, dash=True, width=1)
        svg.text(x + 4, 114, label, size=11, colour=colour)
    svg.line(400, 100, 400, 430, colour=GREY, dash=True, width=1)
    svg.text(404, 128, "app read it all", size=11, colour=GREY)
    # LT row.
    svg.text(20, 170, "level-triggered", bold=True)
    svg.text(20, 186, "reported while the", size=11)
    svg.text(20, 200, "condition holds", size=11)
    for x in (262, 300, 340, 380):
        svg.line(x, 190, x, 160, colour=BLUE, arrow="b")
    for x in (492, 540, 600, 660, 720, 780, 830):
        svg.line(x, 190, x, 160, colour=BLUE, arrow="b")
    svg.text(300, 210, "every wait until drained", size=11, colour=BLUE)
    svg.text(560, 210, "EPOLLIN|EPOLLRDHUP at every wait until closed", size=11, colour=BLUE)
    # ET row.
    svg.text(20, 270, "edge-triggered", bold=True)
    svg.text(20, 286, "reported once per", size=11)
    svg.text(20, 300, "arrival", size=11)
    svg.line(262, 290, 262, 260, colour=RED, arrow="r")
    svg.line(492, 290, 492, 260, colour=RED, arrow="r")
    svg.text(268, 275, "one event", size=11, colour=RED)
    svg.text(498, 275, "ONE event: EPOLLIN | EPOLLRDHUP", size=11, colour=RED)
    svg.text(498, 304, "no further edge will come for this FIN", size=11, colour=RED)
    # Reads.
    svg.text(20, 360, "what the loop", bold=True)
    svg.text(20, 376, "must do (ET)", bold=True)
    svg.box(256, 340, 150, 44, "", fill="#eef7ee", stroke=GREEN,
            lines=["read → short (n<want):", "drained, stop"])
    svg.box(496, 330, 350, 64, "", fill="#eef7ee", stroke=GREEN,
            lines=["read → short: data answered; then", "RDHUP was in the event, so read again → 0:",
                   "EOF seen, close after the answer"])
    svg.text(170, 420, "Without RDHUP (or ignoring it), a loop that stops at the short read never sees the EOF: the",
             size=11, colour=GREY)
    svg.text(170, 436, "connection waits forever. Reading to EAGAIN always (c10k's reactor) is safe but costs a read per",
             size=11, colour=GREY)
    svg.text(170, 452, "request; stopping at a short read unless RDHUP (c10k's coro) is as safe and costs none.",
             size=11, colour=GREY)
    svg.write("lt-et-fin.svg")


def uring_rings():
    svg = Svg(900, 450, "io_uring submission and completion rings, and the provided-buffer ring")
    svg.text(20, 26, "io_uring as c10k uses it: SQ, CQ and the provided-buffer ring", size=16, bold=True)
    svg.text(120, 60, "application (uring driver)", anchor="middle", bold=True)
    svg.text(700, 60, "kernel", anchor="middle", bold=True)
    svg.line(400, 70, 400, 430, colour=GREY, dash=True, width=1)
    svg.text(404, 84, "shared memory (mmap)", size=11, colour=GREY)

    def ring(x, y, label, cells, fill, stroke, filled):
        svg.text(x, y - 8, label, bold=True, size=12)
        for i in range(cells):
            svg.rect(x + i * 34, y, 34, 30, fill=fill if i in filled else "#fff", stroke=stroke, rx=0)

    ring(240, 110, "SQ ring (4,096 entries)", 8, "#eef3fa", BLUE, {2, 3, 4})
    svg.text(240 + 2 * 34 + 4, 160, "head", size=11, colour=BLUE)
    svg.text(240 + 5 * 34 + 4, 160, "tail", size=11, colour=BLUE)
    svg.line(240 + 2 * 34 + 17, 150, 240 + 2 * 34 + 17, 142, colour=BLUE, arrow="b")
    svg.line(240 + 5 * 34 + 17, 150, 240 + 5 * 34 + 17, 142, colour=BLUE, arrow="b")
    svg.box(20, 100, 190, 60, "", lines=["1. write an SQE: RECV fd,", "BUFFER_SELECT group 0,",
                                          "user_data = kind|gen|slot"])
    svg.line(210, 125, 238, 125, colour=BLUE, arrow="b")
    svg.box(20, 180, 190, 40, "", lines=["2. bump SQ tail;", "io_uring_enter(submit, wait)"])
    svg.box(600, 100, 260, 60, "", fill="#fbeeee", stroke=RED,
            lines=["3. kernel takes SQEs from head;", "RECV waits for data (no buffer", "held while idle)"])
    svg.line(514, 125, 598, 125, colour=RED, arrow="r")

    ring(240, 260, "buffer ring (4,096 × 4 KiB = 16 MiB)", 8, "#eef7ee", GREEN, {0, 1, 5, 6, 7})
    svg.box(600, 240, 260, 60, "", fill="#fbeeee", stroke=RED,
            lines=["4. data arrives: kernel picks", "a buffer from the ring, copies", "the bytes into it"])
    svg.line(598, 275, 514, 275, colour=GREEN, arrow="g")
    svg.box(20, 250, 190, 60, "", lines=["7. copy the bytes into the", "connection's input, hand the",
                                          "buffer back (tail += 1)"])
    svg.line(210, 280, 238, 280, colour=GREEN, arrow="g")

    ring(240, 370, "CQ ring (16,384 entries)", 8, "#fdf1e3", ORANGE, {1, 2})
    svg.box(600, 350, 260, 60, "", fill="#fbeeee", stroke=RED,
            lines=["5. post a CQE: res = n bytes,", "flags = buffer id,", "user_data as submitted"])
    svg.line(598, 385, 514, 385, colour=ORANGE, arrow="o")
    svg.box(20, 360, 190, 60, "", lines=["6. reap CQEs (same enter,", "or the next); match",
                                          "user_data to the slot"])
    svg.line(238, 390, 212, 390, colour=ORANGE, arrow="o")
    svg.text(20, 444, "Empty buffer ring: the RECV completes with -ENOBUFS and is re-armed after the batch.",
             size=11, colour=GREY)
    svg.write("uring-rings.svg")


def sigio_overflow():
    svg = Svg(900, 420, "The sigio backend's overflow state machine")
    svg.text(20, 26, "sigio: signals, suspects, and recovery from a full realtime queue", size=16, bold=True)
    svg.box(60, 80, 230, 90, "", fill="#eef7ee", stroke=GREEN,
            lines=["NORMAL", "sigtimedwait → one realtime", "signal per state change", "(si_fd, si_band → event)"])
    svg.box(600, 80, 250, 90, "", fill="#fbeeee", stroke=RED,
            lines=["OVERFLOW", "drain the realtime queue (stale);", "poll(2) EVERY registered fd",
                   "(counted in overflow_scans)"])
    svg.box(330, 270, 260, 90, "", fill="#fdf1e3", stroke=ORANGE,
            lines=["RECOVERING", "ready ones stay suspects;", "zero-timeout poll(2) of the", "suspects at each wait"])
    svg.line(290, 110, 598, 110, colour=RED, arrow="r")
    svg.text(300, 100, "plain SIGIO arrives: RLIMIT_SIGPENDING full,", size=11, colour=RED)
    svg.text(300, 128, "a realtime signal was dropped (readiness lost)", size=11, colour=RED)
    svg.line(700, 170, 560, 268, colour=ORANGE, arrow="o")
    svg.text(650, 230, "scan done", size=11, colour=ORANGE)
    svg.line(380, 268, 200, 172, colour=GREEN, arrow="g")
    svg.text(100, 230, "every suspect found not ready:", size=11, colour=GREEN)
    svg.text(100, 244, "a later change raises a signal again", size=11, colour=GREEN)
    svg.path("M590,300 C700,300 760,220 740,172", colour=RED, arrow="r")
    svg.text(690, 300, "SIGIO again", size=11, colour=RED)
    svg.path("M60,150 C0,180 0,60 80,78", colour=GREY, arrow="y")
    svg.text(8, 62, "new connection or interest added:", size=11, colour=GREY)
    svg.text(8, 196, "becomes a suspect (checked by poll)", size=11, colour=GREY)
    svg.text(20, 395, "A signal reports a change, never a state: whatever the queue may not have reported is a",
             size=11, colour=GREY)
    svg.text(20, 410, "suspect until poll(2) finds it quiet. tests/sigio_overflow.rs forces the loop round with --sigio-queue-limit 64.",
             size=11, colour=GREY)
    svg.write("sigio-overflow.svg")


def coro_asyncio():
    svg = Svg(900, 430, "The coro executor mapped to asyncio")
    svg.text(20, 26, "coro's executor next to Python's asyncio: the same reactor, the same roles",
             size=16, bold=True)
    svg.text(230, 60, "c10k coro (src/driver/coro/)", anchor="middle", bold=True)
    svg.text(680, 60, "asyncio", anchor="middle", bold=True)
    rows = [
        ("Executor::run loop: poll ready tasks,", "then one epoll_wait, then timers",
         "event loop: run_forever → _run_once:", "run ready callbacks, selector.select()"),
        ("task: Pin<Box<dyn Future>> in a slab,", "one per connection",
         "asyncio.Task wrapping the handler's", "coroutine"),
        ("Waker (Arc<TaskWaker>): sets queued,", "pushes the task id on the ready queue",
         "Future done-callback → loop.call_soon", "(Task.__wakeup → __step)"),
        ("ready queue (each task at most once)", "", "loop._ready (deque of Handles)", ""),
        ("Registration: readiness flags + reader /", "writer wakers per fd (io.rs, ET epoll)",
         "loop.add_reader(fd) / sock_recv:", "a Future resolved when readable"),
        ("Alarm / timer heap (deadline, waker)", "", "loop.call_at → _scheduled heap", ""),
    ]
    for i, (a1, a2, b1, b2) in enumerate(rows):
        y = 76 + i * 56
        svg.box(40, y, 380, 46, "", lines=[a1, a2] if a2 else [a1])
        svg.box(490, y, 380, 46, "", fill="#fdf1e3", stroke=ORANGE, lines=[b1, b2] if b2 else [b1])
        svg.line(424, y + 23, 486, y + 23, colour=GREY, arrow="y", start_arrow=True)
    svg.text(40, 425 - 4, "Both wait for readiness (epoll / selectors) and then read: a reactor plus coroutines,"
             " synchronous I/O underneath.", size=11, colour=GREY)
    svg.write("coro-asyncio.svg")


def main():
    os.makedirs(OUT, exist_ok=True)
    five_models()
    epoll_oready()
    lt_et()
    uring_rings()
    sigio_overflow()
    coro_asyncio()


if __name__ == "__main__":
    main()
