// Differential/adversarial kernels: each tries to touch memory outside the window it was
// given. Guarded, every such access must land inside the window (mask mode) or be skipped
// and reported (strict mode). `canary` is an address outside the window.
#include <cstdint>

extern "C" __global__ void adv_forged_store(float *in_window, unsigned long long canary)
{
    float *p = (float *)canary; // forged pointer from an integer
    p[threadIdx.x] = 42.0f;
    in_window[threadIdx.x] = 1.0f;
}

extern "C" __global__ void adv_past_end(int *buf, long long n_elems, long long stride)
{
    // Pointer arithmetic walking off the end of the buffer (and the window).
    buf[n_elems + threadIdx.x * stride] = 0x5a5a5a5a;
}

extern "C" __global__ void adv_negative(int *buf, long long back)
{
    int *p = buf - back;
    p[threadIdx.x] = 0x11111111;
    asm volatile("st.global.u32 [%0+-64], %1;" ::"l"(buf), "r"(0x22222222));
}

extern "C" __global__ void adv_atomics(unsigned long long canary, int *ok)
{
    int *p = (int *)canary;
    atomicAdd(p, 1);
    atomicExch(p + 1, 99);
    int o = atomicCAS(p + 2, 0, 77);
    float *fp = (float *)canary;
    atomicAdd(fp + 3, 1.0f);
    ok[threadIdx.x] = o;
}

extern "C" __global__ void adv_vector(unsigned long long canary, float4 *ok)
{
    float4 *p = (float4 *)canary;
    float4 v = make_float4(1, 2, 3, 4);
    p[threadIdx.x] = v;
    ok[threadIdx.x] = v;
    asm volatile("red.global.v4.f32.add [%0], {%1,%2,%3,%4};" ::"l"(p + 64), "f"(1.f), "f"(1.f), "f"(1.f), "f"(1.f)
                 : "memory");
}

__device__ __noinline__ void write_generic(int *p, int v)
{
    *p = v;
}

extern "C" __global__ void adv_generic(unsigned long long canary, int *ok)
{
    // Generic pointer to global memory outside the window, through a device function.
    write_generic((int *)canary + threadIdx.x, 0x33333333);
    __shared__ int s[32];
    write_generic(&s[threadIdx.x & 31], 5); // shared stays shared
    __syncthreads();
    ok[threadIdx.x] = s[threadIdx.x & 31];
}

extern "C" __global__ void adv_read(const int *canary_ptr, int *out)
{
    // Read outside the window: mask mode reads something inside the window, strict mode 0.
    out[threadIdx.x] = canary_ptr[threadIdx.x];
}

extern "C" __global__ void adv_cp_async(unsigned long long canary, int *out)
{
    __shared__ alignas(16) int buf[128];
    const int *src = (const int *)canary;
    unsigned s = (unsigned)__cvta_generic_to_shared(&buf[threadIdx.x * 4]);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src + threadIdx.x * 4));
    asm volatile("cp.async.commit_group; cp.async.wait_all;");
    __syncthreads();
    out[threadIdx.x] = buf[threadIdx.x];
}
