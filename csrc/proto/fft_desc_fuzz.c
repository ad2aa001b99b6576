/* libFuzzer target: the fft desc decoder, extents and bounds check. Any input must decode or
 * be rejected without UB; whatever decodes must re-encode to a desc that decodes equal, have
 * an extent, and pass the bounds check only where every touched byte is in the window.
 * Raw (unvalidated) field values also go through extent/bounds: no overflow UB there either. */
#include <stdlib.h>
#include <string.h>

#include "fft_plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void bounds_property(const agile__fft_desc *d, const uint8_t *tail)
{
    uint64_t in = le64(tail), out = le64(tail + 8), base = le64(tail + 16), size = le64(tail + 24);
    uint64_t ib, ob;
    int rv = agile__fft_check_bounds(d, in, out, base, size);
    if (rv == AGILE_OK) {
        /* accepted: both extents must lie inside [base, base + size), exact arithmetic */
        unsigned __int128 b = base, e = (unsigned __int128)base + size;
        if (agile__fft_extent(d, &ib, &ob) != AGILE_OK) abort();
        if (in < b || (unsigned __int128)in + ib > e || out < b || (unsigned __int128)out + ob > e)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agile__fft_desc d, back, raw;
    uint8_t *copy = malloc(size ? size : 1), enc[AGILE_FFT_DESC_WIRE_SIZE];
    size_t dlen = size >= AGILE_FFT_DESC_WIRE_SIZE + 32 ? AGILE_FFT_DESC_WIRE_SIZE : size;
    uint64_t ib, ob;
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    if (agile__fft_desc_decode(copy, dlen, &d) == AGILE_OK) {
        agile__wbuf w = {enc, sizeof enc, 0, 0};
        if (agile__fft_extent(&d, &ib, &ob) != AGILE_OK) abort();
        if (ib > AGILE_FFT_MAX_EXTENT || ob > AGILE_FFT_MAX_EXTENT) abort();
        agile__fft_desc_encode(&w, &d);
        if (w.overflow || agile__fft_desc_decode(enc, w.len, &back) != AGILE_OK ||
            !agile__fft_desc_equal(&d, &back))
            abort();
        if (dlen + 32 <= size) bounds_property(&d, copy + dlen);
    }
    if (size >= AGILE_FFT_DESC_WIRE_SIZE + 32) {
        /* the same bytes as raw fields, never validated */
        agile__rbuf r = {copy, size, 0, 0};
        memset(&raw, 0, sizeof raw);
        (void)agile__get_u32(&r);
        raw.type = agile__get_u32(&r);
        raw.rank = agile__get_u32(&r);
        raw.flags = agile__get_u32(&r);
        for (int k = 0; k < 3; k++)
            raw.n[k] = agile__get_u64(&r);
        raw.batch = agile__get_u64(&r);
        for (int k = 0; k < 3; k++)
            raw.inembed[k] = agile__get_u64(&r);
        raw.istride = agile__get_u64(&r);
        raw.idist = agile__get_u64(&r);
        for (int k = 0; k < 3; k++)
            raw.onembed[k] = agile__get_u64(&r);
        raw.ostride = agile__get_u64(&r);
        raw.odist = agile__get_u64(&r);
        (void)agile__fft_extent(&raw, &ib, &ob);
        (void)agile__fft_inplace_consistent(&raw);
        bounds_property(&raw, copy + AGILE_FFT_DESC_WIRE_SIZE);
    }
    free(copy);
    return 0;
}
