/* cufft_sample.c — a cuFFT program as a cuFFT user writes it (plan, exec, destroy), linked
 * against libagile_cufft.so instead of libcufft. The one change: buffers come from
 * agile_malloc, since the host backend has no cudaMalloc (on a GPU, agile_malloc returns
 * device memory in the tenant's pool). Checks the results against a naive DFT and prints
 * "cufft-sample: ok" (tests/py/test_cufft_shim.py runs it against a worker).
 *
 * Exit status: 0 ok, 1 numerical mismatch, 2 a cuFFT call failed. */
#include <complex.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cufft.h>

#include "agile/agile.h"
#include "agile/fft.h"

#define NX 256
#define BATCH 4
#define CHECK(call)                                                                                \
    do {                                                                                           \
        cufftResult r_ = (call);                                                                   \
        if (r_ != CUFFT_SUCCESS) {                                                                 \
            fprintf(stderr, "%s failed: cufftResult %d (%s)\n", #call, (int)r_,                    \
                    agile_last_error());                                                           \
            return 2;                                                                              \
        }                                                                                          \
    } while (0)

static double max_err_vs_dft(const cufftComplex *in, const cufftComplex *out, int n, int batch,
                             int sign)
{
    double worst = 0;
    for (int b = 0; b < batch; b++)
        for (int k = 0; k < n; k++) {
            double complex acc = 0;
            for (int j = 0; j < n; j++) {
                double complex x = in[b * n + j].x + I * in[b * n + j].y;
                acc += x * cexp(sign * 2.0 * I * M_PI * (double)j * k / n);
            }
            double complex y = out[b * n + k].x + I * out[b * n + k].y;
            worst = fmax(worst, cabs(y - acc) / (1.0 + cabs(acc)));
        }
    return worst;
}

int main(void)
{
    cufftHandle plan, plan_r;
    cufftComplex *data, *ref, *spec;
    cufftReal *real;
    size_t bytes = sizeof(cufftComplex) * NX * BATCH;
    int version = 0;

    data = agile_malloc(bytes, 0, NULL);
    ref = agile_malloc(bytes, 0, NULL);
    real = agile_malloc(sizeof(cufftReal) * NX, 0, NULL);
    spec = agile_malloc(sizeof(cufftComplex) * (NX / 2 + 1), 0, NULL);
    if (!data || !ref || !real || !spec) {
        fprintf(stderr, "agile_malloc: %s\n", agile_last_error());
        return 2;
    }
    for (int i = 0; i < NX * BATCH; i++) {
        data[i].x = (float)sin(0.1 * i) + (float)(i % 7) * 0.25f;
        data[i].y = (float)cos(0.03 * i);
    }
    memcpy(ref, data, bytes);
    for (int i = 0; i < NX; i++)
        real[i] = (float)(i % 11) - 5.0f;

    CHECK(cufftGetVersion(&version));
    CHECK(cufftPlan1d(&plan, NX, CUFFT_C2C, BATCH));
    CHECK(cufftExecC2C(plan, data, data, CUFFT_FORWARD)); /* in place, like the samples */
    double e_fwd = max_err_vs_dft(ref, data, NX, BATCH, -1);

    /* R2C through the create/make path, out of place. */
    size_t work = 1;
    CHECK(cufftCreate(&plan_r));
    CHECK(cufftMakePlan1d(plan_r, NX, CUFFT_R2C, 1, &work));
    CHECK(cufftExecR2C(plan_r, real, spec));
    double e_r2c = 0;
    for (int k = 0; k <= NX / 2; k++) {
        double complex acc = 0;
        for (int j = 0; j < NX; j++)
            acc += real[j] * cexp(-2.0 * I * M_PI * (double)j * k / NX);
        e_r2c = fmax(e_r2c, cabs(spec[k].x + I * spec[k].y - acc) / (1.0 + cabs(acc)));
    }

    /* Memory that is not agile_malloc's is refused, and the handle of a destroyed plan too. */
    static cufftComplex not_agile[NX];
    cufftResult refused = cufftExecC2C(plan, not_agile, not_agile, CUFFT_FORWARD);
    CHECK(cufftDestroy(plan));
    cufftResult stale = cufftExecC2C(plan, data, data, CUFFT_FORWARD);
    CHECK(cufftDestroy(plan_r));

    printf("cufft-sample: version %d, c2c max rel err %.3g, r2c %.3g, work %zu, foreign %d, "
           "stale %d\n",
           version, e_fwd, e_r2c, work, (int)refused, (int)stale);
    agile_free(data, bytes, 0, NULL);
    agile_free(ref, bytes, 0, NULL);
    agile_free(real, sizeof(cufftReal) * NX, 0, NULL);
    agile_free(spec, sizeof(cufftComplex) * (NX / 2 + 1), 0, NULL);
    if (e_fwd > 1e-4 || e_r2c > 1e-4 || work != 0 || refused != CUFFT_INVALID_VALUE ||
        stale != CUFFT_INVALID_PLAN)
        return 1;
    printf("cufft-sample: ok\n");
    return 0;
}
