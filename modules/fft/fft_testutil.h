/* fft_testutil.h — random plan descriptions for the fft unit tests (header-only). */
#ifndef AGILE_FFT_TESTUTIL_H
#define AGILE_FFT_TESTUTIL_H

#include "fft.h"

#include <string.h>

static uint64_t tu_rng = 0x9e3779b97f4a7c15ull;

static inline uint64_t tu_rand(void)
{
    /* xorshift64*: reproducible across runs and platforms */
    tu_rng ^= tu_rng >> 12;
    tu_rng ^= tu_rng << 25;
    tu_rng ^= tu_rng >> 27;
    return tu_rng * 0x2545f4914f6cdd1dull;
}

static inline uint64_t tu_range(uint64_t lo, uint64_t hi)
{
    return lo + tu_rand() % (hi - lo + 1);
}

static const uint32_t tu_types[6] = {AGILE_FFT_C2C, AGILE_FFT_Z2Z, AGILE_FFT_R2C,
                                     AGILE_FFT_D2Z, AGILE_FFT_C2R, AGILE_FFT_Z2D};

/* A random valid small desc: any type, rank 1..3, basic or advanced (strided, embedded,
 * padded or interleaved batches), in-place or not. Outputs never alias. */
static inline void tu_random_desc(agile__fft_desc *d, uint64_t maxn)
{
    agile__fft_side in, out;
    memset(d, 0, sizeof *d);
    d->type = tu_types[tu_rand() % 6];
    d->rank = (uint32_t)tu_range(1, 3);
    for (uint32_t k = 0; k < d->rank; k++)
        d->n[k] = tu_range(1, d->rank == 1 ? maxn * 3 : maxn);
    d->batch = tu_range(1, 4);
    if (tu_rand() % 4 == 0) d->flags |= AGILE_FFT_F_INPLACE;
    if (tu_rand() % 2 == 0) return; /* basic: validate fills in the layout */
    d->flags |= AGILE_FFT_F_ADVANCED;
    agile__fft_sides(d, &in, &out);
    if (d->flags & AGILE_FFT_F_INPLACE) {
        if (agile__fft_type_is_c2c(d->type)) {
            uint64_t prod = 1;
            d->istride = d->ostride = tu_range(1, 3);
            for (uint32_t k = 0; k < d->rank; k++) {
                d->inembed[k] = d->onembed[k] = in.dims[k] + (k ? tu_range(0, 2) : 0);
                prod *= d->inembed[k];
            }
            d->idist = d->odist = prod * d->istride + tu_range(0, 3);
        } else {
            /* real side = complex side reinterpreted: unit strides, doubled last embed */
            int real_in = d->type == AGILE_FFT_R2C || d->type == AGILE_FFT_D2Z;
            uint64_t *re = real_in ? d->inembed : d->onembed,
                     *ce = real_in ? d->onembed : d->inembed;
            const agile__fft_side *cs = real_in ? &out : &in;
            uint64_t prod = 1, cd;
            for (uint32_t k = 0; k < d->rank; k++) {
                ce[k] = cs->dims[k] + (k ? tu_range(0, 2) : 0);
                re[k] = k == d->rank - 1 ? 2 * ce[k] : ce[k];
                prod *= ce[k];
            }
            cd = prod + tu_range(0, 3);
            d->istride = d->ostride = 1;
            if (real_in) {
                d->odist = cd;
                d->idist = 2 * cd;
            } else {
                d->idist = cd;
                d->odist = 2 * cd;
            }
        }
        return;
    }
    for (int side = 0; side < 2; side++) {
        const agile__fft_side *s = side ? &out : &in;
        uint64_t *embed = side ? d->onembed : d->inembed,
                 *stride = side ? &d->ostride : &d->istride, *dist = side ? &d->odist : &d->idist,
                 prod = 1;
        for (uint32_t k = 0; k < d->rank; k++) {
            embed[k] = s->dims[k] + (k ? tu_range(0, 2) : 0);
            prod *= embed[k];
        }
        if (tu_rand() % 4 == 0) {
            /* interleaved batches: element b of every transform side by side */
            *stride = d->batch + tu_range(0, 2);
            *dist = 1;
        } else {
            *stride = tu_range(1, 3);
            *dist = prod * *stride + tu_range(0, 3);
        }
    }
}

/* Visit every element index a side touches. */
static inline void tu_side_foreach(const agile__fft_side *s, void (*fn)(uint64_t idx, void *arg),
                                   void *arg)
{
    uint64_t d0 = s->dims[0], d1 = s->rank > 1 ? s->dims[1] : 1, d2 = s->rank > 2 ? s->dims[2] : 1;
    uint64_t e1 = s->rank > 1 ? s->embed[1] : 1, e2 = s->rank > 2 ? s->embed[2] : 1;
    for (uint64_t b = 0; b < s->batch; b++)
        for (uint64_t i0 = 0; i0 < d0; i0++)
            for (uint64_t i1 = 0; i1 < d1; i1++)
                for (uint64_t i2 = 0; i2 < d2; i2++) {
                    uint64_t lin;
                    if (s->rank == 1)
                        lin = i0;
                    else if (s->rank == 2)
                        lin = i0 * e1 + i1;
                    else
                        lin = (i0 * e1 + i1) * e2 + i2;
                    fn(b * s->dist + s->stride * lin, arg);
                }
}

#endif
