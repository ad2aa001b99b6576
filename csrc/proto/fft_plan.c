/* fft_plan.c — fft plan descriptions: validation/normalisation, wire codec, extents, bounds.
 * Everything here runs on untrusted input: no arithmetic may wrap, every product is checked. */
#include "fft_plan.h"

#include <string.h>

const char *agile__fft_type_name(uint32_t type)
{
    switch (type) {
#define X(name, v)                                                                                 \
    case v:                                                                                        \
        return #name;
        AGILE_FFT_TYPE_LIST(X)
#undef X
    default:
        return "?";
    }
}

int agile__fft_type_valid(uint32_t type)
{
    switch (type) {
#define X(name, v) case v:
        AGILE_FFT_TYPE_LIST(X)
#undef X
        return 1;
    default:
        return 0;
    }
}

int agile__fft_type_double(uint32_t type)
{
    return type == AGILE_FFT_Z2Z || type == AGILE_FFT_D2Z || type == AGILE_FFT_Z2D;
}

int agile__fft_type_is_c2c(uint32_t type)
{
    return type == AGILE_FFT_C2C || type == AGILE_FFT_Z2Z;
}

static int type_real_in(uint32_t type)
{
    return type == AGILE_FFT_R2C || type == AGILE_FFT_D2Z;
}
static int type_real_out(uint32_t type)
{
    return type == AGILE_FFT_C2R || type == AGILE_FFT_Z2D;
}

/* The side's logical dims and element size; the layout fields are not touched. */
static void side_shape(const agile__fft_desc *d, int output, agile__fft_side *s)
{
    int is_real = output ? type_real_out(d->type) : type_real_in(d->type);
    uint32_t scalar = agile__fft_type_double(d->type) ? 8u : 4u;
    memset(s, 0, sizeof *s);
    s->rank = d->rank;
    s->is_complex = !is_real;
    s->elem = is_real ? scalar : 2u * scalar;
    s->batch = d->batch;
    for (uint32_t k = 0; k < d->rank && k < 3; k++)
        s->dims[k] = d->n[k];
    /* The complex side of a real transform keeps only the non-redundant half. */
    if (!is_real && (type_real_in(d->type) || type_real_out(d->type)) && d->rank >= 1 &&
        d->rank <= 3)
        s->dims[d->rank - 1] = d->n[d->rank - 1] / 2 + 1;
}

void agile__fft_sides(const agile__fft_desc *d, agile__fft_side *in, agile__fft_side *out)
{
    side_shape(d, 0, in);
    side_shape(d, 1, out);
    for (int k = 0; k < 3; k++) {
        in->embed[k] = d->inembed[k];
        out->embed[k] = d->onembed[k];
    }
    in->stride = d->istride;
    in->dist = d->idist;
    out->stride = d->ostride;
    out->dist = d->odist;
}

int agile__fft_side_extent(const agile__fft_side *s, uint64_t *bytes)
{
    uint64_t lin = 0, pitch = 1, t, idx;
    if (s->rank < 1 || s->rank > 3 || s->batch < 1 || s->stride < 1 || s->elem == 0)
        return AGILE_EINVAL;
    /* Highest element: every index at its maximum (all coefficients are non-negative). */
    for (int k = (int)s->rank - 1; k >= 0; k--) {
        if (s->dims[k] < 1) return AGILE_EINVAL;
        if (__builtin_mul_overflow(s->dims[k] - 1, pitch, &t) ||
            __builtin_add_overflow(lin, t, &lin))
            return AGILE_EINVAL;
        if (k > 0 && __builtin_mul_overflow(pitch, s->embed[k], &pitch)) return AGILE_EINVAL;
    }
    if (__builtin_mul_overflow(s->stride, lin, &idx) ||
        __builtin_mul_overflow(s->batch - 1, s->dist, &t) || __builtin_add_overflow(idx, t, &idx) ||
        __builtin_add_overflow(idx, 1, &idx) || __builtin_mul_overflow(idx, (uint64_t)s->elem, &t))
        return AGILE_EINVAL;
    if (t > AGILE_FFT_MAX_EXTENT) return AGILE_EINVAL;
    *bytes = t;
    return AGILE_OK;
}

int agile__fft_extent(const agile__fft_desc *d, uint64_t *in_bytes, uint64_t *out_bytes)
{
    agile__fft_side in, out;
    int rv = AGILE_OK;
    if (d->rank < 1 || d->rank > 3 || !agile__fft_type_valid(d->type)) return AGILE_EINVAL;
    agile__fft_sides(d, &in, &out);
    AGILE_TRY(agile__fft_side_extent(&in, in_bytes));
    AGILE_TRY(agile__fft_side_extent(&out, out_bytes));
out:
    return rv;
}

/* Basic layout of one side: contiguous; the real side of an in-place real transform is
 * padded to 2*(n/2+1) in its last dimension (cuFFT's and FFTW's in-place convention). */
static int side_basic(const agile__fft_desc *d, int output, uint64_t embed[3], uint64_t *stride,
                      uint64_t *dist)
{
    agile__fft_side s;
    uint64_t prod = 1;
    int real_side;
    side_shape(d, output, &s);
    real_side = !s.is_complex && (type_real_in(d->type) || type_real_out(d->type));
    for (uint32_t k = 0; k < 3; k++)
        embed[k] = k < d->rank ? s.dims[k] : 0;
    if (real_side && (d->flags & AGILE_FFT_F_INPLACE))
        embed[d->rank - 1] = 2 * (d->n[d->rank - 1] / 2 + 1); /* n <= 2^32: no wrap */
    for (uint32_t k = 0; k < d->rank; k++)
        if (__builtin_mul_overflow(prod, embed[k], &prod)) return AGILE_EINVAL;
    *stride = 1;
    *dist = prod;
    return AGILE_OK;
}

int agile__fft_inplace_consistent(const agile__fft_desc *d)
{
    uint32_t r = d->rank;
    const uint64_t *re, *ce;
    uint64_t rs, cs, rd, cd;
    if (r < 1 || r > 3) return 0;
    if (agile__fft_type_is_c2c(d->type)) {
        if (d->istride != d->ostride || (d->batch > 1 && d->idist != d->odist)) return 0;
        for (uint32_t k = 1; k < r; k++)
            if (d->inembed[k] != d->onembed[k]) return 0;
        return 1;
    }
    /* Real transform: the complex side, reinterpreted as pairs of reals, must be the real
     * side. That pins unit strides (a strided real element 2k+1 would land between complex
     * elements), equal outer embeds, a real last embed of exactly twice the complex one and
     * a real batch distance of twice the complex one. */
    if (type_real_in(d->type)) {
        re = d->inembed, ce = d->onembed, rs = d->istride, cs = d->ostride, rd = d->idist,
        cd = d->odist;
    } else {
        re = d->onembed, ce = d->inembed, rs = d->ostride, cs = d->istride, rd = d->odist,
        cd = d->idist;
    }
    if (rs != 1 || cs != 1) return 0;
    for (uint32_t k = 1; k + 1 < r; k++)
        if (re[k] != ce[k]) return 0;
    if (r >= 2 && (ce[r - 1] > UINT64_MAX / 2 || re[r - 1] != 2 * ce[r - 1])) return 0;
    if (d->batch > 1 && (cd > UINT64_MAX / 2 || rd != 2 * cd)) return 0;
    return 1;
}

void agile__fft_desc_init_basic(agile__fft_desc *d, uint32_t type, uint32_t rank, const uint64_t *n,
                                uint64_t batch, int inplace)
{
    memset(d, 0, sizeof *d);
    d->type = type;
    d->rank = rank;
    d->batch = batch;
    d->flags = inplace ? AGILE_FFT_F_INPLACE : 0;
    for (uint32_t k = 0; k < rank && k < 3; k++)
        d->n[k] = n[k];
}

static int in_range(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v >= lo && v <= hi;
}

int agile__fft_desc_validate(agile__fft_desc *d)
{
    agile__fft_side in, out;
    uint64_t ib, ob;
    int rv = AGILE_OK;
    if (!agile__fft_type_valid(d->type) || d->rank < 1 || d->rank > 3 ||
        (d->flags & ~AGILE_FFT_F_ALL))
        return AGILE_EINVAL;
    d->spare = 0;
    for (uint32_t k = 0; k < 3; k++) {
        if (k < d->rank) {
            if (!in_range(d->n[k], 1, AGILE_FFT_MAX_N)) return AGILE_EINVAL;
        } else {
            d->n[k] = 0;
        }
    }
    if (!in_range(d->batch, 1, AGILE_FFT_MAX_BATCH)) return AGILE_EINVAL;

    if ((d->flags & AGILE_FFT_F_ADVANCED) != AGILE_FFT_F_ADVANCED) {
        /* cuFFT: one NULL embed makes the whole layout basic, both sides. Fill in the basic
         * values so that what is bounds-checked is what gets executed. */
        d->flags &= ~AGILE_FFT_F_ADVANCED;
        AGILE_TRY(side_basic(d, 0, d->inembed, &d->istride, &d->idist));
        AGILE_TRY(side_basic(d, 1, d->onembed, &d->ostride, &d->odist));
    } else {
        side_shape(d, 0, &in);
        side_shape(d, 1, &out);
        if (!in_range(d->istride, 1, AGILE_FFT_MAX_STRIDE) ||
            !in_range(d->ostride, 1, AGILE_FFT_MAX_STRIDE) ||
            !in_range(d->idist, 1, AGILE_FFT_MAX_STRIDE) ||
            !in_range(d->odist, 1, AGILE_FFT_MAX_STRIDE))
            return AGILE_EINVAL;
        for (uint32_t k = 0; k < 3; k++) {
            if (k == 0) {
                /* Never used for addressing; canonical value for the cache key. */
                d->inembed[0] = in.dims[0];
                d->onembed[0] = out.dims[0];
            } else if (k < d->rank) {
                /* A row shorter than its data would alias elements of one transform. */
                if (!in_range(d->inembed[k], in.dims[k], AGILE_FFT_MAX_STRIDE) ||
                    !in_range(d->onembed[k], out.dims[k], AGILE_FFT_MAX_STRIDE))
                    return AGILE_EINVAL;
            } else {
                d->inembed[k] = d->onembed[k] = 0;
            }
        }
    }
    agile__fft_sides(d, &in, &out);
    AGILE_TRY(agile__fft_side_extent(&in, &ib));
    AGILE_TRY(agile__fft_side_extent(&out, &ob));
    if ((d->flags & AGILE_FFT_F_INPLACE) && !agile__fft_inplace_consistent(d)) return AGILE_EINVAL;
out:
    return rv;
}

void agile__fft_desc_encode(agile__wbuf *w, const agile__fft_desc *d)
{
    agile__put_u16(w, AGILE_FFT_DESC_MAJOR);
    agile__put_u16(w, AGILE_FFT_DESC_MINOR);
    agile__put_u32(w, d->type);
    agile__put_u32(w, d->rank);
    agile__put_u32(w, d->flags);
    for (int k = 0; k < 3; k++)
        agile__put_u64(w, d->n[k]);
    agile__put_u64(w, d->batch);
    for (int k = 0; k < 3; k++)
        agile__put_u64(w, d->inembed[k]);
    agile__put_u64(w, d->istride);
    agile__put_u64(w, d->idist);
    for (int k = 0; k < 3; k++)
        agile__put_u64(w, d->onembed[k]);
    agile__put_u64(w, d->ostride);
    agile__put_u64(w, d->odist);
    agile__put_u64(w, 0); /* spare */
}

int agile__fft_desc_decode(const uint8_t *buf, size_t len, agile__fft_desc *d)
{
    agile__rbuf r = {buf, len, 0, 0};
    uint16_t major, minor;
    memset(d, 0, sizeof *d);
    major = agile__get_u16(&r);
    minor = agile__get_u16(&r);
    d->type = agile__get_u32(&r);
    d->rank = agile__get_u32(&r);
    d->flags = agile__get_u32(&r);
    for (int k = 0; k < 3; k++)
        d->n[k] = agile__get_u64(&r);
    d->batch = agile__get_u64(&r);
    for (int k = 0; k < 3; k++)
        d->inembed[k] = agile__get_u64(&r);
    d->istride = agile__get_u64(&r);
    d->idist = agile__get_u64(&r);
    for (int k = 0; k < 3; k++)
        d->onembed[k] = agile__get_u64(&r);
    d->ostride = agile__get_u64(&r);
    d->odist = agile__get_u64(&r);
    (void)agile__get_u64(&r); /* spare: ignored on receipt */
    if (r.bad || major != AGILE_FFT_DESC_MAJOR) return AGILE_EINVAL;
    /* Only a newer minor may append fields we do not know. */
    // cppcheck-suppress unsignedLessThanZero ; minor 0 today, the check is for later minors
    if (r.off != len && minor <= AGILE_FFT_DESC_MINOR) return AGILE_EINVAL;
    return agile__fft_desc_validate(d);
}

int agile__fft_desc_equal(const agile__fft_desc *a, const agile__fft_desc *b)
{
    if (a->type != b->type || a->rank != b->rank || a->flags != b->flags || a->batch != b->batch ||
        a->istride != b->istride || a->idist != b->idist || a->ostride != b->ostride ||
        a->odist != b->odist)
        return 0;
    for (int k = 0; k < 3; k++)
        if (a->n[k] != b->n[k] || a->inembed[k] != b->inembed[k] || a->onembed[k] != b->onembed[k])
            return 0;
    return 1;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    /* FNV-1a over the 8 bytes of v: keys are few and mostly small numbers. */
    for (int i = 0; i < 8; i++) {
        h ^= (v >> (8 * i)) & 0xff;
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t agile__fft_desc_hash(const agile__fft_desc *d)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = mix(h, ((uint64_t)d->type << 32) | d->rank);
    h = mix(h, d->flags);
    for (int k = 0; k < 3; k++)
        h = mix(mix(mix(h, d->n[k]), d->inembed[k]), d->onembed[k]);
    h = mix(mix(mix(h, d->batch), d->istride), d->idist);
    h = mix(mix(h, d->ostride), d->odist);
    return h;
}

/* [a, a+n) inside [base, base+size), computed without forming either end. */
static int range_in(uint64_t a, uint64_t n, uint64_t base, uint64_t size)
{
    return a >= base && a - base <= size && n <= size - (a - base);
}

int agile__fft_check_bounds(const agile__fft_desc *d, uint64_t in_addr, uint64_t out_addr,
                            uint64_t base, uint64_t size)
{
    uint64_t ib, ob;
    if (agile__fft_extent(d, &ib, &ob) != AGILE_OK) return AGILE_EBOUNDS;
    if (!range_in(in_addr, ib, base, size) || !range_in(out_addr, ob, base, size))
        return AGILE_EBOUNDS;
    if (d->flags & AGILE_FFT_F_INPLACE) {
        if (!agile__fft_inplace_consistent(d)) return AGILE_EBOUNDS;
        if (in_addr != out_addr) return AGILE_EINVAL;
    } else if ((unsigned __int128)in_addr < (unsigned __int128)out_addr + ob &&
               (unsigned __int128)out_addr < (unsigned __int128)in_addr + ib) {
        /* An out-of-place plan run on overlapping buffers has no defined result in cuFFT
         * or FFTW. 128-bit sums: a window may end at the top of the address space. */
        return AGILE_EINVAL;
    }
    return AGILE_OK;
}

void agile__fft_exec_args_encode(agile__wbuf *w, const agile__fft_exec_args *a)
{
    agile__put_u64(w, a->plan);
    agile__put_u64(w, a->in);
    agile__put_u64(w, a->out);
    agile__put_i32(w, a->direction);
    agile__put_u32(w, a->flags);
}

int agile__fft_exec_args_decode(const uint8_t *buf, size_t len, agile__fft_exec_args *a)
{
    agile__rbuf r = {buf, len, 0, 0};
    a->plan = agile__get_u64(&r);
    a->in = agile__get_u64(&r);
    a->out = agile__get_u64(&r);
    a->direction = agile__get_i32(&r);
    a->flags = agile__get_u32(&r);
    if (r.bad || r.off != len || a->flags != 0) return AGILE_EINVAL;
    return AGILE_OK;
}
