/* libagile memory: per client, one window and one sub-allocator arena per device, leases
 * from the worker imported as file descriptors and mapped at the worker's offsets. The
 * public calls use the default client (client.c). */
#include "client_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALIGNMENT 512

struct agile__cl_lease {
    uint64_t off, size, handle;
    struct agile__cl_lease *next;
};

/* ---- arena callbacks ---------------------------------------------------------------------- */

static int lease_release(agile_client *c, uint64_t handle)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_LEASE_RELEASE;
    m.u.handle.handle = handle;
    rv = agile__call(c, &m, &rep, &buf);
    free(buf);
    return rv;
}

static int op_grow(void *ctx, uint64_t min_bytes, uint64_t *offset, uint64_t *size)
{
    agile__cl_dev *d = ctx;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    uint64_t h, a, b;
    int fd = -1, rv;
    agile__cl_lease *l = NULL;

    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_LEASE_GROW;
    m.u.lease_grow_req.device = (uint32_t)d->dev;
    m.u.lease_grow_req.bytes = min_bytes;
    if ((rv = agile__call(d->c, &m, &rep, &buf)) != AGILE_OK)
        return rv;
    struct agile__rec_lease_grow_rep r = rep.u.lease_grow_rep;
    free(buf);
    rv = agile__recv_fd(d->c, r.fd_seq, &h, &a, &b, &fd);
    if (rv == AGILE_OK && (h != r.handle || a != r.offset || b != r.size || fd < 0 ||
                           r.offset + r.size > d->size || r.size < min_bytes)) {
        agile__set_last_error("worker sent an inconsistent lease");
        rv = AGILE_EPROTO;
    }
    if (rv == AGILE_OK && !(l = calloc(1, sizeof *l)))
        rv = AGILE_ENOMEM;
    if (rv == AGILE_OK) {
        rv = agile__cmem_map(d->cw, fd, r.offset, r.size); /* takes fd */
        fd = -1;
    }
    if (rv != AGILE_OK) {
        if (fd >= 0)
            close(fd);
        free(l);
        lease_release(d->c, r.handle);
        return rv;
    }
    l->off = r.offset;
    l->size = r.size;
    l->handle = r.handle;
    pthread_mutex_lock(&d->mu);
    l->next = d->leases;
    d->leases = l;
    pthread_mutex_unlock(&d->mu);
    *offset = r.offset;
    *size = r.size;
    return AGILE_OK;
}

static int op_shrink(void *ctx, uint64_t offset, uint64_t size)
{
    agile__cl_dev *d = ctx;
    agile__cl_lease *l, **pp;
    int rv;
    pthread_mutex_lock(&d->mu);
    for (pp = &d->leases; (l = *pp); pp = &l->next)
        if (l->off == offset && l->size == size)
            break;
    if (l)
        *pp = l->next;
    pthread_mutex_unlock(&d->mu);
    if (!l)
        return AGILE_ENOENT;
    if ((rv = agile__cmem_unmap(d->cw, offset, size)) == AGILE_OK)
        rv = lease_release(d->c, l->handle);
    free(l);
    return rv;
}

/* Events for stream-aware reuse (cuda backend): recorded in the client's own context, from
 * a pool per device (evpool.h), so a record is one cuEventRecord, not create + record +
 * destroy. The arena calls these with its mutex held: the pool never blocks or calls back. */
static int op_event_record(void *ctx, uintptr_t stream, uint64_t *event)
{
    agile__cl_dev *d = ctx;
    return agile__evpool_record(&d->evpool, stream, event);
}

static int op_event_query(void *ctx, uint64_t event)
{
    agile__cl_dev *d = ctx;
    return agile__evpool_query(&d->evpool, event);
}

static void op_event_release(void *ctx, uint64_t event)
{
    agile__cl_dev *d = ctx;
    agile__evpool_release(&d->evpool, event);
}

static const agile__arena_ops host_ops = {op_grow, op_shrink, NULL, NULL, NULL};
static const agile__arena_ops cuda_ops = {op_grow, op_shrink, op_event_record, op_event_query,
                                          op_event_release};

/* ---- per-device setup ----------------------------------------------------------------------- */

static bool dev_ok(int device)
{
    return device >= 0 && device < AGILE_MAX_DEV;
}

/* Device `device` of c, its window and arena set up on first use. */
static int dev_get(agile_client *c, int device, agile__cl_dev **out)
{
    agile__cl_dev *d;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv = AGILE_OK;

    d = &c->dev[device];
    if (__atomic_load_n(&d->ready, __ATOMIC_ACQUIRE)) {
        *out = d;
        return AGILE_OK;
    }
    pthread_mutex_lock(&d->mu);
    if (d->ready)
        goto out;
    if ((unsigned)device >= c->info.ndev) {
        agile__set_last_error("device %d does not exist (the worker has %u)", device,
                              c->info.ndev);
        rv = AGILE_EINVAL;
        goto out;
    }
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_WINDOW;
    m.u.window_req.device = (uint32_t)device;
    AGILE_TRY(agile__call(c, &m, &rep, &buf));
    d->size = rep.u.window_rep.size;
    d->quota = rep.u.window_rep.quota;
    AGILE_TRY(agile__cmem_reserve((int)c->info.backend, device, d->size, &d->cw));
    d->base = agile__cmem_base(d->cw);
    rv = agile__arena_init(&d->arena,
                           c->info.backend == AGILE_BACKEND_KIND_CUDA ? &cuda_ops : &host_ops, d,
                           d->base, d->size, ALIGNMENT, 0);
    if (rv != AGILE_OK) {
        agile__cmem_release(d->cw);
        d->cw = NULL;
        goto out;
    }
    __atomic_store_n(&d->ready, 1, __ATOMIC_RELEASE);
out:
    pthread_mutex_unlock(&d->mu);
    free(buf);
    if (rv == AGILE_OK)
        *out = d;
    return rv;
}

/* Device `device` of c if its window is set up (c may be NULL: no default client yet). */
static agile__cl_dev *dev_ready(agile_client *c, int device)
{
    if (!c || !dev_ok(device) || !__atomic_load_n(&c->dev[device].ready, __ATOMIC_ACQUIRE))
        return NULL;
    return &c->dev[device];
}

void *agile__malloc(agile_client *c, size_t size, int device, void *stream)
{
    agile__cl_dev *d;
    uint64_t addr = 0;
    if (!dev_ok(device) || dev_get(c, device, &d) != AGILE_OK)
        return NULL;
    if (agile__arena_alloc(&d->arena, size, (uintptr_t)stream, &addr) != AGILE_OK)
        return NULL;
    return (void *)(uintptr_t)addr;
}

void agile__free(agile_client *c, void *ptr, size_t size, int device, void *stream)
{
    agile__cl_dev *d = ptr ? dev_ready(c, device) : NULL;
    /* A refused free (unknown pointer, size mismatch, double free) is counted in the
     * stats (num_free_errors) and changes nothing. */
    if (d)
        agile__arena_free(&d->arena, (uint64_t)(uintptr_t)ptr, size, (uintptr_t)stream);
}

void agile__mem_close(agile_client *c)
{
    /* A forked child's windows are copies of the parent's, in a CUDA state the child cannot
     * use: left alone (the child's memory, gone when it exits). */
    if (c->fork_gen != agile__fork_gen())
        return;
    for (int i = 0; i < AGILE_MAX_DEV; i++) {
        agile__cl_dev *d = &c->dev[i];
        if (d->ready)
            agile__arena_fini(&d->arena); /* its events go back to the pool */
        agile__evpool_fini(&d->evpool);   /* in the context the window retains */
        if (d->ready)
            agile__cmem_release(d->cw); /* unmaps the leases; the worker freed them at BYE */
        while (d->leases) {
            agile__cl_lease *l = d->leases;
            d->leases = l->next;
            free(l);
        }
        pthread_mutex_destroy(&d->mu);
    }
}

/* ---- the public calls: the default client's memory ------------------------------------------ */

AGILE_API void *agile_malloc(size_t size, int device, void *stream)
{
    agile_client *c = agile__default_peek();
    if (!dev_ok(device) || (!dev_ready(c, device) && agile_default_client(&c) != AGILE_OK))
        return NULL;
    return agile__malloc(c, size, device, stream);
}

AGILE_API void agile_free(void *ptr, size_t size, int device, void *stream)
{
    agile__free(agile__default_peek(), ptr, size, device, stream);
}

AGILE_API int agile_empty_cache(void)
{
    int rv = AGILE_OK;
    agile_client *c = agile__default_peek();
    for (int i = 0; i < AGILE_MAX_DEV; i++) {
        agile__cl_dev *d = dev_ready(c, i);
        int r = d ? agile__arena_empty_cache(&d->arena) : AGILE_OK;
        if (r != AGILE_OK && rv == AGILE_OK)
            rv = r;
    }
    return rv;
}

AGILE_API void agile_stream_synchronized(int device, void *stream)
{
    agile__cl_dev *d = dev_ready(agile__default_peek(), device);
    if (d)
        agile__arena_synchronized(&d->arena, (uintptr_t)stream);
}

AGILE_API int agile_memory_stats(int device, agile_mem_stats *out)
{
    agile__alloc_stats s;
    agile__cl_dev *d;
    if (!dev_ok(device) || !out)
        return AGILE_EINVAL;
    memset(out, 0, sizeof *out);
    if (!(d = dev_ready(agile__default_peek(), device)))
        return AGILE_OK;
    agile__arena_stats(&d->arena, &s);
    out->allocated_bytes = s.allocated_bytes;
    out->allocated_bytes_peak = s.allocated_bytes_peak;
    out->allocated_bytes_total = s.allocated_bytes_total;
    out->freed_bytes_total = s.freed_bytes_total;
    out->requested_bytes = s.requested_bytes;
    out->requested_bytes_peak = s.requested_bytes_peak;
    out->reserved_bytes = s.reserved_bytes;
    out->reserved_bytes_peak = s.reserved_bytes_peak;
    out->cached_bytes = s.cached_bytes;
    out->free_bytes = s.free_bytes;
    out->allocations = s.allocations;
    out->num_allocs = s.num_allocs;
    out->num_frees = s.num_frees;
    out->segments = s.segments;
    out->num_grows = s.num_grows;
    out->num_shrinks = s.num_shrinks;
    out->num_grow_failures = s.num_grow_failures;
    out->num_alloc_retries = s.num_alloc_retries;
    out->num_ooms = s.num_ooms;
    out->num_free_errors = s.num_free_errors;
    out->quota_bytes = d->quota;
    out->window_bytes = d->size;
    return AGILE_OK;
}

AGILE_API int agile_pool_window(int device, uint64_t *base, uint64_t *size)
{
    agile__cl_dev *d;
    if (!dev_ok(device) || !base || !size)
        return AGILE_EINVAL;
    if (!(d = dev_ready(agile__default_peek(), device)))
        return AGILE_ENOENT;
    *base = d->base;
    *size = d->size;
    return AGILE_OK;
}
