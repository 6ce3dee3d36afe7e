/*
 * cepoll: the smallest honest HTTP/1.1 keep-alive server on one core — one thread, one
 * level-triggered epoll set, read, answer every complete request head with a fixed 200, write.
 * A reference for `loadgen compare --peers`: what one core can do when the server does nothing
 * else, so that a c10k backend's CPU per request can be read against it.
 *
 * Build: cc -O2 -Wall -o benches/peers/cepoll/cepoll benches/peers/cepoll/cepoll.c
 * Run:   benches/peers/cepoll/cepoll --port 0   (prints "listening on 127.0.0.1:PORT peer=cepoll")
 *        benches/peers/cepoll/cepoll --echo --port 0   (raw TCP echo: every byte read is written
 *        back as it came; for `loadgen echo` and `loadgen hold`, which verify what comes back)
 *
 * `GET /bytes/N` (N decimal digits, at most 1 GiB; the target must start with exactly that) is
 * answered like c10k's route of that name: a Content-Length head, then N bytes of the pattern
 * `abc…xyzabc…` (byte i is 'a' + i % 26), written straight from a static buffer, at most
 * PATTERN_WRITE bytes per write, keep-alive. Later pipelined heads wait until the body is out;
 * nothing is read meanwhile. For benches/throughput.py, the large-response reference.
 *
 * It parses only what it needs (the blank line ending a head; GET has no body) and trusts
 * nothing else: a head longer than its buffer closes the connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384
#define MAX_EVENTS 256

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nServer: cepoll\r\nContent-Type: text/plain\r\n"
    "Content-Length: 13\r\n\r\nHello, World!";

static const char BYTES_HEAD[] =
    "HTTP/1.1 200 OK\r\nServer: cepoll\r\nContent-Type: application/octet-stream\r\n"
    "Content-Length: ";
#define MAX_BYTES (1ULL << 30)
/* Bytes per body write; the pattern has 26 more so a write may start at any phase. */
#define PATTERN_WRITE (256 * 1024)
static char PATTERN[PATTERN_WRITE + 26];

/* Set by --echo: write back what is read instead of answering HTTP. */
static int echo_mode;

struct conn {
    int fd;
    size_t in_len;
    char in[BUF];
    size_t out_len, out_off;
    char out[BUF];
    unsigned long long body_left; /* of a /bytes/N body, written after out */
    unsigned body_phase;          /* offset of the next body byte in the 26-byte pattern */
};

static void drop_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Writes what is pending; 0 when all is out, 1 when the socket is full, -1 on error. */
static int flush_out(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? 1 : -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_len = c->out_off = 0;
    while (c->body_left > 0) {
        size_t want = c->body_left < PATTERN_WRITE ? (size_t)c->body_left : PATTERN_WRITE;
        ssize_t n = write(c->fd, PATTERN + c->body_phase, want);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? 1 : -1;
        }
        c->body_left -= (unsigned long long)n;
        c->body_phase = (unsigned)((c->body_phase + (size_t)n) % 26);
    }
    return 0;
}

/* N of a head starting `GET /bytes/N ` (N: 1 to 10 digits, at most MAX_BYTES), else -1. */
static long long bytes_route(const char *head, size_t len) {
    static const char prefix[] = "GET /bytes/";
    size_t p = sizeof prefix - 1;
    if (len < p || memcmp(head, prefix, p) != 0) return -1;
    unsigned long long n = 0;
    size_t digits = 0;
    while (p < len && head[p] >= '0' && head[p] <= '9' && digits < 11) {
        n = n * 10 + (unsigned long long)(head[p++] - '0');
        digits++;
    }
    if (digits == 0 || digits > 10 || p >= len || head[p] != ' ' || n > MAX_BYTES) return -1;
    return (long long)n;
}

/* Answers every complete head in the input; -1 closes the connection. */
/* A /bytes/N head stops the loop: its body goes out (flush_out) before the next head is
 * answered (answer again, once flush_out returns 0). */
static int answer(struct conn *c) {
    size_t start = 0;
    while (c->body_left == 0) {
        char *end = memmem(c->in + start, c->in_len - start, "\r\n\r\n", 4);
        if (!end) break;
        long long body = bytes_route(c->in + start, (size_t)(end - c->in) - start);
        start = (size_t)(end - c->in) + 4;
        if (c->out_len + sizeof RESPONSE - 1 + 32 > BUF) {
            if (flush_out(c) != 0) return -1; /* a client that does not read is dropped */
        }
        if (body >= 0) {
            memcpy(c->out + c->out_len, BYTES_HEAD, sizeof BYTES_HEAD - 1);
            c->out_len += sizeof BYTES_HEAD - 1;
            c->out_len += (size_t)sprintf(c->out + c->out_len, "%lld\r\n\r\n", body);
            c->body_left = (unsigned long long)body;
            c->body_phase = 0;
        } else {
            memcpy(c->out + c->out_len, RESPONSE, sizeof RESPONSE - 1);
            c->out_len += sizeof RESPONSE - 1;
        }
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    return c->in_len == BUF ? -1 : 0;
}

/* Answers and writes until the input holds no complete head or the socket is full; heads that
 * waited behind a /bytes body are answered once it is out. flush_out's return values. */
static int serve(struct conn *c) {
    for (;;) {
        size_t before = c->in_len;
        if (c->body_left == 0 && answer(c) < 0) return -1;
        int r = flush_out(c);
        if (r != 0 || c->in_len == before) return r;
    }
}

int main(int argc, char **argv) {
    int port = 8080;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--echo") == 0) {
            echo_mode = 1;
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--echo] [--port N]\n", argv[0]);
            return 2;
        }
    }
    for (size_t i = 0; i < sizeof PATTERN; i++) PATTERN[i] = (char)('a' + i % 26);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("cepoll: bind/listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &len);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening on 127.0.0.1:%d peer=cepoll\n", ntohs(addr.sin_port));
    fflush(stdout);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("cepoll: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) { /* the listener: take every waiting connection */
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) { close(fd); continue; }
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) { close(fd); free(nc); }
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                int r = echo_mode ? flush_out(c) : serve(c);
                if (r < 0) { drop_conn(ep, c); continue; }
                if (r == 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                }
                continue;
            }
            /* Echo reads straight into the output: a connection is read only when its output
             * is empty (a full socket switches it to EPOLLOUT alone, below). */
            char *into = echo_mode ? c->out : c->in + c->in_len;
            size_t room = echo_mode ? BUF : BUF - c->in_len;
            ssize_t got = read(c->fd, into, room);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                drop_conn(ep, c);
                continue;
            }
            int r;
            if (echo_mode) {
                c->out_len = (size_t)got;
                r = flush_out(c);
            } else {
                c->in_len += (size_t)got;
                r = serve(c);
            }
            if (r < 0) { drop_conn(ep, c); continue; }
            if (r == 1) { /* the socket is full: wait until it drains, read nothing meanwhile */
                struct epoll_event cev = {.events = EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
            }
        }
    }
}
