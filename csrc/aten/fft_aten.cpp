// fft_aten.cpp — the ATen hook: torch.fft on agile tensors, run by the worker's fft module.
//
// aten::_fft_c2c, _fft_r2c, _fft_c2r and their .out overloads get a boxed kernel on the CUDA
// dispatch key only; autograd, Meta/Fake (torch.compile) and every other key keep PyTorch's
// kernels. The CUDA kernels registered before ours are captured (getComputedKernelForDispatchKey)
// and called, with the key set they were given, for whatever the hook does not serve: tensors
// outside this process's agile pool, half precision, more than 3 transformed dims, empty
// tensors, two-sided R2C, and R2C/C2R over dims starting with (0, 1) (PyTorch runs those in
// several passes with its own layout).
//
// A served call mirrors _exec_fft in aten/src/ATen/native/cuda/SpectralOps.cpp, so the output
// has the sizes and strides PyTorch's cuFFT path gives (torch.compile asserts them): batch
// dims first in decreasing stride order, then the transformed dims (C2C sorted by decreasing
// stride; R2C/C2R in the order given, the halved dim last), the batch collapsed into one dim,
// the input made contiguous in the pool (always copied for C2R, which cuFFT overwrites), a
// basic-layout plan, the output allocated contiguous in the pool and viewed back with
// PyTorch's strides, then PyTorch's normalisation. The transform is posted on libagile's
// command ring (agile_fft_exec_async), ordered with the current CUDA stream with no host
// synchronisation; a refusal by the worker comes at the next agile_barrier.
//
// Python drives it through the extern "C" functions at the end (agile_torch/fft.py, ctypes).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/version.h>

#include <agile/agile.h>
#include <agile/err.h>
#include <agile/fft.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <list>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#define AGILE_ATEN_API extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kMaxDev = AGILE_MAX_DEV;
// A plan handle holds its worker cache entry (256 by default): release the oldest ourselves.
constexpr size_t kMaxPlans = 128;

enum Op { kC2c, kC2cOut, kR2c, kR2cOut, kC2r, kC2rOut, kNumOps };
constexpr std::array<std::pair<const char *, const char *>, kNumOps> kOps = {{
    {"aten::_fft_c2c", ""},
    {"aten::_fft_c2c", "out"},
    {"aten::_fft_r2c", ""},
    {"aten::_fft_r2c", "out"},
    {"aten::_fft_c2r", ""},
    {"aten::_fft_c2r", "out"},
}};

struct PlanKey {
    int dev, type;
    std::vector<int64_t> n;
    int64_t batch;
    bool operator==(const PlanKey &o) const
    {
        return dev == o.dev && type == o.type && n == o.n && batch == o.batch;
    }
};

struct PlanKeyHash {
    size_t operator()(const PlanKey &k) const
    {
        size_t h = std::hash<int64_t>()(k.batch) ^ (size_t(k.dev) << 8) ^ size_t(k.type);
        for (int64_t v : k.n)
            h = h * 1000003u ^ std::hash<int64_t>()(v);
        return h;
    }
};

using Lru = std::list<std::pair<PlanKey, agile_handle_t>>; // most recently used first

struct State {
    std::mutex mu; // registration, plans, pools; held while an exec is posted
    std::unique_ptr<torch::Library> lib;
    std::array<std::optional<c10::SafeKernelFunction>, kNumOps> orig;
    Lru lru;
    std::unordered_map<PlanKey, Lru::iterator, PlanKeyHash> plans;
    std::array<std::optional<c10::cuda::MempoolId_t>, kMaxDev> pool;
    std::atomic<bool> alloc_is_agile{false};
    std::atomic<uint64_t> served{0}, fallback{0}, plans_created{0}, plan_failures{0};
    std::string error;
};

// Never destroyed: the dispatcher may call us during interpreter teardown.
State &st()
{
    static State *s = new State;
    return *s;
}

// ---- which tensors are ours -----------------------------------------------------------------

bool is_agile(const at::Tensor &t)
{
    if (!t.is_cuda() || !t.has_storage()) return false;
    int dev = t.device().index();
    uint64_t base, size;
    if (dev < 0 || dev >= kMaxDev || agile_pool_window(dev, &base, &size) != AGILE_OK) return false;
    auto p = reinterpret_cast<uintptr_t>(t.storage().data_ptr().get());
    return p >= base && p - base < size;
}

bool can_alloc(int dev)
{
    if (st().alloc_is_agile.load(std::memory_order_relaxed)) return true;
    std::lock_guard<std::mutex> g(st().mu);
    return st().pool[dev].has_value();
}

bool served(const at::Tensor &t, bool complex_in, const std::vector<int64_t> &dims)
{
    auto dt = t.scalar_type();
    bool dt_ok = complex_in ? (dt == at::kComplexFloat || dt == at::kComplexDouble)
                            : (dt == at::kFloat || dt == at::kDouble);
    return dt_ok && !dims.empty() && dims.size() <= 3 && t.numel() > 0 && is_agile(t) &&
           can_alloc(t.device().index());
}

// PyTorch's use_optimized_cufft_path: otherwise it runs several passes (another layout).
bool optimized_path(const std::vector<int64_t> &dims)
{
    return !(dims.size() > 3 || (dims.size() >= 2 && dims[0] == 0 && dims[1] == 1));
}

// ---- allocation in the pool -----------------------------------------------------------------

// A contiguous tensor in the agile pool of dev, whatever the caller's allocator: the current
// allocator when agile_torch.enable() made it ours, else the pool (torch.cuda.use_mem_pool's
// steps, for this thread only).
at::Tensor alloc(at::IntArrayRef sizes, at::ScalarType dt, at::Device dev)
{
    auto opts = at::TensorOptions().dtype(dt).device(dev);
    if (st().alloc_is_agile.load(std::memory_order_relaxed)) return at::empty(sizes, opts);
    c10::cuda::MempoolId_t id;
    {
        std::lock_guard<std::mutex> g(st().mu);
        TORCH_CHECK(st().pool[dev.index()].has_value(), "agile fft: no agile pool on ", dev);
        id = *st().pool[dev.index()];
    }
    namespace cca = c10::cuda::CUDACachingAllocator;
    auto tid = std::this_thread::get_id();
    cca::beginAllocateToPool(dev.index(), id,
                             [tid](cudaStream_t) { return std::this_thread::get_id() == tid; });
    at::Tensor t;
    try {
        t = at::empty(sizes, opts);
    } catch (...) {
        cca::endAllocateToPool(dev.index(), id);
        cca::releasePool(dev.index(), id);
        throw;
    }
    cca::endAllocateToPool(dev.index(), id);
    cca::releasePool(dev.index(), id);
    return t;
}

at::Tensor to_pool_contiguous(const at::Tensor &x, bool force_copy)
{
    if (!force_copy && x.is_contiguous() && is_agile(x)) return x;
    at::Tensor y = alloc(x.sizes(), x.scalar_type(), x.device());
    y.copy_(x);
    return y;
}

// ---- plans and execs ------------------------------------------------------------------------

void check(int rv, const char *what)
{
    TORCH_CHECK(rv == AGILE_OK, "agile fft: ", what, " failed: ", agile_strerror(rv),
                " (worker: ", agile_last_error(), ")");
}

// The worker could not make the plan (quota for its work area, a size cuFFT refuses): the
// call goes to PyTorch's own kernel, which reads the pool memory as well.
struct NoPlan : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Release plan h of device dev behind the execs this process posted before (ring order). If
// the ring cannot take it, the ring is gone, and a blocking destroy overtakes nothing.
void release_plan(int dev, agile_handle_t h)
{
    c10::cuda::CUDAGuard g(static_cast<c10::DeviceIndex>(dev)); // the ring posts on dev's stream
    void *stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(dev)).stream();
    if (agile_fft_destroy_async(h, stream) != AGILE_OK) agile_fft_destroy(h);
}

// Caller holds mu. The handle of key, made (with mu released) on a miss.
agile_handle_t plan_locked(std::unique_lock<std::mutex> &g, const PlanKey &key)
{
    State &s = st();
    auto it = s.plans.find(key);
    if (it != s.plans.end()) {
        s.lru.splice(s.lru.begin(), s.lru, it->second);
        return it->second->second;
    }
    g.unlock();
    agile_handle_t h = 0;
    int rv = agile_fft_plan_many(key.dev, int(key.n.size()),
                                 reinterpret_cast<const long long *>(key.n.data()), nullptr, 0,
                                 0, nullptr, 0, 0, key.type, key.batch, 0, &h);
    g.lock();
    if (rv != AGILE_OK) throw NoPlan(agile_strerror(rv));
    it = s.plans.find(key);
    if (it != s.plans.end()) { // another thread made it meanwhile: keep one
        agile_fft_destroy(h);
        s.lru.splice(s.lru.begin(), s.lru, it->second);
        return it->second->second;
    }
    s.lru.emplace_front(key, h);
    s.plans.emplace(key, s.lru.begin());
    s.plans_created++;
    while (s.lru.size() > kMaxPlans) {
        // Behind this process's execs on the ring: the ones still queued find their plan.
        release_plan(s.lru.back().first.dev, s.lru.back().second);
        s.plans.erase(s.lru.back().first);
        s.lru.pop_back();
    }
    return h;
}

void run(const PlanKey &key, const void *in, void *out, int direction, void *stream)
{
    // Held from the lookup to the post: the LRU cannot release the plan in between.
    std::unique_lock<std::mutex> g(st().mu);
    agile_handle_t h = plan_locked(g, key);
    check(agile_fft_exec_async(h, in, out, direction, stream), "agile_fft_exec_async");
}

std::vector<int64_t> wrap_dims(const std::vector<int64_t> &dims, int64_t ndim)
{
    std::vector<int64_t> out;
    out.reserve(dims.size());
    for (int64_t d : dims)
        out.push_back(c10::maybe_wrap_dim(d, ndim));
    return out;
}

// PyTorch's cuFFT _exec_fft, with the transform run by the worker: the same dim permutation
// (batch dims first, partitioned then sorted by decreasing stride as PyTorch does, so ties
// come out in the same order), the same size checks, the same output strides.
at::Tensor exec(const at::Tensor &self, const std::vector<int64_t> &out_sizes,
                const std::vector<int64_t> &dims, int type, int direction, at::ScalarType out_dt)
{
    const int64_t ndim = self.dim();
    const auto nb = static_cast<size_t>(ndim) - dims.size();
    std::vector<int64_t> perm(static_cast<size_t>(ndim));
    std::iota(perm.begin(), perm.end(), int64_t{0});
    std::vector<bool> transformed(static_cast<size_t>(ndim), false);
    for (int64_t d : dims)
        transformed[static_cast<size_t>(d)] = true;
    auto batch_end = std::partition(perm.begin(), perm.end(),
                                    [&](int64_t d) { return !transformed[static_cast<size_t>(d)]; });
    auto strides = self.strides();
    std::sort(perm.begin(), batch_end, [&](int64_t a, int64_t b) { return strides[a] > strides[b]; });
    std::copy(dims.begin(), dims.end(), batch_end);
    at::Tensor x = self.permute(perm);
    std::vector<int64_t> shape{-1};
    shape.insert(shape.end(), x.sizes().begin() + static_cast<int64_t>(nb), x.sizes().end());
    x = x.reshape(shape);
    PlanKey key{int(self.device().index()), type, {}, x.size(0)};
    std::vector<int64_t> bout{x.size(0)};
    for (size_t i = 0; i < dims.size(); i++) {
        int64_t in = x.size(int64_t(i) + 1), o = out_sizes[dims[i]], n = std::max(in, o);
        TORCH_CHECK((in == n || in == n / 2 + 1) && (o == n || o == n / 2 + 1),
                    "agile fft: sizes ", in, " -> ", o, " along dim ", dims[i],
                    " are not those of one transform");
        key.n.push_back(n);
        bout.push_back(o);
    }
    x = to_pool_contiguous(x, false);
    at::Tensor out = alloc(bout, out_dt, self.device());
    void *stream = c10::cuda::getCurrentCUDAStream(self.device().index()).stream();
    run(key, x.const_data_ptr(), out.mutable_data_ptr(), direction, stream);
    // Back to the original batch shape and dim order, with PyTorch's strides.
    auto ostr = out.strides();
    std::vector<int64_t> out_strides(static_cast<size_t>(ndim), 0);
    int64_t numel = 1;
    for (int64_t i = int64_t(nb) - 1; i >= 0; i--) {
        out_strides[perm[i]] = numel * ostr[0];
        numel *= out_sizes[perm[i]];
    }
    for (int64_t i = int64_t(nb); i < ndim; i++)
        out_strides[perm[i]] = ostr[1 + i - int64_t(nb)];
    return out.as_strided(out_sizes, out_strides, out.storage_offset());
}

at::Tensor normalize(at::Tensor out, int64_t normalization, at::IntArrayRef sizes,
                     const std::vector<int64_t> &dims)
{
    if (normalization == 0) return out;
    double n = 1;
    for (int64_t d : dims)
        n *= double(sizes[d]);
    return out.mul_(1.0 / (normalization == 1 ? std::sqrt(n) : n));
}

at::Tensor c2c(const at::Tensor &self, std::vector<int64_t> dims, int64_t norm, bool forward)
{
    auto st_ = self.strides();
    std::sort(dims.begin(), dims.end(),
              [&](int64_t a, int64_t b) { return st_[a] > st_[b]; }); // as _fft_c2c_cufft
    int type = self.scalar_type() == at::kComplexFloat ? AGILE_FFT_C2C_T : AGILE_FFT_Z2Z_T;
    at::Tensor out = exec(self, self.sizes().vec(), dims, type,
                          forward ? AGILE_FFT_DIR_FORWARD : AGILE_FFT_DIR_INVERSE,
                          self.scalar_type());
    st().served++;
    return normalize(out, norm, self.sizes(), dims);
}

at::Tensor r2c(const at::Tensor &self, const std::vector<int64_t> &dims, int64_t norm)
{
    auto out_sizes = self.sizes().vec();
    out_sizes[dims.back()] = self.size(dims.back()) / 2 + 1;
    bool f = self.scalar_type() == at::kFloat;
    // cuFFT wants the real input aligned as if it were complex: where it is not, copy it the
    // way PyTorch does (the copy's strides then decide the batch order, for both).
    at::Tensor in = self;
    if (reinterpret_cast<uintptr_t>(self.const_data_ptr()) % (2 * self.element_size())) {
        at::Tensor moved = self.movedim(dims.back(), -1);
        in = to_pool_contiguous(moved, true).movedim(-1, dims.back());
    }
    at::Tensor out = exec(in, out_sizes, dims, f ? AGILE_FFT_R2C_T : AGILE_FFT_D2Z_T,
                          AGILE_FFT_DIR_FORWARD, f ? at::kComplexFloat : at::kComplexDouble);
    st().served++;
    return normalize(out, norm, self.sizes(), dims);
}

at::Tensor c2r(const at::Tensor &self, const std::vector<int64_t> &dims, int64_t norm,
               int64_t last_dim_size)
{
    auto out_sizes = self.sizes().vec();
    out_sizes[dims.back()] = last_dim_size;
    bool f = self.scalar_type() == at::kComplexFloat;
    // cuFFT's C2R overwrites its input: run on a private contiguous copy, as PyTorch does
    // (its batch-dim order then follows the copy's strides, so ours does too).
    at::Tensor tmp = to_pool_contiguous(self, true);
    at::Tensor out = exec(tmp, out_sizes, dims, f ? AGILE_FFT_C2R_T : AGILE_FFT_Z2D_T,
                          AGILE_FFT_DIR_INVERSE, f ? at::kFloat : at::kDouble);
    st().served++;
    return normalize(out, norm, out_sizes, dims);
}

// ---- the boxed kernels ----------------------------------------------------------------------

void fall_back(Op op, const c10::OperatorHandle &h, c10::DispatchKeySet ks, torch::jit::Stack *s)
{
    st().fallback++;
    st().orig[op]->callBoxed(h, ks, s);
}

// The transformed dims of a call, or nothing when they are symbolic (never at run time).
std::optional<std::vector<int64_t>> dims_of(const c10::IValue &v, int64_t ndim)
{
    if (!v.isIntList()) return std::nullopt;
    return wrap_dims(v.toIntVector(), ndim);
}

void finish(torch::jit::Stack *s, size_t nargs, at::Tensor result, bool has_out)
{
    if (has_out) {
        at::Tensor out = torch::jit::peek(*s, nargs - 1, nargs).toTensor();
        if (out.sizes() != result.sizes()) out.resize_(result.sizes());
        out.copy_(result);
        result = out;
    }
    torch::jit::drop(*s, nargs);
    torch::jit::push(*s, std::move(result));
}

// What a served call returns, or nothing to leave the call to PyTorch's kernel. The schemas:
//   _fft_c2c(Tensor self, SymInt[] dim, int normalization, bool forward)
//   _fft_r2c(Tensor self, int[] dim, int normalization, bool onesided)
//   _fft_c2r(Tensor self, int[] dim, int normalization, SymInt last_dim_size)
// and their .out overloads with `*, Tensor(a!) out` last.
using Serve = std::optional<at::Tensor> (*)(const at::Tensor &self, std::vector<int64_t> dims,
                                            const c10::IValue &norm, const c10::IValue &arg3);

std::optional<at::Tensor> serve_c2c(const at::Tensor &self, std::vector<int64_t> dims,
                                    const c10::IValue &norm, const c10::IValue &forward)
{
    if (!served(self, true, dims)) return std::nullopt;
    return c2c(self, std::move(dims), norm.toInt(), forward.toBool());
}

std::optional<at::Tensor> serve_r2c(const at::Tensor &self, std::vector<int64_t> dims,
                                    const c10::IValue &norm, const c10::IValue &onesided)
{
    if (!onesided.toBool() || !optimized_path(dims) || !served(self, false, dims))
        return std::nullopt;
    return r2c(self, dims, norm.toInt());
}

std::optional<at::Tensor> serve_c2r(const at::Tensor &self, std::vector<int64_t> dims,
                                    const c10::IValue &norm, const c10::IValue &last)
{
    if (!last.isInt() || !optimized_path(dims) || !served(self, true, dims)) return std::nullopt;
    return c2r(self, dims, norm.toInt(), last.toInt());
}

template <Op op, Serve serve>
void boxed(const c10::OperatorHandle &h, c10::DispatchKeySet ks, torch::jit::Stack *s)
{
    constexpr bool has_out = op == kC2cOut || op == kR2cOut || op == kC2rOut;
    constexpr size_t nargs = has_out ? 5 : 4;
    const at::Tensor &self = torch::jit::peek(*s, 0, nargs).toTensor();
    auto dims = dims_of(torch::jit::peek(*s, 1, nargs), self.dim());
    std::optional<at::Tensor> r;
    if (dims) {
        // PyTorch's generated CUDA wrapper sets the tensor's device; a boxed override must.
        c10::cuda::CUDAGuard g(self.device());
        try {
            r = serve(self, std::move(*dims), torch::jit::peek(*s, 2, nargs),
                      torch::jit::peek(*s, 3, nargs));
        } catch (const NoPlan &) {
            st().plan_failures++;
            r.reset();
        }
    }
    if (!r) return fall_back(op, h, ks, s);
    finish(s, nargs, std::move(*r), has_out);
}

torch::CppFunction kernel(Op op)
{
    using F = torch::CppFunction;
    switch (op) {
    case kC2c:
        return F::makeFromBoxedFunction<&boxed<kC2c, serve_c2c>>();
    case kC2cOut:
        return F::makeFromBoxedFunction<&boxed<kC2cOut, serve_c2c>>();
    case kR2c:
        return F::makeFromBoxedFunction<&boxed<kR2c, serve_r2c>>();
    case kR2cOut:
        return F::makeFromBoxedFunction<&boxed<kR2cOut, serve_r2c>>();
    case kC2r:
        return F::makeFromBoxedFunction<&boxed<kC2r, serve_c2r>>();
    default:
        return F::makeFromBoxedFunction<&boxed<kC2rOut, serve_c2r>>();
    }
}

// Drops PyTorch's "Overriding a previously registered kernel" (overriding is the point),
// passes every other warning on.
struct QuietOverride : c10::WarningHandler {
    c10::WarningHandler *prev = nullptr;
    void process(const c10::Warning &w) override
    {
        if (w.msg().find("Overriding a previously registered kernel") != std::string::npos) return;
        if (prev) prev->process(w);
    }
};

std::string op_name(Op op)
{
    std::string n = kOps[op].first + 6; // without "aten::"
    if (*kOps[op].second) n += std::string(".") + kOps[op].second;
    return n;
}

} // namespace

// ---- the C interface (agile_torch/fft.py) ---------------------------------------------------

// Register the hook (idempotent). 0, or -1 with agile_aten_error() saying why.
AGILE_ATEN_API int agile_aten_fft_enable(void)
{
    State &s = st();
    std::lock_guard<std::mutex> g(s.mu);
    if (s.lib) return 0;
    try {
        auto &d = c10::Dispatcher::singleton();
        for (int i = 0; i < kNumOps; i++) {
            auto h = d.findSchemaOrThrow(kOps[i].first, kOps[i].second);
            TORCH_CHECK(h.hasKernelForDispatchKey(c10::DispatchKey::CUDA), "aten::", op_name(Op(i)),
                        " has no CUDA kernel to fall back to");
            s.orig[i] = h.getComputedKernelForDispatchKey(c10::DispatchKey::CUDA);
        }
        QuietOverride quiet;
        quiet.prev = c10::WarningUtils::get_warning_handler();
        c10::WarningUtils::WarningHandlerGuard wg(&quiet);
        auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "aten",
                                                    c10::DispatchKey::CUDA, __FILE__, __LINE__);
        for (int i = 0; i < kNumOps; i++)
            lib->impl(op_name(Op(i)).c_str(), kernel(Op(i)));
        s.lib = std::move(lib);
        return 0;
    } catch (const std::exception &e) {
        s.error = e.what();
        return -1;
    }
}

AGILE_ATEN_API const char *agile_aten_error(void)
{
    return st().error.c_str();
}

// Put PyTorch's kernels back and release this process's plans (behind their queued execs).
AGILE_ATEN_API void agile_aten_fft_disable(void)
{
    State &s = st();
    std::vector<std::pair<int, agile_handle_t>> plans;
    {
        std::lock_guard<std::mutex> g(s.mu);
        s.lib.reset();
        for (auto &p : s.lru)
            plans.emplace_back(p.first.dev, p.second);
        s.lru.clear();
        s.plans.clear();
    }
    for (auto &p : plans)
        release_plan(p.first, p.second);
}

AGILE_ATEN_API int agile_aten_fft_enabled(void)
{
    std::lock_guard<std::mutex> g(st().mu);
    return st().lib != nullptr;
}

// The torch.cuda.MemPool of device (agile_torch.pool(device).id); id0 = id1 = 0 forgets it.
AGILE_ATEN_API int agile_aten_set_pool(int device, unsigned long long id0, unsigned long long id1)
{
    if (device < 0 || device >= kMaxDev) return -1;
    std::lock_guard<std::mutex> g(st().mu);
    if (id0 == 0 && id1 == 0)
        st().pool[device].reset();
    else
        st().pool[device] = c10::cuda::MempoolId_t{id0, id1};
    return 0;
}

// Whether the current CUDA allocator is agile's (agile_torch.enable()).
AGILE_ATEN_API void agile_aten_set_allocator(int is_agile)
{
    st().alloc_is_agile.store(is_agile != 0);
}

// served, fallback, plans_created, plans held now, plans the worker could not make.
AGILE_ATEN_API void agile_aten_fft_stats(unsigned long long out[5])
{
    State &s = st();
    out[0] = s.served.load();
    out[1] = s.fallback.load();
    out[2] = s.plans_created.load();
    out[4] = s.plan_failures.load();
    std::lock_guard<std::mutex> g(s.mu);
    out[3] = s.lru.size();
}

// The PyTorch version this library was built against (agile_torch.fft compares it).
AGILE_ATEN_API const char *agile_aten_torch_version(void)
{
    return TORCH_VERSION;
}
