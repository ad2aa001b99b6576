/* backend_fftw.c — the host backend: FFTW 3 (double and single precision).
 *
 * Semantics match cuFFT: FFTW_FORWARD = CUFFT_FORWARD = -1, both unnormalised, same
 * advanced layout. Differences and how they are bridged:
 *  - FFTW plans are per sign: a C2C/Z2Z plan holds one FFTW plan per direction (planned
 *    together, so a cached plan is never mutated after creation).
 *  - FFTW plans know placement and alignment at planning time: placement is part of the desc
 *    (exec refuses the wrong one) and plans are made FFTW_UNALIGNED, so any element-aligned
 *    address inside a window works with the new-array execute functions.
 *  - C2R/Z2D destroy their input (FFTW_DESTROY_INPUT, FFTW's default for c2r and the only
 *    mode FFTW supports for multi-dimensional c2r). cuFFT documents the same ("out-of-place
 *    complex-to-real FFT will always overwrite input buffer"), so we do not copy the input:
 *    the clobbered bytes are the tenant's own, inside its window, inside the checked extent.
 * Threads: FFTW's planner is not thread-safe (one process-wide lock around plan creation and
 * destruction); fftw_execute_dft & co. are, so execs run concurrently.
 */
#include "fft.h"

#include <fftw3.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t planner_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct fplan {
    agile__fft_desc d;
    int dbl;
    int nplans; /* 2 for C2C/Z2Z: [0] forward, [1] inverse */
    union {
        fftw_plan d[2];
        fftwf_plan f[2];
    } p;
} fplan;

static int fits_int(uint64_t v)
{
    return v <= (uint64_t)INT_MAX;
}

static int to_ints(const agile__fft_desc *d, int n[3], int ie[3], int oe[3], int s[5])
{
    for (int k = 0; k < 3; k++) {
        if (!fits_int(d->n[k]) || !fits_int(d->inembed[k]) || !fits_int(d->onembed[k]))
            return AGILE_ENOTSUP;
        n[k] = (int)d->n[k];
        ie[k] = (int)d->inembed[k];
        oe[k] = (int)d->onembed[k];
    }
    if (!fits_int(d->batch) || !fits_int(d->istride) || !fits_int(d->idist) ||
        !fits_int(d->ostride) || !fits_int(d->odist))
        return AGILE_ENOTSUP;
    s[0] = (int)d->batch;
    s[1] = (int)d->istride;
    s[2] = (int)d->idist;
    s[3] = (int)d->ostride;
    s[4] = (int)d->odist;
    return AGILE_OK;
}

static int fftw_plan_create(agile__fft_backend *b, const agile__fft_desc *d, int device,
                            agile__fft_bplan **out)
{
    int n[3], ie[3], oe[3], s[5], rv = AGILE_OK, r = (int)d->rank;
    uint64_t ib, ob;
    void *ibuf = NULL, *obuf = NULL;
    unsigned flags = FFTW_ESTIMATE | FFTW_UNALIGNED;
    int inplace = (d->flags & AGILE_FFT_F_INPLACE) != 0, locked = 0;
    fplan *p = NULL;
    (void)b;
    (void)device;

    AGILE_TRY(to_ints(d, n, ie, oe, s));
    AGILE_TRY(agile__fft_extent(d, &ib, &ob));
    /* FFTW wants real arrays to plan on (it reads their placement; FFTW_ESTIMATE promises
     * not to touch their contents). Untouched malloc'd pages cost nothing. */
    if (inplace) {
        ibuf = obuf = malloc(AGILE_MAX(ib, ob));
    } else {
        ibuf = malloc(ib);
        obuf = malloc(ob);
    }
    p = calloc(1, sizeof *p);
    if (!ibuf || !obuf || !p) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    p->d = *d;
    p->dbl = agile__fft_type_double(d->type);
    p->nplans = agile__fft_type_is_c2c(d->type) ? 2 : 1;
    pthread_mutex_lock(&planner_mu);
    locked = 1;
    for (int i = 0; i < p->nplans; i++) {
        int sign = i == 0 ? FFTW_FORWARD : FFTW_BACKWARD;
        void *made = NULL;
        switch (d->type) {
        case AGILE_FFT_C2C:
            made = p->p.f[i] = fftwf_plan_many_dft(r, n, s[0], ibuf, ie, s[1], s[2], obuf, oe, s[3],
                                                   s[4], sign, flags);
            break;
        case AGILE_FFT_Z2Z:
            made = p->p.d[i] = fftw_plan_many_dft(r, n, s[0], ibuf, ie, s[1], s[2], obuf, oe, s[3],
                                                  s[4], sign, flags);
            break;
        case AGILE_FFT_R2C:
            made = p->p.f[i] = fftwf_plan_many_dft_r2c(r, n, s[0], ibuf, ie, s[1], s[2], obuf, oe,
                                                       s[3], s[4], flags);
            break;
        case AGILE_FFT_D2Z:
            made = p->p.d[i] = fftw_plan_many_dft_r2c(r, n, s[0], ibuf, ie, s[1], s[2], obuf, oe,
                                                      s[3], s[4], flags);
            break;
        case AGILE_FFT_C2R:
            made = p->p.f[i] = fftwf_plan_many_dft_c2r(r, n, s[0], ibuf, ie, s[1], s[2], obuf, oe,
                                                       s[3], s[4], flags | FFTW_DESTROY_INPUT);
            break;
        case AGILE_FFT_Z2D:
            made = p->p.d[i] = fftw_plan_many_dft_c2r(r, n, s[0], ibuf, ie, s[1], s[2], obuf, oe,
                                                      s[3], s[4], flags | FFTW_DESTROY_INPUT);
            break;
        default:
            rv = AGILE_EINVAL;
            goto out;
        }
        if (!made) {
            /* FFTW returns NULL only for problems it cannot solve (e.g. a layout it rejects). */
            agile__warn("fft: FFTW cannot plan %s rank %u", agile__fft_type_name(d->type), d->rank);
            rv = AGILE_ENOTSUP;
            goto out;
        }
    }
    *out = (agile__fft_bplan *)p;
    p = NULL;
out:
    if (p) {
        for (int i = 0; i < 2; i++) {
            if (p->dbl && p->p.d[i])
                fftw_destroy_plan(p->p.d[i]);
            else if (!p->dbl && p->p.f[i])
                fftwf_destroy_plan(p->p.f[i]);
        }
        free(p);
    }
    if (locked) pthread_mutex_unlock(&planner_mu);
    free(ibuf);
    if (obuf != ibuf) free(obuf);
    return rv;
}

static int fftw_exec(agile__fft_backend *b, agile__fft_bplan *bp, const agile__fft_env *env,
                     void *in, void *out, int direction)
{
    fplan *p = (fplan *)bp;
    int i = 0;
    (void)b;
    (void)env;
    if (agile__fft_type_is_c2c(p->d.type)) {
        if (direction != AGILE_FFT_FORWARD && direction != AGILE_FFT_INVERSE) return AGILE_EINVAL;
        i = direction == AGILE_FFT_FORWARD ? 0 : 1;
    }
    switch (p->d.type) {
    case AGILE_FFT_C2C:
        fftwf_execute_dft(p->p.f[i], in, out);
        break;
    case AGILE_FFT_Z2Z:
        fftw_execute_dft(p->p.d[i], in, out);
        break;
    case AGILE_FFT_R2C:
        fftwf_execute_dft_r2c(p->p.f[0], in, out);
        break;
    case AGILE_FFT_D2Z:
        fftw_execute_dft_r2c(p->p.d[0], in, out);
        break;
    case AGILE_FFT_C2R:
        fftwf_execute_dft_c2r(p->p.f[0], in, out);
        break;
    case AGILE_FFT_Z2D:
        fftw_execute_dft_c2r(p->p.d[0], in, out);
        break;
    default:
        return AGILE_EINVAL;
    }
    return AGILE_OK;
}

static void fftw_plan_destroy(agile__fft_backend *b, agile__fft_bplan *bp)
{
    fplan *p = (fplan *)bp;
    (void)b;
    if (!p) return;
    pthread_mutex_lock(&planner_mu);
    for (int i = 0; i < p->nplans; i++) {
        if (p->dbl)
            fftw_destroy_plan(p->p.d[i]);
        else
            fftwf_destroy_plan(p->p.f[i]);
    }
    pthread_mutex_unlock(&planner_mu);
    free(p);
}

static uint64_t fftw_work_size(const agile__fft_bplan *p)
{
    (void)p;
    return 0; /* FFTW keeps its scratch inside the plan, allocated at planning time */
}

static void fftw_release_tenant(agile__fft_backend *b, uint32_t tenant)
{
    (void)b;
    (void)tenant;
}

static void fftw_close(agile__fft_backend *b)
{
    free(b);
}

int agile__fft_fftw_open(agile__fft_backend **out)
{
    agile__fft_backend *b = calloc(1, sizeof *b);
    if (!b) return AGILE_ENOMEM;
    b->name = "fftw";
    b->kind = AGILE_BACKEND_KIND_HOST;
    b->plan_create = fftw_plan_create;
    b->exec = fftw_exec;
    b->plan_destroy = fftw_plan_destroy;
    b->work_size = fftw_work_size;
    b->release_tenant = fftw_release_tenant;
    b->close = fftw_close;
    *out = b;
    return AGILE_OK;
}
