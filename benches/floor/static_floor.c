/*
 * static_floor: the physical floor for serving a small static file over HTTP/1.1.
 *
 * Usage: static_floor PORT WORKERS [FILE]
 *
 * Answers every GET on 127.0.0.1:PORT with the same 200 response from memory: a head with
 * shoal's header names and byte length, and a 1,024-byte body (or FILE's bytes, read once at
 * start, so a benchmark can check the body byte for byte). It is the least work the kernel
 * allows for this job, the bound a real server can only approach: per request one read, one
 * write and a share of an epoll_wait, no file system, no parsing beyond finding the end of
 * each head and its Connection header. It still does all of the kernel work a real server
 * must: it reads every request, writes every response, keeps connections alive (closing
 * after "Connection: close" or HTTP/1.0 without keep-alive), answers pipelined requests and
 * handles partial writes.
 *
 * Like shoal, the parent forks WORKERS processes, each with its own SO_REUSEPORT listener
 * and one level-triggered epoll loop: level-triggered, so that a read is never repeated
 * just to see EAGAIN. SIGTERM or SIGINT to the parent stops them all.
 * Build: cc -O2 -Wall -Wextra -o static_floor static_floor.c (floor_common.h beside it)
 */
#define _GNU_SOURCE
#include "floor_common.h"

#define IN_SIZE 8192        /* request heads: plenty for any benchmark client */
#define OUT_SIZE 16384      /* room for several pipelined responses */
#define BODY_MAX 8192
#define HEAD_MAX 512

/* One connection: bytes read but not yet answered, and bytes of answers not yet sent. */
struct conn {
    int fd;
    uint32_t events;        /* what epoll watches now: EPOLLIN, or EPOLLOUT after a partial write */
    int close_after;        /* the last answered request ends the connection */
    size_t in_len, out_len, out_off;
    char in[IN_SIZE];
    char out[OUT_SIZE];
};

/* The three possible answers, rebuilt when the second changes (the Date header). */
enum { KEEP, KEEP_10, CLOSE, N_RESP };
static char resp[N_RESP][HEAD_MAX + BODY_MAX];
static size_t resp_len[N_RESP];
static char body[BODY_MAX];
static size_t body_len = 1024;
static time_t resp_time = -1;
static int epfd, port;

static void build_responses(time_t now)
{
    static const char *conn_line[N_RESP] = {"", "Connection: keep-alive\r\n", "Connection: close\r\n"};
    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    for (int i = 0; i < N_RESP; i++) {
        int n = snprintf(resp[i], HEAD_MAX,
                         "HTTP/1.1 200 OK\r\n"
                         "Server: shoal\r\n"
                         "Content-Type: application/octet-stream\r\n"
                         "Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
                         "ETag: \"6955b900-00000000-400\"\r\n"
                         "Accept-Ranges: bytes\r\n"
                         "Date: %s\r\n"
                         "Content-Length: %zu\r\n"
                         "%s\r\n",
                         date, body_len, conn_line[i]);
        memcpy(resp[i] + n, body, body_len);
        resp_len[i] = n + body_len;
    }
    resp_time = now;
}

/* Which answer one request head (request line to the blank line) gets: HTTP/1.1 keeps the
 * connection unless "Connection: close", HTTP/1.0 closes it unless "Connection: keep-alive". */
static int choose_response(const char *head, const char *end)
{
    const char *eol = memmem(head, end - head, "\r\n", 2);
    int http10 = eol - head >= 8 && memcmp(eol - 8, "HTTP/1.0", 8) == 0;
    int close = 0, keep_alive = 0;
    for (const char *line = eol + 2; line < end; line = eol + 2) {
        eol = memmem(line, end - line, "\r\n", 2);
        if (!eol || eol == line)
            break;
        if (eol - line > 11 && strncasecmp(line, "connection:", 11) == 0) {
            const char *v = line + 11, *v_end = eol;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
                v_end--;
            close |= v_end - v == 5 && strncasecmp(v, "close", 5) == 0;
            keep_alive |= v_end - v == 10 && strncasecmp(v, "keep-alive", 10) == 0;
        }
    }
    if (close || (http10 && !keep_alive))
        return CLOSE;
    return http10 ? KEEP_10 : KEEP;
}

/* Turn every complete head in c->in into an answer in c->out, as long as one fits. */
static void take_requests(struct conn *c)
{
    char *p = c->in, *end = c->in + c->in_len, *head_end;
    while (!c->close_after && c->out_len + HEAD_MAX + body_len <= OUT_SIZE &&
           (head_end = memmem(p, end - p, "\r\n\r\n", 4)) != NULL) {
        int r = choose_response(p, head_end + 4);
        memcpy(c->out + c->out_len, resp[r], resp_len[r]);
        c->out_len += resp_len[r];
        c->close_after = r == CLOSE;
        p = head_end + 4;
    }
    c->in_len = end - p;
    memmove(c->in, p, c->in_len);
}

static void conn_close(struct conn *c)
{
    close(c->fd);           /* also takes it out of the epoll set */
    free(c);
}

static void watch(struct conn *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

/* Send what is pending, answer what has been read, and repeat until everything read is
 * answered (then wait for more requests) or the socket is full (then wait for EPOLLOUT,
 * reading nothing meanwhile: the client must take its answers before it sends more). */
static void serve(struct conn *c)
{
    for (;;) {
        if (c->out_off < c->out_len) {
            /* Before a close, MSG_MORE holds the last segment back for the FIN to ride on
             * (one segment fewer per connection; shoal does the same). */
            int more = c->close_after ? MSG_MORE : 0;
            ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | more);
            if (n < 0 && errno != EAGAIN) {
                conn_close(c);
                return;
            }
            if (n > 0)
                c->out_off += n;
            if (c->out_off < c->out_len) {
                watch(c, EPOLLOUT);
                return;
            }
            c->out_off = c->out_len = 0;
        }
        if (c->close_after) {
            conn_close(c);
            return;
        }
        take_requests(c);
        if (c->out_len == 0)
            break;
    }
    if (c->in_len == IN_SIZE) {     /* a head larger than the buffer: not a benchmark client */
        conn_close(c);
        return;
    }
    watch(c, EPOLLIN);
}

static void on_readable(struct conn *c)
{
    ssize_t n = read(c->fd, c->in + c->in_len, IN_SIZE - c->in_len);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(c);
        return;
    }
    if (n > 0) {
        c->in_len += n;
        serve(c);
    }
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;         /* EAGAIN: all taken; anything else: try again on the next event */
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->events = EPOLLIN;
        c->close_after = 0;
        c->in_len = c->out_len = c->out_off = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            conn_close(c);
    }
}

static void worker(void)
{
    int lfd;
    struct epoll_event events[256];
    epfd = worker_epoll(port, &lfd);
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        time_t now = time(NULL);
        if (now != resp_time)
            build_responses(now);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c)
                accept_all(lfd);
            else if (events[i].events & (EPOLLERR | EPOLLHUP))
                conn_close(c);
            else if (c->events & EPOLLOUT)
                serve(c);
            else
                on_readable(c);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4)
        usage("static_floor PORT WORKERS [FILE]");
    port = parse_int(argv[1], 1, 65535);
    int workers = parse_int(argv[2], 1, 1024);
    if (argc == 4) {
        FILE *f = fopen(argv[3], "rb");
        if (!f)
            die(argv[3]);
        body_len = fread(body, 1, BODY_MAX, f);
        if (ferror(f) || fgetc(f) != EOF) {
            fprintf(stderr, "%s: unreadable or larger than 8 KiB\n", argv[3]);
            return 2;
        }
        fclose(f);
    } else {
        memset(body, 'x', body_len);
    }
    fprintf(stderr, "static_floor: %d workers on 127.0.0.1:%d, %zu-byte body\n", workers, port, body_len);
    return run_workers(workers, worker);
}
