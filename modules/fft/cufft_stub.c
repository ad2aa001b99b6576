/* cufft_stub.c — libagile_cufft_stub.so: the cuFFT entry points the cuda backend uses, with
 * cufft.h's exact signatures, recording what the backend asks for. It lets the backend's
 * own logic (work areas per tenant and stream, plan lifecycle, error wrapping) be unit-tested
 * without a GPU; it computes nothing, and real cuFFT execution is tested on a GPU only. */
#include <cufft.h>
#include <stdint.h>
#include <string.h>

#define STUB_API __attribute__((visibility("default")))
#define MAXP 64

typedef struct {
    int live, autoalloc;
    size_t work;
    void *stream, *area;
} splan;

static splan plans[MAXP];
static int next_handle = 1;
static size_t stub_work = 4096;
static int fail_make;

/* The last exec, for the test to inspect. */
STUB_API struct stub_exec {
    int handle, direction, count;
    void *stream, *area, *in, *out;
} stub_last;

STUB_API void stub_config(size_t work, int fail);
STUB_API int stub_live_plans(void);

void stub_config(size_t work, int fail)
{
    stub_work = work;
    fail_make = fail;
}

int stub_live_plans(void)
{
    int n = 0;
    for (int i = 0; i < MAXP; i++)
        n += plans[i].live;
    return n;
}

static splan *get(cufftHandle h) { return h > 0 && h < MAXP && plans[h].live ? &plans[h] : NULL; }

cufftResult CUFFTAPI cufftCreate(cufftHandle *handle)
{
    if (next_handle >= MAXP)
        return CUFFT_ALLOC_FAILED;
    memset(&plans[next_handle], 0, sizeof plans[0]);
    plans[next_handle].live = 1;
    plans[next_handle].autoalloc = 1;
    *handle = next_handle++;
    return CUFFT_SUCCESS;
}

cufftResult CUFFTAPI cufftMakePlanMany64(cufftHandle plan, int rank, long long int *n,
                                         long long int *inembed, long long int istride,
                                         long long int idist, long long int *onembed,
                                         long long int ostride, long long int odist,
                                         cufftType type, long long int batch, size_t *workSize)
{
    splan *p = get(plan);
    (void)rank, (void)n, (void)inembed, (void)istride, (void)idist, (void)onembed;
    (void)ostride, (void)odist, (void)type, (void)batch;
    if (!p)
        return CUFFT_INVALID_PLAN;
    if (fail_make)
        return CUFFT_INVALID_SIZE;
    if (p->autoalloc)
        return CUFFT_INTERNAL_ERROR; /* the backend must have turned auto-allocation off */
    p->work = stub_work;
    *workSize = stub_work;
    return CUFFT_SUCCESS;
}

cufftResult CUFFTAPI cufftGetSize(cufftHandle handle, size_t *workSize)
{
    splan *p = get(handle);
    if (!p)
        return CUFFT_INVALID_PLAN;
    *workSize = p->work;
    return CUFFT_SUCCESS;
}

cufftResult CUFFTAPI cufftSetAutoAllocation(cufftHandle plan, int autoAllocate)
{
    splan *p = get(plan);
    if (!p)
        return CUFFT_INVALID_PLAN;
    p->autoalloc = autoAllocate;
    return CUFFT_SUCCESS;
}

cufftResult CUFFTAPI cufftSetWorkArea(cufftHandle plan, void *workArea)
{
    splan *p = get(plan);
    if (!p)
        return CUFFT_INVALID_PLAN;
    p->area = workArea;
    return CUFFT_SUCCESS;
}

cufftResult CUFFTAPI cufftSetStream(cufftHandle plan, cudaStream_t stream)
{
    splan *p = get(plan);
    if (!p)
        return CUFFT_INVALID_PLAN;
    p->stream = stream;
    return CUFFT_SUCCESS;
}

static cufftResult rec(cufftHandle h, void *in, void *out, int dir)
{
    splan *p = get(h);
    if (!p)
        return CUFFT_INVALID_PLAN;
    if (p->work && !p->area)
        return CUFFT_NO_WORKSPACE;
    stub_last.handle = h;
    stub_last.direction = dir;
    stub_last.stream = p->stream;
    stub_last.area = p->area;
    stub_last.in = in;
    stub_last.out = out;
    stub_last.count++;
    return CUFFT_SUCCESS;
}

cufftResult CUFFTAPI cufftExecC2C(cufftHandle plan, cufftComplex *idata, cufftComplex *odata,
                                  int direction)
{
    return rec(plan, idata, odata, direction);
}
cufftResult CUFFTAPI cufftExecZ2Z(cufftHandle plan, cufftDoubleComplex *idata,
                                  cufftDoubleComplex *odata, int direction)
{
    return rec(plan, idata, odata, direction);
}
cufftResult CUFFTAPI cufftExecR2C(cufftHandle plan, cufftReal *idata, cufftComplex *odata)
{
    return rec(plan, idata, odata, 0);
}
cufftResult CUFFTAPI cufftExecD2Z(cufftHandle plan, cufftDoubleReal *idata,
                                  cufftDoubleComplex *odata)
{
    return rec(plan, idata, odata, 0);
}
cufftResult CUFFTAPI cufftExecC2R(cufftHandle plan, cufftComplex *idata, cufftReal *odata)
{
    return rec(plan, idata, odata, 0);
}
cufftResult CUFFTAPI cufftExecZ2D(cufftHandle plan, cufftDoubleComplex *idata,
                                  cufftDoubleReal *odata)
{
    return rec(plan, idata, odata, 0);
}

cufftResult CUFFTAPI cufftDestroy(cufftHandle plan)
{
    splan *p = get(plan);
    if (!p)
        return CUFFT_INVALID_PLAN;
    p->live = 0;
    return CUFFT_SUCCESS;
}

cufftResult CUFFTAPI cufftGetVersion(int *version)
{
    *version = 99999;
    return CUFFT_SUCCESS;
}
