// Corpus: cp.async (sm_80+), prefetch/discard/applypriority/createpolicy via inline asm,
// cache-hinted and scoped ld/st.
#include <cuda_pipeline.h>

extern "C" __global__ void pipeline_copy(const float4 *in, float4 *out, int n)
{
    __shared__ float4 buf[128];
    int t = threadIdx.x;
    __pipeline_memcpy_async(&buf[t], &in[blockIdx.x * 128 + t], sizeof(float4));
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    out[blockIdx.x * 128 + t] = buf[127 - t];
}

extern "C" __global__ void pipeline_copy4(const int *in, int *out)
{
    __shared__ int buf[256];
    int t = threadIdx.x;
    __pipeline_memcpy_async(&buf[t], &in[blockIdx.x * 256 + t], sizeof(int));
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    out[blockIdx.x * 256 + t] = buf[255 - t];
}

extern "C" __global__ void hints(const float *in, float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float *p = in + i;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
    asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(p + 32));
    asm volatile("prefetch.L1 [%0];" ::"l"(p + 64));
    asm volatile("prefetchu.L1 [%0];" ::"l"(p + 96));
    asm volatile("applypriority.global.L2::evict_normal [%0], 128;" ::"l"(out));
    unsigned long long pol;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
    float v;
    asm volatile("ld.global.L2::cache_hint.f32 %0, [%1], %2;" : "=f"(v) : "l"(p), "l"(pol));
    float w;
    asm volatile("ld.relaxed.gpu.global.f32 %0, [%1+4];" : "=f"(w) : "l"(p));
    asm volatile("st.release.sys.global.f32 [%0], %1;" ::"l"(out + i), "f"(v + w));
    float x;
    asm volatile("ld.acquire.gpu.f32 %0, [%1];" : "=f"(x) : "l"(p)); // generic, scoped
    asm volatile("st.volatile.global.f32 [%0+-4], %1;" ::"l"(out + i + 1), "f"(x));
    if (i == 0)
        asm volatile("discard.global.L2 [%0], 128;" ::"l"(out + 1024));
    int4 q;
    asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(q.x), "=r"(q.y), "=r"(q.z), "=r"(q.w) : "l"(in + 128));
    asm volatile("red.relaxed.gpu.global.add.s32 [%0], %1;" ::"l"(out + 2048), "r"(q.x + q.w));
    asm volatile("ldu.global.f32 %0, [%1];" : "=f"(v) : "l"(in));
    out[i + 4096] = v;
}
