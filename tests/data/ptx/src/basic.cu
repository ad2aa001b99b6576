// Corpus: plain loads/stores, vectors, __ldg, volatile, shared memory, local arrays.
#include <cuda_runtime.h>

extern "C" __global__ void vec_add(const float *a, const float *b, float *c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

extern "C" __global__ void vec4_copy(const float4 *__restrict__ in, float4 *__restrict__ out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float4 v = __ldg(&in[i]);
        v.x *= 2.0f;
        out[i] = v;
    }
}

extern "C" __global__ void offsets(const int *in, int *out, int n)
{
    // [reg+imm] with positive and negative immediates.
    int i = blockIdx.x * blockDim.x + threadIdx.x + 2;
    if (i + 2 < n)
        out[i] = in[i - 2] + in[i + 2] + in[i + 1];
}

extern "C" __global__ void volatile_flag(volatile int *flag, int *out)
{
    int v = *flag;
    out[threadIdx.x] = v;
    *flag = v + 1;
}

extern "C" __global__ void smem_reduce(const float *in, float *out, int n)
{
    __shared__ float buf[256];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    buf[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s)
            buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0)
        out[blockIdx.x] = buf[0];
}

extern "C" __global__ void local_array(const int *idx, int *out, int n)
{
    // Dynamic indexing forces the array into local memory (ld.local/st.local).
    int arr[32];
    for (int k = 0; k < 32; k++)
        arr[k] = k * 3 + idx[k % n];
    int i = threadIdx.x;
    out[i] = arr[idx[i] & 31];
}

__device__ int g_counter;
__device__ float g_table[64];

extern "C" __global__ void module_globals(float *out)
{
    // Module-level .global variables accessed by name: [var] and [var+imm].
    out[threadIdx.x] = g_table[threadIdx.x & 63] + g_table[3];
    if (threadIdx.x == 0)
        g_counter = g_counter + 1;
}

extern "C" __global__ void bytes_and_doubles(const unsigned char *b, const double *d, double *o, short *s)
{
    int i = threadIdx.x;
    o[i] = d[i] * b[i];
    s[i] = (short)(b[i] + 1);
}
