#ifdef __linux__
#define _GNU_SOURCE 1
#endif
#include "CIOLoopShims.h"

#include <errno.h>
#include <unistd.h>

#ifdef __linux__
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

int cio_has_epoll(void) { return 1; }

int cio_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static uint32_t to_epoll(uint32_t ev) {
    uint32_t m = 0;
    if (ev & CIO_EV_IN) m |= EPOLLIN;
    if (ev & CIO_EV_OUT) m |= EPOLLOUT;
    if (ev & CIO_EV_RDHUP) m |= EPOLLRDHUP;
    return m;
}

static uint32_t from_epoll(uint32_t m) {
    uint32_t ev = 0;
    if (m & EPOLLIN) ev |= CIO_EV_IN;
    if (m & EPOLLOUT) ev |= CIO_EV_OUT;
    if (m & EPOLLERR) ev |= CIO_EV_ERR;
    if (m & EPOLLHUP) ev |= CIO_EV_HUP;
    if (m & EPOLLRDHUP) ev |= CIO_EV_RDHUP;
    return ev;
}

int cio_epoll_ctl(int epfd, int op, int fd, uint32_t cio_events, uint64_t data) {
    struct epoll_event ev;
    ev.events = to_epoll(cio_events);
    ev.data.u64 = data;
    int real_op = op == CIO_CTL_ADD ? EPOLL_CTL_ADD : op == CIO_CTL_MOD ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    return epoll_ctl(epfd, real_op, fd, &ev);
}

int cio_epoll_wait(int epfd, cio_event *out, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n;
    do {
        n = epoll_wait(epfd, evs, max, timeout_ms);
    } while (n < 0 && errno == EINTR);
    for (int i = 0; i < n; i++) {
        out[i].data = evs[i].data.u64;
        out[i].events = from_epoll(evs[i].events);
    }
    return n;
}

int cio_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cio_eventfd_signal(int fd) {
    uint64_t one = 1;
    return (int)write(fd, &one, sizeof one);
}

int cio_eventfd_drain(int fd) {
    uint64_t value;
    return (int)read(fd, &value, sizeof value);
}

void cio_set_thread_name(const char *name) {
    char buf[16];
    int i = 0;
    for (; name[i] && i < 15; i++) buf[i] = name[i];
    buf[i] = 0;
    pthread_setname_np(pthread_self(), buf);
}

#else

int cio_has_epoll(void) { return 0; }
int cio_epoll_create(void) { errno = ENOSYS; return -1; }
int cio_epoll_ctl(int epfd, int op, int fd, uint32_t cio_events, uint64_t data) { errno = ENOSYS; return -1; }
int cio_epoll_wait(int epfd, cio_event *out, int max, int timeout_ms) { errno = ENOSYS; return -1; }
int cio_eventfd(void) { errno = ENOSYS; return -1; }
int cio_eventfd_signal(int fd) { errno = ENOSYS; return -1; }
int cio_eventfd_drain(int fd) { errno = ENOSYS; return -1; }
void cio_set_thread_name(const char *name) { (void)name; }

#endif
