// Corpus: noinline device functions, pointers into both spaces, recursion, generic loads.
__device__ __noinline__ float load_any(const float *p, int i)
{
    return p[i]; // generic load: p may be global or shared
}

__device__ __noinline__ void store_any(float *p, int i, float v)
{
    p[i] = v;
}

__device__ __noinline__ int depth(const int *p, int n)
{
    if (n <= 0)
        return p[0];
    return p[n] + depth(p, n - 1);
}

__device__ __noinline__ float4 load4(const float4 *p)
{
    return *p;
}

extern "C" __global__ void funcs_mix(const float *in, float *out, const int *ip, int *iout, int n)
{
    __shared__ float tile[128];
    int t = threadIdx.x;
    tile[t & 127] = load_any(in, t);
    __syncthreads();
    float v = load_any(tile, (t + 1) & 127);
    store_any(out, t, v);
    if (t == 0)
        iout[0] = depth(ip, n & 7);
    float4 q = load4(reinterpret_cast<const float4 *>(in) + t);
    out[t + 256] = q.x + q.w;
}

extern "C" __global__ void generic_select(float *g, int which)
{
    __shared__ float s[64];
    float *p = which ? g : s;
    p[threadIdx.x & 63] = 1.0f;
    __syncthreads();
    g[threadIdx.x + 64] = p[(threadIdx.x + 1) & 63];
}
