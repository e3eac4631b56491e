#ifndef CLIBPQ_SHIM_H
#define CLIBPQ_SHIM_H
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1 /* ppoll */
#endif
#include <poll.h>
#include <time.h>
#include <libpq-fe.h>

/// Waits at most `timeout_ns` nanoseconds for `fd` (a libpq connection's socket) to be
/// readable, or hung up. Returns > 0 when it is, 0 on timeout, < 0 on error (errno).
/// ppoll on Linux (nanosecond timeout); poll elsewhere (rounded up to milliseconds).
static inline int clibpq_wait_readable(int fd, long long timeout_ns) {
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
#if defined(__linux__)
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / 1000000000LL), .tv_nsec = (long)(timeout_ns % 1000000000LL)};
    return ppoll(&p, 1, &ts, 0);
#else
    return poll(&p, 1, (int)((timeout_ns + 999999LL) / 1000000LL));
#endif
}
#endif
