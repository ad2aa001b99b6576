/* backend.c — argument checks, bookkeeping shared by both backends, dispatch. */
#include "backend_int.h"
#include "cudadrv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

uint64_t agile__sink_chunk(uint64_t size, uint64_t gran)
{
    /* W/1024 keeps a window at ~1024 sink mappings; 64 MiB caps the memory a sink costs
     * (0.1 % of W) and matches the usual lease step, so whole-chunk leases need no
     * fragment mappings. */
    uint64_t c = size / 1024;
    if (c < gran) c = gran;
    if (c > (64ull << 20)) c = 64ull << 20;
    if (c < gran) c = gran;
    return c;
}

int agile__backend_open(int kind, agile__backend **out, char *why, size_t whycap)
{
    if (why && whycap) why[0] = '\0';
    if (!out) return AGILE_EINVAL;
    switch (kind) {
    case AGILE_BACKEND_KIND_HOST:
        return agile__host_open(out, why, whycap);
    case AGILE_BACKEND_KIND_CUDA:
        return agile__cuda_open(out, why, whycap);
    default:
        if (why && whycap) snprintf(why, whycap, "unknown backend kind %d", kind);
        return AGILE_EINVAL;
    }
}

void agile__backend_close(agile__backend *be)
{
    if (be) be->ops->close(be);
}

int agile__backend_kind(const agile__backend *be)
{
    return be->kind;
}

const char *agile__backend_name(const agile__backend *be)
{
    return agile_backend_name(be->kind);
}

int agile__backend_device_count(agile__backend *be)
{
    return be->ops->device_count(be);
}

static bool dev_ok(agile__backend *be, int dev)
{
    return dev >= 0 && dev < be->ops->device_count(be);
}

int agile__backend_device_info(agile__backend *be, int dev, agile__devinfo *out)
{
    if (!out || !dev_ok(be, dev)) return AGILE_EINVAL;
    memset(out, 0, sizeof *out);
    return be->ops->device_info(be, dev, out);
}

int agile__window_create(agile__backend *be, int dev, uint64_t size, uint64_t guard_gap,
                         agile__window **out)
{
    int rv = AGILE_OK;
    agile__window *w = NULL;
    uint64_t gran;

    if (!out || !dev_ok(be, dev)) return AGILE_EINVAL;
    gran = be->ops->granularity(be, dev);
    /* Power-of-two sizes are what makes translation one and/or (docs/design.md); 2^62 keeps
     * size*2 + gap from overflowing. */
    if (!is_pow2(gran) || !is_pow2(size) || size < gran || size > (1ull << 46) || guard_gap > size)
        return AGILE_EINVAL;
    w = calloc(1, sizeof *w);
    if (!w) return AGILE_ENOMEM;
    w->be = be;
    w->dev = dev;
    w->size = size;
    w->gran = gran;
    w->gap = AGILE_ALIGN_UP(guard_gap, gran);
    w->chunk = agile__sink_chunk(size, gran);
    w->sink_fd = -1;
    AGILE_TRY(be->ops->window_create(w));
    *out = w;
    w = NULL;
out:
    free(w);
    return rv;
}

void agile__window_destroy(agile__window *w)
{
    if (!w) return;
    /* The backend unmaps and frees the leases' memory; the records are ours. */
    w->be->ops->window_destroy(w);
    while (w->leases) {
        agile__lease *l = w->leases;
        w->leases = l->next;
        free(l);
    }
    free(w);
}

uint64_t agile__window_base(const agile__window *w)
{
    return w->base;
}

uint64_t agile__window_size(const agile__window *w)
{
    return w->size;
}

uint64_t agile__window_gap(const agile__window *w)
{
    return w->gap;
}

uint64_t agile__window_sink_chunk(const agile__window *w)
{
    return w->chunk;
}

uint64_t agile__window_sink_bytes(const agile__window *w)
{
    bool two = w->sink_small && w->sink_small != w->sink_big;
    return w->chunk + (two ? w->gran : 0);
}

uint64_t agile__window_sink_bytes_for(agile__backend *be, int dev, uint64_t size)
{
    if (!be || !dev_ok(be, dev)) return 0;
    uint64_t gran = be->ops->granularity(be, dev), chunk = agile__sink_chunk(size, gran);
    /* cuda keeps a one-granule small sink beside a larger chunk; host maps the chunk only */
    return chunk + (be->kind == AGILE_BACKEND_KIND_CUDA && chunk != gran ? gran : 0);
}

int agile__window_dev(const agile__window *w)
{
    return w->dev;
}

int agile__lease_create(agile__window *w, uint64_t offset, uint64_t size, agile__lease **out,
                        int *fd)
{
    int rv = AGILE_OK;
    agile__lease *l = NULL;

    if (!w || !out || !fd) return AGILE_EINVAL;
    *fd = -1;
    if (size == 0 || (offset & (w->gran - 1)) || (size & (w->gran - 1))) return AGILE_EINVAL;
    if (offset >= w->size || size > w->size - offset) return AGILE_EBOUNDS;
    if (w->broken) return AGILE_EINTERNAL;
    for (agile__lease *o = w->leases; o; o = o->next)
        if (offset < o->offset + o->size && o->offset < offset + size) return AGILE_EBUSY;
    l = calloc(1, sizeof *l);
    if (!l) return AGILE_ENOMEM;
    l->w = w;
    l->offset = offset;
    l->size = size;
    AGILE_TRY(w->be->ops->lease_create(l, fd));
    l->next = w->leases;
    if (w->leases) w->leases->prev = l;
    w->leases = l;
    *out = l;
    l = NULL;
out:
    free(l);
    return rv;
}

void agile__lease_destroy(agile__lease *l)
{
    agile__window *w;
    if (!l) return;
    w = l->w;
    w->be->ops->lease_destroy(l);
    if (l->prev)
        l->prev->next = l->next;
    else
        w->leases = l->next;
    if (l->next) l->next->prev = l->prev;
    free(l);
}

uint64_t agile__lease_offset(const agile__lease *l)
{
    return l->offset;
}

uint64_t agile__lease_size(const agile__lease *l)
{
    return l->size;
}

int agile__lease_pool_config(agile__backend *be, int dev, unsigned chunks, uint64_t chunk_size,
                             int flags)
{
    if (!be || !dev_ok(be, dev) || chunks > AGILE_LEASE_POOL_MAX ||
        (flags & ~AGILE_LEASE_POOL_MANUAL))
        return AGILE_EINVAL;
    if (!be->ops->pool_config) return chunks ? AGILE_ENOTSUP : AGILE_OK;
    if (chunks) {
        uint64_t gran = be->ops->granularity(be, dev);
        if (chunk_size == 0 || (chunk_size & (gran - 1)) || chunk_size > (1ull << 40))
            return AGILE_EINVAL;
    }
    return be->ops->pool_config(be, dev, chunks, chunks ? chunk_size : 0, flags);
}

int agile__lease_pool_fill(agile__backend *be, int dev)
{
    if (!be || !dev_ok(be, dev)) return AGILE_EINVAL;
    return be->ops->pool_fill ? be->ops->pool_fill(be, dev) : AGILE_OK;
}

int agile__lease_pool_stats(agile__backend *be, int dev, agile__pool_stats *out)
{
    if (!be || !out || !dev_ok(be, dev)) return AGILE_EINVAL;
    memset(out, 0, sizeof *out);
    if (be->ops->pool_stats) be->ops->pool_stats(be, dev, out);
    return AGILE_OK;
}

int agile__pmem_alloc(agile__backend *be, int dev, uint64_t size, agile__pmem **out, uint64_t *addr)
{
    int rv = AGILE_OK;
    agile__pmem *p = NULL;

    if (!out || !addr || size == 0 || !dev_ok(be, dev)) return AGILE_EINVAL;
    p = calloc(1, sizeof *p);
    if (!p) return AGILE_ENOMEM;
    p->be = be;
    p->dev = dev;
    p->size = size;
    AGILE_TRY(be->ops->pmem_alloc(p));
    *addr = p->addr;
    *out = p;
    p = NULL;
out:
    free(p);
    return rv;
}

uint64_t agile__pmem_addr(const agile__pmem *p)
{
    return p ? p->addr : 0;
}

void agile__pmem_free(agile__pmem *p)
{
    if (!p) return;
    p->be->ops->pmem_free(p);
    free(p);
}

int agile__backend_memset(agile__backend *be, int dev, uint64_t addr, int value, uint64_t n)
{
    if (!dev_ok(be, dev)) return AGILE_EINVAL;
    if (n == 0) return AGILE_OK;
    return be->ops->memset(be, dev, addr, value, n);
}

int agile__backend_memcpy(agile__backend *be, int dev, uint64_t dst, uint64_t src, uint64_t n)
{
    if (!dev_ok(be, dev)) return AGILE_EINVAL;
    if (n == 0) return AGILE_OK;
    return be->ops->memcpy(be, dev, dst, src, n);
}

int agile__backend_enter(agile__backend *be, int dev)
{
    if (!dev_ok(be, dev)) return AGILE_EINVAL;
    return be->ops->enter(be, dev);
}

void agile__backend_leave(agile__backend *be)
{
    be->ops->leave(be);
}

int agile__backend_reset(agile__backend *be, int dev, uint64_t *ns)
{
    uint64_t t = 0;
    if (!be || !dev_ok(be, dev)) return AGILE_EINVAL;
    if (!be->ops->reset) return AGILE_ENOTSUP;
    return be->ops->reset(be, dev, ns ? ns : &t);
}

unsigned agile__backend_generation(agile__backend *be, int dev)
{
    if (!be || !dev_ok(be, dev) || !be->ops->generation) return 0;
    return be->ops->generation(be, dev);
}

void *agile__backend_cuda_context(agile__backend *be, int dev)
{
    if (!dev_ok(be, dev)) return NULL;
    return be->ops->cuda_context(be, dev);
}

int agile__backend_read(agile__backend *be, int dev, void *dst, uint64_t src, uint64_t n)
{
    if (!dev_ok(be, dev) || (!dst && n)) return AGILE_EINVAL;
    if (n == 0) return AGILE_OK;
    return be->ops->read(be, dev, dst, src, n);
}

int agile__backend_write(agile__backend *be, int dev, uint64_t dst, const void *src, uint64_t n)
{
    if (!dev_ok(be, dev) || (!src && n)) return AGILE_EINVAL;
    if (n == 0) return AGILE_OK;
    return be->ops->write(be, dev, dst, src, n);
}

/* ---- queues ----------------------------------------------------------------------------- */

void agile__backend_queue_caps(const agile__backend *be, agile__queue_caps *out)
{
    memset(out, 0, sizeof *out);
    if (be->ops->queue) be->ops->queue->caps(out);
}

/* Q(be): the backend's queue operations, or AGILE_ENOTSUP from the calling function. */
#define Q(be)                                                                                      \
    const agile__queue_ops *q = (be)->ops->queue;                                                  \
    if (!q) return AGILE_ENOTSUP

int agile__stream_create(agile__backend *be, agile__stream **out)
{
    Q(be);
    if (!out) return AGILE_EINVAL;
    return q->stream_create(out);
}

void agile__stream_destroy(agile__backend *be, agile__stream *s)
{
    if (s && be->ops->queue) be->ops->queue->stream_destroy(s);
}

int agile__stream_query(agile__backend *be, agile__stream *s)
{
    Q(be);
    return q->stream_query(s);
}

int agile__stream_sync(agile__backend *be, agile__stream *s)
{
    Q(be);
    return q->stream_sync(s);
}

void *agile__stream_handle(agile__stream *s)
{
    return s;
}

int agile__stream_memcpy(agile__backend *be, agile__stream *s, uint64_t dst, uint64_t src,
                         uint64_t n)
{
    Q(be);
    return q->memcpy(s, dst, src, n);
}

int agile__stream_memset8(agile__backend *be, agile__stream *s, uint64_t dst, uint8_t value,
                          uint64_t n)
{
    Q(be);
    return q->memset8(s, dst, value, n);
}

int agile__stream_wait32(agile__backend *be, agile__stream *s, uint64_t addr, uint32_t value,
                         int cond)
{
    Q(be);
    if (cond != AGILE_STREAM_WAIT_GEQ && cond != AGILE_STREAM_WAIT_EQ) return AGILE_EINVAL;
    return q->wait32(s, addr, value, cond);
}

int agile__stream_write32(agile__backend *be, agile__stream *s, uint64_t addr, uint32_t value)
{
    Q(be);
    return q->write32(s, addr, value);
}

int agile__event_create(agile__backend *be, agile__event **out)
{
    Q(be);
    if (!out) return AGILE_EINVAL;
    return q->event_create(out);
}

int agile__event_record(agile__backend *be, agile__event *e, agile__stream *s)
{
    Q(be);
    return q->event_record(e, s);
}

int agile__event_query(agile__backend *be, agile__event *e)
{
    Q(be);
    return q->event_query(e);
}

void agile__event_destroy(agile__backend *be, agile__event *e)
{
    if (e && be->ops->queue) be->ops->queue->event_destroy(e);
}

int agile__kmodule_load(agile__backend *be, const void *image, agile__kmodule **out)
{
    Q(be);
    if (!image || !out) return AGILE_EINVAL;
    return q->kmodule_load(image, out);
}

void agile__kmodule_unload(agile__backend *be, agile__kmodule *m)
{
    if (m && be->ops->queue) be->ops->queue->kmodule_unload(m);
}

int agile__kmodule_function(agile__backend *be, agile__kmodule *m, const char *name,
                            agile__kfunc **out)
{
    Q(be);
    if (!m || !name || !out) return AGILE_EINVAL;
    return q->kmodule_function(m, name, out);
}

int agile__kfunc_set_dyn_smem(agile__backend *be, agile__kfunc *f, uint32_t bytes)
{
    Q(be);
    if (!f || bytes > INT32_MAX) return AGILE_EINVAL;
    return q->kfunc_set_dyn_smem(f, bytes);
}

int agile__launch(agile__backend *be, agile__stream *s, agile__kfunc *f,
                  const agile__launch_dims *d, void **params)
{
    Q(be);
    if (!f || !d) return AGILE_EINVAL;
    return q->launch(s, f, d, params);
}

int agile__backend_probe(agile__backend *be)
{
    return be->ops->queue ? be->ops->queue->probe() : AGILE_OK;
}

bool agile__backend_fault_take(agile__backend *be)
{
    return be->ops->queue && be->ops->queue->fault_take();
}

#undef Q

bool agile__backend_err_lost(int err)
{
    return agile__cu_sticky_err(err);
}

int agile__backend_err_note(int err, const char *what)
{
    if (agile_err_class(err) != AGILE_ECUDA) return err;
    return agile__cu_err((CUresult)(err & AGILE_ERR_CODE_MASK), what);
}

const char *agile__backend_err_name(int err)
{
    if (agile_err_class(err) == AGILE_ECUDA)
        return agile__cu_name((CUresult)(err & AGILE_ERR_CODE_MASK));
    return agile_strerror(err);
}

int agile__backend_err_kernel_fault(void)
{
    return agile__cu_err(CUDA_ERROR_LAUNCH_FAILED, NULL);
}
