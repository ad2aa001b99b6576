/* fft_testlib.c — libagile_fft_test.so: ctypes entry points for tests/py/test_fft_module.py.
 * Everything goes through the real paths: the desc is wire-encoded and handed to the module's
 * ctl, execs go through the module's exec with a window (translation + bounds), on FFTW.
 *
 * A desc travels as 17 int64 fields:
 *   type rank n0 n1 n2 batch flags ie0 ie1 ie2 istride idist oe0 oe1 oe2 ostride odist */
#include "fft.h"

#include <string.h>

#define TEST_API __attribute__((visibility("default")))
#define NFIELDS 17

TEST_API void *agile_fft_test_open(uint64_t max_plans);
TEST_API void agile_fft_test_close(void *mod);
TEST_API int agile_fft_test_desc(const int64_t *f, int64_t *normalised);
TEST_API int agile_fft_test_extent(const int64_t *f, uint64_t *in_bytes, uint64_t *out_bytes);
TEST_API int agile_fft_test_check_bounds(const int64_t *f, uint64_t in, uint64_t out, uint64_t base,
                                         uint64_t size);
TEST_API int agile_fft_test_plan_create(void *mod, uint32_t tenant, const int64_t *f,
                                        uint64_t *handle, uint64_t *ext3);
TEST_API int agile_fft_test_plan_destroy(void *mod, uint32_t tenant, uint64_t handle);
TEST_API int agile_fft_test_exec(void *mod, uint32_t tenant, uint64_t handle, uint64_t in,
                                 uint64_t out, int direction, uint64_t win_base, uint64_t win_size);
TEST_API void agile_fft_test_stats(void *mod, uint64_t *st9);
TEST_API const char *agile_fft_test_err_name(int err);

static void from_fields(const int64_t *f, agile__fft_desc *d)
{
    memset(d, 0, sizeof *d);
    d->type = (uint32_t)f[0];
    d->rank = (uint32_t)f[1];
    for (int k = 0; k < 3; k++) {
        d->n[k] = (uint64_t)f[2 + k];
        d->inembed[k] = (uint64_t)f[7 + k];
        d->onembed[k] = (uint64_t)f[12 + k];
    }
    d->batch = (uint64_t)f[5];
    d->flags = (uint32_t)f[6];
    d->istride = (uint64_t)f[10];
    d->idist = (uint64_t)f[11];
    d->ostride = (uint64_t)f[15];
    d->odist = (uint64_t)f[16];
}

static void to_fields(const agile__fft_desc *d, int64_t *f)
{
    f[0] = d->type;
    f[1] = d->rank;
    for (int k = 0; k < 3; k++) {
        f[2 + k] = (int64_t)d->n[k];
        f[7 + k] = (int64_t)d->inembed[k];
        f[12 + k] = (int64_t)d->onembed[k];
    }
    f[5] = (int64_t)d->batch;
    f[6] = d->flags;
    f[10] = (int64_t)d->istride;
    f[11] = (int64_t)d->idist;
    f[15] = (int64_t)d->ostride;
    f[16] = (int64_t)d->odist;
}

void *agile_fft_test_open(uint64_t max_plans)
{
    agile__fft_backend *be;
    void *mod = NULL;
    if (agile__fft_fftw_open(&be) != AGILE_OK) return NULL;
    if (agile__fft_module_open(be, max_plans, 0, &mod) != AGILE_OK) {
        be->close(be);
        return NULL;
    }
    return mod;
}

void agile_fft_test_close(void *mod)
{
    agile__fft_module.fini(mod);
}

/* Validate + normalise, returning the layout that will run (basic layouts spelled out). */
int agile_fft_test_desc(const int64_t *f, int64_t *normalised)
{
    agile__fft_desc d;
    int rv;
    from_fields(f, &d);
    rv = agile__fft_desc_validate(&d);
    if (rv == AGILE_OK && normalised) to_fields(&d, normalised);
    return rv;
}

int agile_fft_test_extent(const int64_t *f, uint64_t *in_bytes, uint64_t *out_bytes)
{
    agile__fft_desc d;
    int rv;
    from_fields(f, &d);
    rv = agile__fft_desc_validate(&d);
    return rv == AGILE_OK ? agile__fft_extent(&d, in_bytes, out_bytes) : rv;
}

int agile_fft_test_check_bounds(const int64_t *f, uint64_t in, uint64_t out, uint64_t base,
                                uint64_t size)
{
    agile__fft_desc d;
    int rv;
    from_fields(f, &d);
    rv = agile__fft_desc_validate(&d);
    return rv == AGILE_OK ? agile__fft_check_bounds(&d, in, out, base, size) : rv;
}

int agile_fft_test_plan_create(void *mod, uint32_t tenant, const int64_t *f, uint64_t *handle,
                               uint64_t *ext3)
{
    agile__fft_desc d;
    uint8_t payload[AGILE_FFT_DESC_WIRE_SIZE], reply[64];
    agile__wbuf w = {payload, sizeof payload, 0, 0};
    agile__module_reply rep = {0, reply, sizeof reply, 0};
    agile__module_caller who = {tenant, 0, {0, 0}, NULL};
    int rv;
    from_fields(f, &d);
    agile__fft_desc_encode(&w, &d);
    rv = agile__fft_module.ctl(mod, &who, AGILE_FFT_OP_PLAN_CREATE, payload, w.len, &rep);
    if (rv == AGILE_OK) {
        agile__rbuf r = {reply, rep.len, 0, 0};
        for (int i = 0; i < 3; i++)
            ext3[i] = agile__get_u64(&r);
        *handle = rep.handle;
    }
    return rv;
}

int agile_fft_test_plan_destroy(void *mod, uint32_t tenant, uint64_t handle)
{
    uint8_t p[8];
    agile__wbuf w = {p, sizeof p, 0, 0};
    agile__module_caller who = {tenant, 0, {0, 0}, NULL};
    agile__put_u64(&w, handle);
    return agile__fft_module.ctl(mod, &who, AGILE_FFT_OP_PLAN_DESTROY, p, w.len, NULL);
}

int agile_fft_test_exec(void *mod, uint32_t tenant, uint64_t handle, uint64_t in, uint64_t out,
                        int direction, uint64_t win_base, uint64_t win_size)
{
    uint8_t args[AGILE_FFT_EXEC_ARGS_SIZE];
    agile__wbuf w = {args, sizeof args, 0, 0};
    agile__fft_exec_args a = {handle, in, out, direction, 0};
    agile__module_caller who = {tenant, 0, {win_base, win_size}, NULL};
    agile__fft_exec_args_encode(&w, &a);
    return agile__fft_module.exec(mod, &who, AGILE_FFT_OP_EXEC, args, w.len);
}

void agile_fft_test_stats(void *mod, uint64_t *st9)
{
    agile__fft_cache_stats st;
    agile__fft_cache_get_stats(agile__fft_module_cache(mod), &st);
    st9[0] = st.hits, st9[1] = st.misses, st9[2] = st.evictions, st9[3] = st.create_failures;
    st9[4] = st.entries, st9[5] = st.in_use, st9[6] = st.work_bytes;
    st9[7] = st.max_entries, st9[8] = st.max_work_bytes;
}

const char *agile_fft_test_err_name(int err)
{
    return agile_err_name(err);
}
