// Corpus: atomics and reductions in global, shared and generic space; scoped atomics.
#include <cuda/atomic>

extern "C" __global__ void atomics_int(int *ctr, unsigned *ux, int *out)
{
    int old = atomicAdd(ctr, 1);
    out[threadIdx.x] = old;
    atomicMax(ctr + 1, (int)threadIdx.x);
    atomicExch(ux, threadIdx.x);
    atomicCAS(ctr + 2, 0, 7);
    atomicAnd(ux + 1, 0xff);
    atomicAdd((unsigned long long *)(ctr + 4), 1ull);
}

extern "C" __global__ void atomics_float(float *f, double *d)
{
    atomicAdd(f, 1.5f);              // red.global.add.f32 (result unused)
    float o = atomicAdd(f + 1, 2.0f); // atom.global.add.f32
    f[2 + threadIdx.x] = o;
    atomicAdd(d, 0.25);              // red.global.add.f64
    double od = atomicAdd(d + 1, 1.0);
    d[2 + threadIdx.x] = od;
}

extern "C" __global__ void atomics_shared(int *out)
{
    __shared__ int hist[16];
    if (threadIdx.x < 16)
        hist[threadIdx.x] = 0;
    __syncthreads();
    atomicAdd(&hist[threadIdx.x & 15], 1);
    __syncthreads();
    if (threadIdx.x < 16)
        atomicAdd(&out[threadIdx.x], hist[threadIdx.x]);
}

extern "C" __global__ void atomics_scoped(int *p, int *out)
{
    cuda::atomic_ref<int, cuda::thread_scope_device> dev(p[0]);
    cuda::atomic_ref<int, cuda::thread_scope_system> sys(p[1]);
    cuda::atomic_ref<int, cuda::thread_scope_block> blk(p[2]);
    int a = dev.fetch_add(1, cuda::memory_order_relaxed);
    int b = sys.load(cuda::memory_order_acquire);
    blk.store(a + b, cuda::memory_order_release);
    int expected = 0;
    dev.compare_exchange_strong(expected, 5, cuda::memory_order_acq_rel);
    out[threadIdx.x] = a + b + expected;
}

__device__ __noinline__ void bump(int *p, int v)
{
    // p may point into shared or global memory: a generic atomic.
    atomicAdd(p, v);
}

extern "C" __global__ void atomics_generic(int *g, int sel)
{
    __shared__ int s[4];
    if (threadIdx.x < 4)
        s[threadIdx.x] = 0;
    __syncthreads();
    bump(sel ? g : s, 1);
    __syncthreads();
    if (threadIdx.x == 0)
        g[1] = s[0];
}
