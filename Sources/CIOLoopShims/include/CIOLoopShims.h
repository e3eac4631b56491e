#ifndef CIOLOOP_SHIMS_H
#define CIOLOOP_SHIMS_H

#include <stdint.h>

/* Small wrappers over Linux-only readiness APIs that Swift's Glibc module does not
   import (epoll, eventfd) or imports awkwardly (epoll_event is packed on x86-64). */

typedef struct cio_event {
    uint64_t data;
    uint32_t events;
} cio_event;

enum {
    CIO_EV_IN = 1,
    CIO_EV_OUT = 2,
    CIO_EV_ERR = 4,
    CIO_EV_HUP = 8,
    CIO_EV_RDHUP = 16,
};

/* Returns 1 where epoll and eventfd exist (Linux), 0 elsewhere. */
int cio_has_epoll(void);
int cio_epoll_create(void);
int cio_epoll_ctl(int epfd, int op, int fd, uint32_t cio_events, uint64_t data);
int cio_epoll_wait(int epfd, cio_event *out, int max, int timeout_ms);
int cio_eventfd(void);
int cio_eventfd_signal(int fd);
int cio_eventfd_drain(int fd);
void cio_set_thread_name(const char *name);

enum { CIO_CTL_ADD = 1, CIO_CTL_MOD = 2, CIO_CTL_DEL = 3 };

#endif
