/* fft_plan.h — the fft module's protocol, shared by libagile and the module: plan
 * descriptions, their wire codec, extents and bounds, the module's op numbers and the
 * data-plane exec arguments (fft_plan.c).
 *
 * Trust: every agile__fft_desc that reaches this module came from an untrusted client.
 * agile__fft_desc_decode is the only way to build one from bytes; it validates every field
 * and normalises the description, so that equal plans compare equal (the cache key) and so
 * that the layout that is bounds-checked is exactly the one handed to the FFT library
 * (never "NULL embed, let the library decide"). All sizes are 64-bit and every product is
 * overflow-checked.
 *
 * Layout semantics are cuFFT's advanced layout (cufftPlanMany), which FFTW shares:
 *   element index of (batch b, i_0..i_{r-1}) on a side =
 *       b * dist + stride * ((i_0 * embed_1 + i_1) * embed_2 + i_2)   (rank 3; shorter alike)
 * embed_0 is never used (cuFFT ignores it); the complex side of a real transform has last
 * dimension n/2+1. Elements: complex 8 (C) / 16 (Z) bytes, real 4 (R) / 8 (D) bytes.
 *
 * Basic layout (flags without both EMBED bits, cuFFT's "NULL embed"): both sides contiguous;
 * for an in-place real transform the real side is padded to 2*(n/2+1) in its last
 * dimension, as cuFFT's basic in-place layout is. Because that padding depends on whether
 * the transform runs in place, placement is part of the plan (AGILE_FFT_F_INPLACE), as it
 * is for FFTW plans, and exec refuses a call whose in/out pointers disagree with it.
 */
#ifndef AGILE_FFT_PLAN_H
#define AGILE_FFT_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* Transform types: the values of cufftType, so the cuFFT backend passes them through. */
#define AGILE_FFT_TYPE_LIST(X)                                                                     \
    X(R2C, 0x2a) X(C2R, 0x2c) X(C2C, 0x29) X(D2Z, 0x6a) X(Z2D, 0x6c) X(Z2Z, 0x69)
enum {
#define X(name, v) AGILE_FFT_##name = v,
    AGILE_FFT_TYPE_LIST(X)
#undef X
};

/* Directions, cuFFT's (and FFTW's) sign convention; transforms are unnormalised both ways. */
#define AGILE_FFT_FORWARD (-1)
#define AGILE_FFT_INVERSE 1

/* Desc flags. IN_EMBED and OUT_EMBED together select the advanced layout; with either one
 * missing the layout is basic on both sides (cuFFT: "passing inembed or onembed NULL ... the
 * other advanced parameters are ignored"), and the decoder fills the layout fields with the
 * basic values. */
#define AGILE_FFT_F_IN_EMBED 0x1u
#define AGILE_FFT_F_OUT_EMBED 0x2u
#define AGILE_FFT_F_INPLACE 0x4u
#define AGILE_FFT_F_ALL 0x7u
#define AGILE_FFT_F_ADVANCED (AGILE_FFT_F_IN_EMBED | AGILE_FFT_F_OUT_EMBED)

/* Sanity limits on what a client may describe (far above any real window, far below the
 * point where 64-bit products could overflow in the extent formula). */
#define AGILE_FFT_MAX_N (1ull << 32) /* one dimension */
#define AGILE_FFT_MAX_BATCH (1ull << 40)
#define AGILE_FFT_MAX_STRIDE (1ull << 40) /* stride, dist, embed, in elements */
#define AGILE_FFT_MAX_EXTENT (1ull << 50) /* bytes one side may span (1 PiB) */

/* Payload version of the encoded desc (module ctl PLAN_CREATE). */
#define AGILE_FFT_DESC_MAJOR 1u
#define AGILE_FFT_DESC_MINOR 0u
#define AGILE_FFT_DESC_WIRE_SIZE 136u

typedef struct agile__fft_desc {
    uint32_t type;  /* AGILE_FFT_* */
    uint32_t rank;  /* 1..3 */
    uint32_t flags; /* AGILE_FFT_F_* */
    uint32_t spare; /* 0 */
    uint64_t n[3];  /* logical sizes (the real sizes of real transforms); 0 past rank */
    uint64_t batch;
    uint64_t inembed[3], istride, idist; /* in elements of the input type */
    uint64_t onembed[3], ostride, odist; /* in elements of the output type */
} agile__fft_desc;

/* agile__fft_side: the effective layout of one side (input or output), derived from a
 * validated desc. */
typedef struct agile__fft_side {
    uint32_t rank;
    uint32_t elem; /* bytes per element */
    int is_complex;
    uint64_t dims[3];  /* logical dims on this side (last is n/2+1 on a complex side of R2C) */
    uint64_t embed[3]; /* embed[0] unused */
    uint64_t stride, dist, batch;
} agile__fft_side;

/* ---- description, codec, extents, bounds (fft_plan.c) ------------------------------- */

const char *agile__fft_type_name(uint32_t type);
int agile__fft_type_valid(uint32_t type);
int agile__fft_type_double(uint32_t type);
int agile__fft_type_is_c2c(uint32_t type); /* C2C or Z2Z: takes a direction at exec */

/* agile__fft_desc_init_basic: a basic-layout desc (convenience for callers and tests); the
 * result still has to go through agile__fft_desc_validate. */
void agile__fft_desc_init_basic(agile__fft_desc *d, uint32_t type, uint32_t rank, const uint64_t *n,
                                uint64_t batch, int inplace);

/* agile__fft_desc_validate: check every field and normalise in place (basic layout values
 * filled in, unused entries zeroed, embed[0] set to dims[0]). AGILE_EINVAL on anything
 * unsupported, out of the sanity limits, overflowing, or an in-place layout whose input and
 * output do not occupy the same bytes in the way cuFFT and FFTW require. Idempotent. */
int agile__fft_desc_validate(agile__fft_desc *d);

/* agile__fft_desc_encode: AGILE_FFT_DESC_WIRE_SIZE little-endian bytes into w (no
 * validation: tests encode invalid descs on purpose). */
void agile__fft_desc_encode(agile__wbuf *w, const agile__fft_desc *d);
/* agile__fft_desc_decode: decode + validate. Trailing bytes after the desc are ignored only
 * from a newer minor version; AGILE_EINVAL for anything malformed. */
int agile__fft_desc_decode(const uint8_t *buf, size_t len, agile__fft_desc *d);

int agile__fft_desc_equal(const agile__fft_desc *a, const agile__fft_desc *b);
uint64_t agile__fft_desc_hash(const agile__fft_desc *d);

/* agile__fft_sides: the effective input and output layouts of a validated desc. */
void agile__fft_sides(const agile__fft_desc *d, agile__fft_side *in, agile__fft_side *out);

/* agile__fft_side_extent: bytes from the side's first element to one past the last byte of
 * its highest-addressed element. AGILE_EINVAL on overflow or above AGILE_FFT_MAX_EXTENT. */
int agile__fft_side_extent(const agile__fft_side *s, uint64_t *bytes);

/* agile__fft_extent: the exact byte extents (max offset + element size) the plan reads from
 * its input and writes to its output, relative to the in/out pointers. */
int agile__fft_extent(const agile__fft_desc *d, uint64_t *in_bytes, uint64_t *out_bytes);

/* agile__fft_inplace_consistent: whether an in-place desc's input and output layouts
 * describe the same storage (identical for C2C; real side = complex side reinterpreted, unit
 * strides, padded last dimension, idist = 2*odist for R2C, mirrored for C2R). */
int agile__fft_inplace_consistent(const agile__fft_desc *d);

/* agile__fft_check_bounds: AGILE_OK when every byte the plan touches through in_addr and
 * out_addr lies in [base, base + size), with no arithmetic wrap-around. AGILE_EBOUNDS
 * otherwise, and for an in-place desc with inconsistent layouts. AGILE_EINVAL when the
 * placement disagrees with the plan (in-place plan with in != out; out-of-place plan whose
 * input and output byte ranges overlap). */
int agile__fft_check_bounds(const agile__fft_desc *d, uint64_t in_addr, uint64_t out_addr,
                            uint64_t base, uint64_t size);

/* ---- the module's ops and exec arguments ------------------------------------------------ */

/* Control ops (mod_ctl_req.op). */
#define AGILE_FFT_OP_PLAN_CREATE 1  /* payload: encoded desc; reply: handle, payload: extents */
#define AGILE_FFT_OP_PLAN_DESTROY 2 /* payload: u64 handle */
#define AGILE_FFT_OP_STATS 3        /* reply payload: the cache stats, 9 x u64 */
/* Data-plane ops. */
#define AGILE_FFT_OP_EXEC 1 /* args: agile__fft_exec_args, encoded */
/* The control op's number and payload: on a ring it runs after the execs posted before it. */
#define AGILE_FFT_DOP_PLAN_DESTROY AGILE_FFT_OP_PLAN_DESTROY

/* EXEC arguments on the data plane: 32 bytes little-endian
 *   u64 plan handle, u64 in (client address), u64 out (client address),
 *   i32 direction, u32 flags (0). */
#define AGILE_FFT_EXEC_ARGS_SIZE 32u
typedef struct agile__fft_exec_args {
    uint64_t plan, in, out;
    int32_t direction;
    uint32_t flags;
} agile__fft_exec_args;
void agile__fft_exec_args_encode(agile__wbuf *w, const agile__fft_exec_args *a);
int agile__fft_exec_args_decode(const uint8_t *buf, size_t len, agile__fft_exec_args *a);

#endif
