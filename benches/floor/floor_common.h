/*
 * What both floors of benches/floor/ share: arguments, the per-worker SO_REUSEPORT listener,
 * and the parent that forks the workers and stops them. Linux only; libc only.
 */
#ifndef FLOOR_COMMON_H
#define FLOOR_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void usage(const char *text)
{
    fprintf(stderr, "usage: %s\n", text);
    exit(2);
}

static int parse_int(const char *s, int min, int max)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "not a number from %d to %d: %s\n", min, max, s);
        exit(2);
    }
    return (int)v;
}

/* A listener of this worker's own on 127.0.0.1:PORT; the kernel spreads new connections over
 * the workers' listeners. TCP_NODELAY here is inherited by every accepted socket, which saves
 * a setsockopt per connection; TCP_DEFER_ACCEPT hands a connection over only once its request
 * has arrived, which saves a wakeup per connection (shoal does both). */
static int listen_reuseport(int port)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

/* This worker's listener (into *lfd) and its epoll set, the listener in it with a NULL
 * pointer (every connection has its own). */
static int worker_epoll(int port, int *lfd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    int ep = epoll_create1(EPOLL_CLOEXEC);
    *lfd = listen_reuseport(port);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, *lfd, &ev) < 0)
        die("epoll");
    return ep;
}

/* Forks WORKERS processes running WORKER, then waits: on SIGTERM or SIGINT it sends SIGTERM
 * to them all, reaps them and returns 0; if a worker dies on its own (a bind that failed, a
 * crash) it stops the others the same way and returns 1. Workers ask the kernel for SIGTERM
 * when the parent dies, so a parent killed with SIGKILL does not leave them behind. */
static int run_workers(int workers, void (*worker)(void))
{
    sigset_t waited, old;
    sigemptyset(&waited);
    sigaddset(&waited, SIGTERM);
    sigaddset(&waited, SIGINT);
    sigaddset(&waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &waited, &old);     /* blocked before fork: none can be missed */
    pid_t parent = getpid(), *pids = calloc(workers, sizeof *pids);
    if (!pids)
        die("calloc");
    for (int i = 0; i < workers; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            die("fork");    /* the workers already started go with the parent */
        if (pids[i] == 0) {
            if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                _exit(1);   /* the parent is already gone */
            sigprocmask(SIG_SETMASK, &old, NULL);
            worker();
            _exit(1);
        }
    }
    int sig = 0, status = 0;
    sigwait(&waited, &sig);
    if (sig == SIGCHLD) {
        fprintf(stderr, "a worker exited on its own: stopping\n");
        status = 1;
    }
    for (int i = 0; i < workers; i++)
        kill(pids[i], SIGTERM);
    for (int i = 0; i < workers; i++)
        waitpid(pids[i], NULL, 0);
    free(pids);
    return status;
}

#endif
