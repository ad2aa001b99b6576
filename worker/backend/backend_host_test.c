/* backend_host_test — the host backend and fd passing, with real processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "backend.h"
#include "core.h"
#include "cwin.h"
#include "fdpass.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the DIR's own fd */
}

static agile__backend *open_host(void)
{
    agile__backend *be = NULL;
    char why[128];
    assert_int_equal(agile__backend_open(AGILE_BACKEND_KIND_HOST, &be, why, sizeof why), AGILE_OK);
    assert_int_equal(agile__backend_kind(be), AGILE_BACKEND_KIND_HOST);
    assert_string_equal(agile__backend_name(be), "host");
    return be;
}

static volatile uint8_t *at(agile__window *w, uint64_t off)
{
    return (volatile uint8_t *)(uintptr_t)(agile__window_base(w) + off);
}

static void test_devinfo(void **state)
{
    agile__backend *be = open_host();
    agile__devinfo di;
    (void)state;
    assert_int_equal(agile__backend_device_count(be), 1);
    assert_int_equal(agile__backend_device_info(be, 0, &di), AGILE_OK);
    assert_string_equal(di.name, "host");
    assert_true(di.total_mem > 0);
    assert_int_equal(di.granularity, 2 * MiB);
    assert_int_equal(agile__backend_device_info(be, 1, &di), AGILE_EINVAL);
    assert_null(agile__backend_cuda_context(be, 0));
    assert_int_equal(agile__backend_enter(be, 0), AGILE_OK);
    agile__backend_leave(be);
    agile__backend_close(be);
}

static void test_window_alignment(void **state)
{
    agile__backend *be = open_host();
    agile__window *w;
    (void)state;
    for (uint64_t size = 2 * MiB; size <= 64 * GiB; size *= 2) {
        assert_int_equal(agile__window_create(be, 0, size, 2 * MiB, &w), AGILE_OK);
        assert_int_equal(agile__window_base(w) % size, 0);
        assert_int_equal(agile__window_size(w), size);
        assert_int_equal(agile__window_gap(w), 2 * MiB);
        uint64_t c = agile__window_sink_chunk(w);
        assert_true(c >= 2 * MiB && c <= 64 * MiB && size / c <= 1024);
        /* the host maps one sink chunk: that is what the tenant's quota counts */
        assert_int_equal(agile__window_sink_bytes(w), c);
        assert_int_equal(agile__window_sink_bytes_for(be, 0, size), c);
        agile__window_destroy(w);
    }
    /* not a power of two, below the granularity, gap larger than the window, bad dev */
    assert_int_equal(agile__window_create(be, 0, 3 * MiB, 0, &w), AGILE_EINVAL);
    assert_int_equal(agile__window_create(be, 0, 1 * MiB, 0, &w), AGILE_EINVAL);
    assert_int_equal(agile__window_create(be, 0, 4 * MiB, 8 * MiB, &w), AGILE_EINVAL);
    assert_int_equal(agile__window_create(be, 1, 4 * MiB, 0, &w), AGILE_EINVAL);
    /* an odd gap is rounded up to the granularity */
    assert_int_equal(agile__window_create(be, 0, 4 * MiB, 1, &w), AGILE_OK);
    assert_int_equal(agile__window_gap(w), 2 * MiB);
    agile__window_destroy(w);
    agile__backend_close(be);
}

static void check_aliasing(agile__backend *be, uint64_t size, uint64_t gap)
{
    agile__window *w;
    uint64_t c;
    assert_int_equal(agile__window_create(be, 0, size, gap, &w), AGILE_OK);
    c = agile__window_sink_chunk(w);
    /* A write at the window's end reads back through another sink mapping. */
    *at(w, size - 8) = 0x5a;
    assert_int_equal(*at(w, c - 8), 0x5a);
    assert_int_equal(*at(w, size - c + c - 8), 0x5a);
    /* The guard gap is mapped, to the same sink (gap offset g shows sink byte g % c). */
    *at(w, (agile__window_gap(w) - 8) % c) = 0x6b;
    assert_int_equal(*at(w, size + agile__window_gap(w) - 8), 0x6b);
    *at(w, size) = 0x33;
    assert_int_equal(*at(w, 0), 0x33);
    agile__window_destroy(w);
}

static void test_sink_aliasing(void **state)
{
    agile__backend *be = open_host();
    (void)state;
    check_aliasing(be, 64 * MiB, 4 * MiB);  /* chunk = granule */
    check_aliasing(be, 4 * GiB, 16 * MiB);  /* chunk 4 MiB */
    check_aliasing(be, 128 * GiB, 8 * MiB); /* chunk 64 MiB, gap smaller than a chunk */
    agile__backend_close(be);
}

static void test_lease_errors(void **state)
{
    agile__backend *be = open_host();
    agile__window *w;
    agile__lease *l, *l2;
    int fd, fd2;
    (void)state;
    assert_int_equal(agile__window_create(be, 0, 64 * MiB, 2 * MiB, &w), AGILE_OK);
    assert_int_equal(agile__lease_create(w, 1 * MiB, 2 * MiB, &l, &fd), AGILE_EINVAL);
    assert_int_equal(fd, -1);
    assert_int_equal(agile__lease_create(w, 0, 3 * MiB, &l, &fd), AGILE_EINVAL);
    assert_int_equal(agile__lease_create(w, 0, 0, &l, &fd), AGILE_EINVAL);
    assert_int_equal(agile__lease_create(w, 64 * MiB, 2 * MiB, &l, &fd), AGILE_EBOUNDS);
    assert_int_equal(agile__lease_create(w, 62 * MiB, 4 * MiB, &l, &fd), AGILE_EBOUNDS);
    assert_int_equal(agile__lease_create(w, 8 * MiB, 8 * MiB, &l, &fd), AGILE_OK);
    assert_true(fd >= 0);
    assert_int_equal(agile__lease_offset(l), 8 * MiB);
    assert_int_equal(agile__lease_size(l), 8 * MiB);
    assert_int_equal(agile__lease_create(w, 14 * MiB, 4 * MiB, &l2, &fd2), AGILE_EBUSY);
    assert_int_equal(agile__lease_create(w, 4 * MiB, 6 * MiB, &l2, &fd2), AGILE_EBUSY);
    assert_int_equal(agile__lease_create(w, 16 * MiB, 2 * MiB, &l2, &fd2), AGILE_OK);
    /* sealed: a client cannot shrink the file under the worker's mapping */
    assert_int_equal(ftruncate(fd, 0), -1);
    assert_int_equal(errno, EPERM);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
    close(fd2);
    agile__lease_destroy(l2);
    agile__lease_destroy(l);
    agile__window_destroy(w);
    agile__backend_close(be);
}

/* The child: its own window, the fd from the socket, the pattern at the same offset. */
static int child_import(int sock, uint64_t size, uint64_t off, uint64_t len)
{
    agile__cwin *cw;
    int fd;
    uint64_t tag;
    size_t got;
    volatile uint8_t *p;

    if (agile__cmem_reserve(AGILE_BACKEND_KIND_HOST, 0, size, &cw) != AGILE_OK) return 10;
    if (agile__cmem_base(cw) % size) return 11;
    if (agile__fd_recv(sock, &fd, &tag, sizeof tag, &got) != AGILE_OK || got != sizeof tag ||
        fd < 0 || tag != off)
        return 12;
    if (agile__cmem_map(cw, fd, off, len) != AGILE_OK) return 13;
    p = (volatile uint8_t *)(uintptr_t)(agile__cmem_base(cw) + off);
    for (uint64_t i = 0; i < len; i += 4096)
        if (p[i] != (uint8_t)(i / 4096 + 1)) return 14;
    p[len - 1] = 0xc7; /* the parent checks it sees this */
    if (agile__cmem_unmap(cw, off, len) != AGILE_OK) return 15;
    /* unmapped, the range is still reserved: nothing else may be placed there */
    void *q =
        mmap((void *)p, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (q != MAP_FAILED) return 16;
    agile__cmem_release(cw);
    return 0;
}

static void test_lease_fork_import(void **state)
{
    agile__backend *be = open_host();
    agile__window *w;
    agile__lease *l;
    const uint64_t W = 64 * MiB, off = 8 * MiB, len = 4 * MiB;
    int fd, sv[2], st;
    pid_t pid;
    uint64_t tag = off;
    (void)state;

    assert_int_equal(agile__window_create(be, 0, W, 2 * MiB, &w), AGILE_OK);
    assert_int_equal(agile__lease_create(w, off, len, &l, &fd), AGILE_OK);
    for (uint64_t i = 0; i < len; i += 4096) {
        assert_int_equal(*at(w, off + i), 0); /* fresh lease: zero */
        *at(w, off + i) = (uint8_t)(i / 4096 + 1);
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        _exit(child_import(sv[1], W, off, len));
    }
    close(sv[1]);
    assert_int_equal(agile__fd_send(sv[0], fd, &tag, sizeof tag), AGILE_OK);
    close(fd);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(*at(w, off + len - 1), 0xc7);
    close(sv[0]);

    /* destroy: the range shows the sink again (sink byte off % chunk = 0) */
    *at(w, 0) = 0x9e;
    agile__lease_destroy(l);
    assert_int_equal(*at(w, off), 0x9e);
    assert_int_equal(*at(w, off + len - 1), *at(w, len - 1));
    /* a new lease at the same offset is scrubbed */
    assert_int_equal(agile__lease_create(w, off, len, &l, &fd), AGILE_OK);
    for (uint64_t i = 0; i < len; i += 64)
        assert_int_equal(*at(w, off + i), 0);
    assert_int_equal(*at(w, off + len - 1), 0);
    close(fd);
    agile__lease_destroy(l);
    agile__window_destroy(w);
    agile__backend_close(be);
}

static void test_destroy_with_live_leases(void **state)
{
    agile__backend *be = open_host();
    agile__window *w;
    agile__lease *l;
    int fd, before = count_fds();
    (void)state;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(agile__window_create(be, 0, 1 * GiB, 64 * MiB, &w), AGILE_OK);
        for (uint64_t i = 0; i < 5; i++) {
            assert_int_equal(agile__lease_create(w, i * 64 * MiB, 64 * MiB, &l, &fd), AGILE_OK);
            *at(w, i * 64 * MiB + 123) = 1;
            close(fd);
        }
        agile__window_destroy(w);
    }
    assert_int_equal(count_fds(), before);
    agile__backend_close(be);
}

static void test_pmem_and_ops(void **state)
{
    agile__backend *be = open_host();
    agile__pmem *p;
    uint64_t a;
    (void)state;
    assert_int_equal(agile__pmem_alloc(be, 0, 3 * MiB, &p, &a), AGILE_OK);
    assert_int_equal(agile__backend_memset(be, 0, a, 0x11, 3 * MiB), AGILE_OK);
    assert_int_equal(agile__backend_memcpy(be, 0, a + 1, a + 2 * MiB - 7, 100), AGILE_OK);
    assert_int_equal(((uint8_t *)(uintptr_t)a)[3 * MiB - 1], 0x11);
    assert_int_equal(agile__pmem_alloc(be, 0, 0, &p, &a) == AGILE_OK, 0);
    agile__pmem_free(p);
    agile__backend_close(be);
}

static void test_fdpass_edges(void **state)
{
    int sv[2], fd, p1[2];
    char buf[16];
    size_t got;
    int before = count_fds();
    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(p1, O_CLOEXEC), 0);
    /* no fd attached */
    assert_int_equal(agile__fd_send(sv[0], -1, "hi", 2), AGILE_OK);
    assert_int_equal(agile__fd_recv(sv[1], &fd, buf, sizeof buf, &got), AGILE_OK);
    assert_int_equal(got, 2);
    assert_int_equal(fd, -1);
    /* two fds in one message: the extra is closed, the message refused */
    {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(2 * sizeof(int))];
        } ctl;
        struct iovec iov = {.iov_base = "x", .iov_len = 1};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(2 * sizeof(int));
        memcpy(CMSG_DATA(c), p1, sizeof p1);
        assert_int_equal(sendmsg(sv[0], &m, 0), 1);
        assert_int_equal(agile__fd_recv(sv[1], &fd, buf, sizeof buf, &got), AGILE_EPROTO);
    }
    /* a message longer than the buffer is refused, its fd closed */
    assert_int_equal(agile__fd_send(sv[0], p1[0], "0123456789abcdefXYZ", 19), AGILE_OK);
    assert_int_equal(agile__fd_recv(sv[1], &fd, buf, sizeof buf, &got), AGILE_EPROTO);
    /* a good one */
    assert_int_equal(agile__fd_send(sv[0], p1[1], "ok", 2), AGILE_OK);
    assert_int_equal(agile__fd_recv(sv[1], &fd, buf, sizeof buf, &got), AGILE_OK);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
    /* peer closed */
    close(sv[0]);
    assert_int_equal(agile__fd_recv(sv[1], &fd, buf, sizeof buf, &got), AGILE_ECLOSED);
    close(sv[1]);
    close(p1[0]);
    close(p1[1]);
    assert_int_equal(count_fds(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_devinfo),           cmocka_unit_test(test_window_alignment),
        cmocka_unit_test(test_sink_aliasing),     cmocka_unit_test(test_lease_errors),
        cmocka_unit_test(test_lease_fork_import), cmocka_unit_test(test_destroy_with_live_leases),
        cmocka_unit_test(test_pmem_and_ops),      cmocka_unit_test(test_fdpass_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
