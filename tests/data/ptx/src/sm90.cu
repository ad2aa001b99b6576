// Corpus (sm_90 / sm_90a): cluster st.async/red.async, cp.async.bulk (non-tensor) with an
// mbarrier, bulk prefetch, vector atomics/reductions, mbarrier in generic space.
#include <cstdint>

extern "C" __global__ void __cluster_dims__(2, 1, 1) cluster_async(const float *in, float *out)
{
    __shared__ alignas(16) float buf[256];
    __shared__ alignas(8) unsigned long long bar;
    unsigned sbuf = (unsigned)__cvta_generic_to_shared(buf);
    unsigned sbar = (unsigned)__cvta_generic_to_shared(&bar);
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sbar), "r"(1));
        asm volatile("fence.proxy.async.shared::cta;");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sbar), "r"(1024));
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(sbuf), "l"(in + blockIdx.x * 256), "r"(1024), "r"(sbar) : "memory");
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], 1024;" ::"l"(in + 1024));
    }
    asm volatile("{\n .reg .pred P1;\n WAIT:\n"
                 " mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], 0;\n"
                 " @!P1 bra WAIT;\n}\n" ::"r"(sbar));
    // Distributed shared memory: st.async / red.async into the peer CTA.
    unsigned peer;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(peer) : "r"(sbuf), "r"(blockIdx.x ^ 1));
    unsigned pbar;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(pbar) : "r"(sbar), "r"(blockIdx.x ^ 1));
    if (threadIdx.x == 1) {
        asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.u32 [%0], %1, [%2];"
                     ::"r"(peer), "r"(7), "r"(pbar) : "memory");
        asm volatile("red.async.relaxed.cluster.shared::cluster.mbarrier::complete_tx::bytes.add.u32 [%0], %1, [%2];"
                     ::"r"(peer + 4), "r"(1), "r"(pbar) : "memory");
    }
    asm volatile("barrier.cluster.arrive; barrier.cluster.wait;");
    if (threadIdx.x == 0)
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                     ::"l"(out + blockIdx.x * 256), "r"(sbuf), "r"(1024) : "memory");
    asm volatile("cp.async.bulk.commit_group; cp.async.bulk.wait_group 0;");
    out[4096 + threadIdx.x] = buf[threadIdx.x];
}

extern "C" __global__ void vector_atomics(float *f, float4 v)
{
    float *p = f + 4 * threadIdx.x;
    asm volatile("red.global.v4.f32.add [%0], {%1,%2,%3,%4};" ::"l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w)
                 : "memory");
    float a, b;
    asm volatile("atom.global.v2.f32.add {%0,%1}, [%2], {%3,%4};"
                 : "=f"(a), "=f"(b) : "l"(p + 1024), "f"(v.x), "f"(v.y) : "memory");
    f[2048 + threadIdx.x] = a + b;
}

extern "C" __global__ void generic_mbarrier(unsigned long long *gbar, int *out)
{
    __shared__ unsigned long long bar;
    unsigned long long *p = threadIdx.x == 0 ? &bar : gbar;
    if (threadIdx.x < 2)
        asm volatile("mbarrier.init.b64 [%0], %1;" ::"l"(p), "r"(32));
    __syncthreads();
    out[threadIdx.x] = (int)bar;
}
