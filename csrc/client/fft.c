/* libagile fft: plans and execs of the worker's fft module over the control plane.
 *
 * The desc is validated here with the module's own codec (proto/fft_plan.c),
 * so a malformed request fails before a round trip with the same rule the worker applies;
 * the worker validates again, as it does for any untrusted client. */
#include "client_int.h"

#include <stdlib.h>
#include <string.h>

#include "agile/fft.h"
#include "agile/ring.h"
#include "cudadrv.h"
#include "fft_plan.h"

#define FFT_MODULE ((uint32_t)AGILE_MODULE_ID_FFT)

/* What the default client knows about its plans (c->objs, AGILE_OBJ_PLAN): the device (to
 * pick the window) and extents. */
typedef struct cl_plan {
    int dev;
    uint64_t in_bytes, out_bytes;
} cl_plan;

static int plan_find(agile_handle_t h, cl_plan *out)
{
    agile_client *c = agile__default_peek();
    return c && agile__objtab_get(&c->objs, h, AGILE_OBJ_PLAN, out, sizeof *out);
}

static int mod_ctl(uint32_t op, int dev, const uint8_t *payload, size_t len, uint64_t *handle,
                   uint8_t *out, size_t outcap, size_t *outlen)
{
    agile_client *c;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv = AGILE_OK;
    AGILE_TRY(agile_default_client(&c));
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MOD_CTL;
    m.u.mod_ctl_req.module = FFT_MODULE;
    m.u.mod_ctl_req.op = op;
    m.u.mod_ctl_req.device = (uint32_t)dev;
    m.u.mod_ctl_req.payload = agile__blob_of(payload, len);
    AGILE_TRY(agile__call(c, &m, &rep, &buf));
    if (handle) *handle = rep.u.mod_ctl_rep.handle;
    if (out) {
        size_t n = AGILE_MIN(outcap, (size_t)rep.u.mod_ctl_rep.payload.n);
        memcpy(out, rep.u.mod_ctl_rep.payload.p, n);
        *outlen = n;
    }
out:
    free(buf);
    return rv;
}

static int to_u64(long long v, uint64_t *out)
{
    if (v < 0) return AGILE_EINVAL;
    *out = (uint64_t)v;
    return AGILE_OK;
}

AGILE_API int agile_fft_plan_many(int device, int rank, const long long *n,
                                  const long long *inembed, long long istride, long long idist,
                                  const long long *onembed, long long ostride, long long odist,
                                  int type, long long batch, int inplace, agile_handle_t *plan)
{
    agile__fft_desc d;
    uint8_t enc[AGILE_FFT_DESC_WIRE_SIZE], rbuf[24];
    agile__wbuf w = {enc, sizeof enc, 0, 0};
    agile__rbuf r;
    uint64_t nn[3] = {0, 0, 0}, h = 0, bt;
    size_t rlen = 0;
    cl_plan *p = NULL;
    agile_client *c;
    int rv = AGILE_OK;

    if (!plan || !n || rank < 1 || rank > 3 || device < 0 || device >= AGILE_MAX_DEV ||
        batch < 0) {
        agile__set_last_error("agile_fft_plan_many: bad arguments (rank 1..3, n and plan "
                              "non-NULL, batch >= 0)");
        return AGILE_EINVAL;
    }
    for (int i = 0; i < rank; i++)
        AGILE_TRY(to_u64(n[i], &nn[i]));
    AGILE_TRY(to_u64(batch, &bt));
    agile__fft_desc_init_basic(&d, (uint32_t)type, (uint32_t)rank, nn, bt, inplace);
    if (inembed && onembed) {
        d.flags |= AGILE_FFT_F_ADVANCED;
        for (int i = 0; i < rank; i++) {
            AGILE_TRY(to_u64(inembed[i], &d.inembed[i]));
            AGILE_TRY(to_u64(onembed[i], &d.onembed[i]));
        }
        AGILE_TRY(to_u64(istride, &d.istride));
        AGILE_TRY(to_u64(idist, &d.idist));
        AGILE_TRY(to_u64(ostride, &d.ostride));
        AGILE_TRY(to_u64(odist, &d.odist));
    }
    if ((rv = agile__fft_desc_validate(&d)) != AGILE_OK) {
        agile__set_last_error("agile_fft_plan_many: unsupported or inconsistent plan (type %#x, "
                              "rank %d): sizes, strides, embeds and in-place layout must be "
                              "cuFFT-valid",
                              (unsigned)type, rank);
        goto out;
    }
    agile__fft_desc_encode(&w, &d);
    if (!(p = calloc(1, sizeof *p))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    AGILE_TRY(agile_default_client(&c)); /* the plan's owner; mod_ctl asks it */
    AGILE_TRY(mod_ctl(AGILE_FFT_OP_PLAN_CREATE, device, enc, w.len, &h, rbuf, sizeof rbuf, &rlen));
    r = (agile__rbuf){rbuf, rlen, 0, 0};
    p->dev = device;
    p->in_bytes = agile__get_u64(&r);
    p->out_bytes = agile__get_u64(&r);
    AGILE_TRY(agile__objtab_add(&c->objs, h, AGILE_OBJ_PLAN, p, NULL));
    p = NULL;
    *plan = h;
out:
    free(p);
    return rv;
}

static int in_window(int dev, const void *ptr)
{
    uint64_t base, size, a = (uint64_t)(uintptr_t)ptr;
    return agile_pool_window(dev, &base, &size) == AGILE_OK && a >= base && a - base < size;
}

/* [ptr, ptr + n) inside device's window (n 0: ptr inside). */
static int extent_in_window(int dev, const void *ptr, uint64_t n)
{
    uint64_t base, size, a = (uint64_t)(uintptr_t)ptr;
    return agile_pool_window(dev, &base, &size) == AGILE_OK && a >= base && a - base < size &&
           n <= size - (a - base);
}

static void exec_encode(agile_handle_t plan, const void *in, void *out, int direction,
                        uint8_t enc[AGILE_FFT_EXEC_ARGS_SIZE], size_t *len)
{
    agile__fft_exec_args a;
    agile__wbuf w = {enc, AGILE_FFT_EXEC_ARGS_SIZE, 0, 0};
    a.plan = plan;
    a.in = (uint64_t)(uintptr_t)in;
    a.out = (uint64_t)(uintptr_t)out;
    a.direction = direction;
    a.flags = 0;
    agile__fft_exec_args_encode(&w, &a);
    *len = w.len;
}

AGILE_API int agile_fft_exec(agile_handle_t plan, const void *in, void *out, int direction,
                             void *stream)
{
    uint8_t enc[AGILE_FFT_EXEC_ARGS_SIZE];
    size_t len;
    agile_client *c;
    cl_plan p;
    int dev = -1, rv = AGILE_OK;

    if (plan_find(plan, &p)) {
        dev = p.dev;
    } else {
        /* Not one of ours: let the worker say so (EHANDLE), on the buffer's device. */
        for (int d = 0; d < AGILE_MAX_DEV && dev < 0; d++)
            if (in_window(d, in)) dev = d;
    }
    if (dev < 0 || !in_window(dev, in) || !in_window(dev, out)) {
        agile__set_last_error("agile_fft_exec: in (%p) and out (%p) must come from agile_malloc "
                              "on the plan's device",
                              in, (void *)out);
        return AGILE_EBOUNDS;
    }
    AGILE_TRY(agile_default_client(&c));
    if (c->info.backend == AGILE_BACKEND_KIND_CUDA && agile__cu.cuStreamSynchronize) {
        /* The worker reads `in` from its own context: what the stream queued must be done. */
        CUresult r = agile__cu.cuStreamSynchronize((CUstream)stream);
        if (r != CUDA_SUCCESS) {
            rv = agile__cu_err(r, "cuStreamSynchronize before fft exec");
            agile__set_last_error("agile_fft_exec: the stream failed before the transform");
            goto out;
        }
    }
    exec_encode(plan, in, out, direction, enc, &len);
    AGILE_TRY(
        mod_ctl(AGILE_MODULE_CTL_EXEC | AGILE_FFT_OP_EXEC, dev, enc, len, NULL, NULL, 0, NULL));
out:
    return rv;
}

AGILE_API int agile_fft_exec_async(agile_handle_t plan, const void *in, void *out, int direction,
                                   void *stream)
{
    uint8_t enc[AGILE_FFT_EXEC_ARGS_SIZE];
    size_t len;
    cl_plan p;

    if (!plan_find(plan, &p)) {
        agile__set_last_error("agile_fft_exec_async: %#llx is not a plan of this process",
                              (unsigned long long)plan);
        return AGILE_EHANDLE;
    }
    /* The worker checks again (it trusts nothing); checking here makes the common mistakes
     * synchronous errors instead of barrier errors. */
    if (!extent_in_window(p.dev, in, p.in_bytes) || !extent_in_window(p.dev, out, p.out_bytes)) {
        agile__set_last_error("agile_fft_exec_async: the plan reads %llu bytes at %p and writes "
                              "%llu at %p: both must lie in this tenant's pool window on device %d",
                              (unsigned long long)p.in_bytes, in, (unsigned long long)p.out_bytes,
                              (void *)out, p.dev);
        return AGILE_EBOUNDS;
    }
    if (direction != AGILE_FFT_DIR_FORWARD && direction != AGILE_FFT_DIR_INVERSE) {
        agile__set_last_error("agile_fft_exec_async: direction must be -1 or +1");
        return AGILE_EINVAL;
    }
    exec_encode(plan, in, out, direction, enc, &len);
    return agile_ring_mod_op(NULL, p.dev, FFT_MODULE, AGILE_FFT_OP_EXEC, enc, len, stream);
}

/* Take plan out of the default client's table (NULL: not one of its plans). */
static cl_plan *plan_unlink(agile_handle_t plan)
{
    agile_client *c = agile__default_peek();
    return c ? agile__objtab_take(&c->objs, plan, AGILE_OBJ_PLAN) : NULL;
}

/* Put p back (a failed destroy); if that fails the plan stays the worker's until the session
 * ends, unknown here. */
static void plan_relink(agile_handle_t plan, cl_plan *p)
{
    agile_client *c = agile__default_peek();
    if (!c || agile__objtab_add(&c->objs, plan, AGILE_OBJ_PLAN, p, NULL) != AGILE_OK) free(p);
}

AGILE_API int agile_fft_destroy(agile_handle_t plan)
{
    uint8_t enc[8];
    agile__wbuf w = {enc, sizeof enc, 0, 0};
    cl_plan known;
    int dev = plan_find(plan, &known) ? known.dev : 0, rv;
    agile__put_u64(&w, plan);
    rv = mod_ctl(AGILE_FFT_OP_PLAN_DESTROY, dev, enc, w.len, NULL, NULL, 0, NULL);
    /* Forgotten here once the worker has let it go (a concurrent exec keeps working until
     * then); kept when the worker still holds it. */
    if (rv == AGILE_OK || rv == AGILE_EHANDLE) free(plan_unlink(plan));
    return rv;
}

AGILE_API int agile_fft_destroy_async(agile_handle_t plan, void *stream)
{
    uint8_t enc[8];
    agile__wbuf w = {enc, sizeof enc, 0, 0};
    int rv;
    cl_plan *p = plan_unlink(plan);
    if (!p) {
        agile__set_last_error("agile_fft_destroy_async: %#llx is not a plan of this process",
                              (unsigned long long)plan);
        return AGILE_EHANDLE;
    }
    agile__put_u64(&w, plan);
    rv = agile_ring_mod_op(NULL, p->dev, FFT_MODULE, AGILE_FFT_DOP_PLAN_DESTROY, enc, w.len,
                           stream);
    if (rv != AGILE_OK) {
        plan_relink(plan, p);
        return rv;
    }
    free(p);
    return AGILE_OK;
}

AGILE_API int agile_fft_cache_stats(agile_fft_stats *out)
{
    uint8_t buf[9 * 8];
    size_t len = 0;
    uint64_t v[9];
    agile__rbuf r;
    int rv = AGILE_OK;
    if (!out) return AGILE_EINVAL;
    AGILE_TRY(mod_ctl(AGILE_FFT_OP_STATS, 0, NULL, 0, NULL, buf, sizeof buf, &len));
    r = (agile__rbuf){buf, len, 0, 0};
    for (int i = 0; i < 9; i++)
        v[i] = agile__get_u64(&r);
    if (r.bad) {
        rv = AGILE_EPROTO;
        goto out;
    }
    out->hits = v[0];
    out->misses = v[1];
    out->evictions = v[2];
    out->create_failures = v[3];
    out->entries = v[4];
    out->in_use = v[5];
    out->work_bytes = v[6];
    out->max_entries = v[7];
    out->max_work_bytes = v[8];
out:
    return rv;
}

AGILE_API int agile_fft_plan_extent(agile_handle_t plan, uint64_t *in_bytes, uint64_t *out_bytes)
{
    cl_plan p;
    if (!plan_find(plan, &p)) {
        agile__set_last_error("agile_fft_plan_extent: not a plan of this process");
        return AGILE_EHANDLE;
    }
    if (in_bytes) *in_bytes = p.in_bytes;
    if (out_bytes) *out_bytes = p.out_bytes;
    return AGILE_OK;
}
