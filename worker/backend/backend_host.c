/* backend_host.c — windows in host memory: memfd leases mapped into a PROT_NONE
 * reservation. The same API and tests as cuda on machines without a GPU. */
#include "backend_int.h"
#include "cwin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>


static agile__backend host_backend = {.ops = &agile__host_ops, .kind = AGILE_BACKEND_KIND_HOST};

uint64_t agile__host_phys_mem(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return (pages > 0 && psz > 0) ? (uint64_t)pages * (uint64_t)psz : 0;
}

int agile__host_open(agile__backend **out, char *why, size_t whycap)
{
    /* Stateless: every window carries what it needs. */
    *out = &host_backend;
    return AGILE_OK;
}

static void host_close(agile__backend *be) {}

static int host_device_count(agile__backend *be)
{
    return 1;
}

static int host_device_info(agile__backend *be, int dev, agile__devinfo *out)
{
    snprintf(out->name, sizeof out->name, "host");
    snprintf(out->uuid, sizeof out->uuid, "host");
    out->total_mem = agile__host_phys_mem();
    out->free_mem = (uint64_t)sysconf(_SC_AVPHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    out->granularity = AGILE_HOST_GRAN;
    return AGILE_OK;
}

static uint64_t host_granularity(agile__backend *be, int dev)
{
    return AGILE_HOST_GRAN;
}

/* Map the sink over window offsets [off, off + len): pieces split at chunk boundaries, so
 * window offset o shows sink byte o % chunk. */
static int sink_map(agile__window *w, uint64_t off, uint64_t len)
{
    uint64_t end = off + len;
    while (off < end) {
        uint64_t in = off & (w->chunk - 1);
        uint64_t n = AGILE_MIN(w->chunk - in, end - off);
        void *p = mmap((void *)(uintptr_t)(w->base + off), n, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED, w->sink_fd, (off_t)in);
        if (p == MAP_FAILED) return agile_err_sys(errno);
        off += n;
    }
    return AGILE_OK;
}

static int host_window_create(agile__window *w)
{
    int rv = AGILE_OK;

    w->rsv_len = w->size + w->gap;
    AGILE_TRY(agile__va_reserve(w->rsv_len, w->size, &w->base));
    /* The sink is never exported, so it needs no seals; fresh memfd pages are zero. */
    w->sink_fd = memfd_create("agile-sink", MFD_CLOEXEC);
    if (w->sink_fd < 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    if (ftruncate(w->sink_fd, (off_t)w->chunk) != 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    AGILE_TRY(sink_map(w, 0, w->rsv_len));
out:
    if (rv != AGILE_OK) {
        if (w->base) munmap((void *)(uintptr_t)w->base, w->rsv_len);
        if (w->sink_fd >= 0) close(w->sink_fd);
        w->base = 0;
        w->sink_fd = -1;
    }
    return rv;
}

static void host_window_destroy(agile__window *w)
{
    /* One munmap drops the sink and every lease mapping; the lease memfds were handed to
     * the caller or closed, so the memory goes once clients unmap too. */
    munmap((void *)(uintptr_t)w->base, w->rsv_len);
    close(w->sink_fd);
}

static int host_lease_create(agile__lease *l, int *fdp)
{
    int rv = AGILE_OK, fd;
    agile__window *w = l->w;
    void *p;

    fd = memfd_create("agile-lease", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return agile_err_sys(errno);
    /* ftruncate gives zero pages: the lease is scrubbed by construction. The seals stop a
     * client from shrinking the file under the worker's mapping (SIGBUS in the worker). */
    if (ftruncate(fd, (off_t)l->size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    p = mmap((void *)(uintptr_t)(w->base + l->offset), l->size, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
        rv = agile_err_sys(errno);
        /* A failed MAP_FIXED may already have removed the old mapping. */
        if (sink_map(w, l->offset, l->size) != AGILE_OK) w->broken = true;
        goto out;
    }
    *fdp = fd;
    fd = -1;
out:
    if (fd >= 0) close(fd);
    return rv;
}

static void host_lease_destroy(agile__lease *l)
{
    /* MAP_FIXED replaces the lease mapping atomically: no instant without a mapping. */
    int rv = sink_map(l->w, l->offset, l->size);
    if (rv != AGILE_OK) {
        agile__error("host backend: cannot put the sink back at offset %#llx: %s",
                     (unsigned long long)l->offset, agile_strerror(rv));
        /* Never leave the tenant's memory visible: at worst the range faults. */
        mmap((void *)(uintptr_t)(l->w->base + l->offset), l->size, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        l->w->broken = true;
    }
}

static int host_pmem_alloc(agile__pmem *p)
{
    void *m = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return agile_err_sys(errno);
    p->addr = (uint64_t)(uintptr_t)m;
    return AGILE_OK;
}

static void host_pmem_free(agile__pmem *p)
{
    munmap((void *)(uintptr_t)p->addr, p->size);
}

static int host_memset(agile__backend *be, int dev, uint64_t addr, int value, uint64_t n)
{
    memset((void *)(uintptr_t)addr, value, n);
    return AGILE_OK;
}

static int host_memcpy(agile__backend *be, int dev, uint64_t dst, uint64_t src, uint64_t n)
{
    /* In-window copies may overlap. */
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return AGILE_OK;
}

static int host_read(agile__backend *be, int dev, void *dst, uint64_t src, uint64_t n)
{
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return AGILE_OK;
}

static int host_write(agile__backend *be, int dev, uint64_t dst, const void *src, uint64_t n)
{
    memcpy((void *)(uintptr_t)dst, src, n);
    return AGILE_OK;
}

static int host_enter(agile__backend *be, int dev)
{
    return AGILE_OK;
}

static void host_leave(agile__backend *be) {}

static void *host_cuda_context(agile__backend *be, int dev)
{
    return NULL;
}

const agile__backend_ops agile__host_ops = {
    .close = host_close,
    .device_count = host_device_count,
    .device_info = host_device_info,
    .granularity = host_granularity,
    .window_create = host_window_create,
    .window_destroy = host_window_destroy,
    .lease_create = host_lease_create,
    .lease_destroy = host_lease_destroy,
    .pmem_alloc = host_pmem_alloc,
    .pmem_free = host_pmem_free,
    .memset = host_memset,
    .memcpy = host_memcpy,
    .enter = host_enter,
    .leave = host_leave,
    .cuda_context = host_cuda_context,
    .read = host_read,
    .write = host_write,
    /* no queues: the caller's thread does in-window work (worker-side = host addresses) */
    .queue = NULL,
};
