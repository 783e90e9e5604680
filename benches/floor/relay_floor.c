/*
 * relay_floor: the physical floor for a reverse proxy: an L4 byte relay.
 *
 * Usage: relay_floor PORT UPSTREAM_PORT WORKERS
 *
 * For every client accepted on 127.0.0.1:PORT it opens one connection of its own to
 * 127.0.0.1:UPSTREAM_PORT and copies bytes both ways until either side ends; it does no HTTP
 * at all. A proxy can do no less kernel work for a request than this: read it from the
 * client, write it to the upstream, read the answer, write it to the client. Anything a real
 * proxy costs beyond this floor is its own work (parsing, routing, pooling, logging).
 *
 * The parent forks WORKERS processes, each with its own SO_REUSEPORT listener and one
 * level-triggered epoll loop: each read happens only when the kernel says there is data, so
 * none is repeated just to see EAGAIN. Each direction has a 16 KiB buffer; after a partial
 * write the relay stops reading the side it came from until the rest is written
 * (backpressure). SIGTERM or SIGINT to the parent stops them all.
 * Build: cc -O2 -Wall -Wextra -o relay_floor relay_floor.c (floor_common.h beside it)
 */
#define _GNU_SOURCE
#include "floor_common.h"

#define BUF_SIZE 16384

struct pair;

/* One socket of a pair, with the bytes read from it that its peer has not taken yet. */
struct side {
    int fd;
    uint32_t events;        /* what epoll watches now */
    size_t off, len;        /* buf[off, len) is still to be written to the peer */
    struct side *peer;
    struct pair *pair;
    char buf[BUF_SIZE];
};

struct pair {
    struct side client, upstream;
    int connecting;         /* the upstream connect is still in progress */
    int closed;             /* closed in this batch of events; freed after it */
    struct pair *next_closed;
};

static int epfd, port, upstream_port;
static struct pair *closed_pairs;

/* Closes both sockets at once. The pair is freed only after the current batch of events,
 * since that batch may still hold an event for its other socket. */
static void pair_close(struct pair *p)
{
    if (p->closed)
        return;
    close(p->client.fd);
    close(p->upstream.fd);
    p->closed = 1;
    p->next_closed = closed_pairs;
    closed_pairs = p;
}

/* Writes what FROM has buffered to its peer; false on a write error. */
static int flush(struct side *from)
{
    if (from->off == from->len || from->pair->connecting)
        return 1;
    ssize_t n = send(from->peer->fd, from->buf + from->off, from->len - from->off, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN;
    from->off += n;
    if (from->off == from->len)
        from->off = from->len = 0;
    return 1;
}

/* Epoll follows the buffers: read a side only while its buffer is empty, wait to write to
 * it only while its peer's bytes are pending or its connect is in progress. An epoll_ctl is
 * made only when that changes, which in a request/response exchange is never. */
static void watch(struct side *s)
{
    int connecting = s == &s->pair->upstream && s->pair->connecting;
    uint32_t events = 0;
    if (s->len == 0 && !connecting)
        events |= EPOLLIN;
    if (s->peer->len > 0 || connecting)
        events |= EPOLLOUT;
    if (events == s->events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = s};
    epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
    s->events = events;
}

static void on_event(struct side *s, uint32_t events)
{
    struct pair *p = s->pair;
    if (p->closed)
        return;
    if (events & (EPOLLERR | EPOLLHUP)) {
        pair_close(p);
        return;
    }
    if ((events & EPOLLOUT) && p->connecting) {     /* the upstream connect has finished */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            pair_close(p);
            return;
        }
        p->connecting = 0;
    }
    if ((events & EPOLLOUT) && !flush(s->peer)) {
        pair_close(p);
        return;
    }
    if (events & EPOLLIN) {
        ssize_t n = read(s->fd, s->buf, BUF_SIZE);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            pair_close(p);          /* end of one side: end of both */
            return;
        }
        if (n > 0) {
            s->len = n;
            if (!flush(s)) {
                pair_close(p);
                return;
            }
        }
    }
    watch(&p->client);
    watch(&p->upstream);
}

static int add(struct side *s, struct pair *p, struct side *peer, int fd, uint32_t events)
{
    s->fd = fd;
    s->events = events;
    s->off = s->len = 0;
    s->peer = peer;
    s->pair = p;
    struct epoll_event ev = {.events = events, .data.ptr = s};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* A new client: its own upstream connection, connected without blocking. Bytes the client
 * sends before that connect is done wait in its buffer. */
static void start_pair(int cfd)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(upstream_port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1, rc = -1, ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct pair *p = malloc(sizeof *p);
    if (ufd >= 0 && p && setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
        rc = connect(ufd, (struct sockaddr *)&addr, sizeof addr);
    if (rc < 0 && errno != EINPROGRESS) {
        close(cfd);
        if (ufd >= 0)
            close(ufd);
        free(p);
        return;
    }
    p->connecting = rc < 0;
    p->closed = 0;
    p->client.fd = cfd;
    p->upstream.fd = ufd;
    if (add(&p->client, p, &p->upstream, cfd, EPOLLIN) < 0 ||
        add(&p->upstream, p, &p->client, ufd, p->connecting ? EPOLLOUT : EPOLLIN) < 0)
        pair_close(p);
}

static void worker(void)
{
    int lfd;
    struct epoll_event events[256];
    epfd = worker_epoll(port, &lfd);
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr) {
                on_event(events[i].data.ptr, events[i].events);
                continue;
            }
            int cfd;
            while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
                start_pair(cfd);
        }
        while (closed_pairs) {
            struct pair *p = closed_pairs;
            closed_pairs = p->next_closed;
            free(p);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 4)
        usage("relay_floor PORT UPSTREAM_PORT WORKERS");
    port = parse_int(argv[1], 1, 65535);
    upstream_port = parse_int(argv[2], 1, 65535);
    int workers = parse_int(argv[3], 1, 1024);
    fprintf(stderr, "relay_floor: %d workers on 127.0.0.1:%d, relaying to 127.0.0.1:%d\n",
            workers, port, upstream_port);
    return run_workers(workers, worker);
}
