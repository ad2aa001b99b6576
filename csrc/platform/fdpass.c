/* fdpass.c — SCM_RIGHTS send/receive of one descriptor. */
#include "fdpass.h"

#include "core.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Room for a few descriptors so that a peer sending more than one cannot make us lose
 * track of them (they are closed, not leaked). */
#define MAX_FDS 8

int agile__fd_send(int sock, int fd, const void *data, size_t len)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = (void *)(uintptr_t)data, .iov_len = len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    if (!data || len == 0 || len > 4096) return AGILE_EINVAL;
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    do {
        n = sendmsg(sock, &m, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno == EPIPE ? AGILE_ECLOSED : agile_err_sys(errno);
    return (size_t)n == len ? AGILE_OK : AGILE_EPROTO;
}

int agile__fd_recv(int sock, int *fd, void *data, size_t cap, size_t *got)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } ctl;
    struct iovec iov = {.iov_base = data, .iov_len = cap};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    int rv = AGILE_OK, keep = -1;
    ssize_t n;

    if (!fd || !data || !got || cap == 0) return AGILE_EINVAL;
    *fd = -1;
    *got = 0;
    memset(&ctl, 0, sizeof ctl);
    m.msg_control = ctl.buf;
    m.msg_controllen = sizeof ctl.buf;
    do {
        n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return agile_err_sys(errno);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            if (keep < 0)
                keep = f;
            else {
                close(f);
                rv = AGILE_EPROTO;
            }
        }
    }
    if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) rv = AGILE_EPROTO;
    if (n == 0 && keep < 0) rv = AGILE_ECLOSED;
    if (rv != AGILE_OK) {
        if (keep >= 0) close(keep);
        return rv;
    }
    *fd = keep;
    *got = (size_t)n;
    return AGILE_OK;
}
