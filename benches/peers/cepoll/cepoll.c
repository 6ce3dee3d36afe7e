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

/* Set by --echo: write back what is read instead of answering HTTP. */
static int echo_mode;

struct conn {
    int fd;
    size_t in_len;
    char in[BUF];
    size_t out_len, out_off;
    char out[BUF];
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
    return 0;
}

/* Answers every complete head in the input; -1 closes the connection. */
static int answer(struct conn *c) {
    size_t start = 0;
    for (;;) {
        char *end = memmem(c->in + start, c->in_len - start, "\r\n\r\n", 4);
        if (!end) break;
        start = (size_t)(end - c->in) + 4;
        if (c->out_len + sizeof RESPONSE - 1 > BUF) {
            if (flush_out(c) != 0) return -1; /* a client that does not read is dropped */
        }
        memcpy(c->out + c->out_len, RESPONSE, sizeof RESPONSE - 1);
        c->out_len += sizeof RESPONSE - 1;
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    return c->in_len == BUF ? -1 : 0;
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
                int r = flush_out(c);
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
            if (echo_mode) {
                c->out_len = (size_t)got;
            } else {
                c->in_len += (size_t)got;
                if (answer(c) < 0) { drop_conn(ep, c); continue; }
            }
            int r = flush_out(c);
            if (r < 0) { drop_conn(ep, c); continue; }
            if (r == 1) { /* the socket is full: wait until it drains, read nothing meanwhile */
                struct epoll_event cev = {.events = EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
            }
        }
    }
}
