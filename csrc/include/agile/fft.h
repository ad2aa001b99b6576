/* agile/fft.h — FFTs run by the agile worker's fft module (cuFFT on the cuda backend,
 * FFTW on the host backend) on memory of this process's agile pools.
 *
 * Plans and layouts are cuFFT's: agile_fft_plan_many takes cufftPlanMany's arguments (64-bit,
 * as cufftMakePlanMany64), types are cufftType values, directions cuFFT's (-1 forward,
 * +1 inverse), transforms unnormalised. Buffers must come from agile_malloc (the worker only
 * reaches this tenant's window): a buffer outside every agile pool, or a transform whose
 * extent leaves the window, is AGILE_EBOUNDS and nothing is written.
 *
 * All functions use the process's default client (agile_default_client), block, are
 * thread-safe, and on a worker refusal set agile_last_error().
 */
#ifndef AGILE_FFT_PUBLIC_H
#define AGILE_FFT_PUBLIC_H

#include "agile/agile.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Transform types (cufftType values) and directions. */
enum {
    AGILE_FFT_R2C_T = 0x2a,
    AGILE_FFT_C2R_T = 0x2c,
    AGILE_FFT_C2C_T = 0x29,
    AGILE_FFT_D2Z_T = 0x6a,
    AGILE_FFT_Z2D_T = 0x6c,
    AGILE_FFT_Z2Z_T = 0x69
};
enum { AGILE_FFT_DIR_FORWARD = -1, AGILE_FFT_DIR_INVERSE = 1 };

/* agile_fft_plan_many: a plan on `device` for `batch` transforms of rank 1..3 with logical
 * sizes n[0..rank) (the real sizes of real transforms). With inembed and onembed both
 * non-NULL the layout is cuFFT's advanced layout (strides/dists in elements of each side's
 * type; inembed[0]/onembed[0] unused); otherwise both sides are contiguous and the stride/dist
 * arguments are ignored (cuFFT's basic layout, the real side padded to 2*(n/2+1) when
 * inplace). inplace: the plan will be executed with in == out (part of the plan, as for
 * FFTW). On success *plan is a handle this process owns until agile_fft_destroy (or its exit).
 * Blocks while the worker plans (cached: a repeated desc is a cache hit). */
AGILE_API int agile_fft_plan_many(int device, int rank, const long long *n,
                                  const long long *inembed, long long istride, long long idist,
                                  const long long *onembed, long long ostride, long long odist,
                                  int type, long long batch, int inplace, agile_handle_t *plan);

/* agile_fft_exec: run plan from in to out (client addresses from agile_malloc of the plan's
 * device; in == out for an in-place plan). direction matters for C2C/Z2Z only.
 * Stream order: work queued on `stream` (a CUstream/cudaStream_t; NULL: the legacy default
 * stream) before the call is complete before the transform reads `in` (the call synchronises
 * the stream), and the transform is complete when the call returns. Blocks (one control
 * round trip); agile_fft_exec_async is the stream-ordered form. */
AGILE_API int agile_fft_exec(agile_handle_t plan, const void *in, void *out, int direction,
                             void *stream);

/* agile_fft_exec_async: agile_fft_exec through the data plane (agile/ring.h): posted on the
 * command ring and ordered with `stream` like agile_launch (cuda: no host synchronisation; the
 * stream's later work runs after the transform). Returns once posted. A plan this process
 * does not hold, or an extent of the plan outside its device's window, fails here (EHANDLE,
 * EBOUNDS); what the worker refuses later comes at the next agile_barrier. direction must be
 * -1 or +1 (ignored by R2C/C2R). */
AGILE_API int agile_fft_exec_async(agile_handle_t plan, const void *in, void *out, int direction,
                                   void *stream);

/* agile_fft_destroy: release plan (the worker's cached plan may stay cached). */
AGILE_API int agile_fft_destroy(agile_handle_t plan);

/* agile_fft_destroy_async: release plan on the data plane, after every agile_fft_exec_async
 * posted before it (a blocking agile_fft_destroy could overtake them). Once posted, the handle
 * is gone from this process (if the post fails it is kept); the worker's errors come at the
 * next agile_barrier. */
AGILE_API int agile_fft_destroy_async(agile_handle_t plan, void *stream);

typedef struct agile_fft_stats {
    uint64_t hits, misses, evictions, create_failures;
    uint64_t entries, in_use, work_bytes;
    uint64_t max_entries, max_work_bytes;
} agile_fft_stats;
/* agile_fft_cache_stats: the worker's plan cache counters (shared by all tenants). */
AGILE_API int agile_fft_cache_stats(agile_fft_stats *out);

/* agile_fft_plan_extent: bytes a plan reads from `in` and writes to `out` (exact extents of
 * its layout), as the worker computed them; for sizing buffers. */
AGILE_API int agile_fft_plan_extent(agile_handle_t plan, uint64_t *in_bytes, uint64_t *out_bytes);

#ifdef __cplusplus
}
#endif
#endif
