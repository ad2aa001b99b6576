/* backend_cuda_fault_test — the cuda backend's rollback paths, against mockcuda (ctest puts
 * it first on LD_LIBRARY_PATH): every driver call of window and lease creation and of
 * lease destruction is made to fail in turn, and the window must stay usable, keep its
 * sink, leak nothing, and go back to the same number of mappings. The lease pool too: every
 * driver call of a refill, and of a pooled lease, fails in turn; the background thread backs
 * off and recovers; a leased chunk is never pooled again. Not a GPU test: it checks
 * backend_cuda.c's bookkeeping against the VMM rules the mock enforces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "backend.h"
#include "core.h"
#include "cudadrv.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static void (*mock_fail)(const char *, int);
static void (*mock_sticky)(int);
static void (*mock_stats)(int *, int *, unsigned long long *);
static agile__backend *be;

static int setup(void **state)
{
    char why[256];
    void *h;
    (void)state;
    if (agile__backend_open(AGILE_BACKEND_KIND_CUDA, &be, why, sizeof why) != AGILE_OK) {
        fprintf(stderr, "cuda backend: %s (LD_LIBRARY_PATH must hold mockcuda)\n", why);
        return -1;
    }
    h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) return -1;
    *(void **)&mock_fail = dlsym(h, "mockcuda_fail");
    *(void **)&mock_stats = dlsym(h, "mockcuda_stats");
    *(void **)&mock_sticky = dlsym(h, "mockcuda_sticky");
    dlclose(h);
    if (!mock_fail || !mock_stats || !mock_sticky) {
        fprintf(stderr, "libcuda.so.1 is not mockcuda: refusing to inject faults\n");
        return -1;
    }
    /* The pool's thread would make driver calls beside the injected faults: the tests that
     * are not about the pool run without it, the pool tests fill it by hand. */
    if (agile__lease_pool_config(be, 0, 0, 0, 0) != AGILE_OK) return -1;
    return agile__backend_enter(be, 0) == AGILE_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (be) {
        agile__backend_leave(be);
        agile__backend_close(be);
    }
    return 0;
}

static void wr(uint64_t va, uint64_t v)
{
    assert_int_equal(agile__cu.cuMemcpyHtoD(va, &v, sizeof v), CUDA_SUCCESS);
}

static uint64_t rd(uint64_t va)
{
    uint64_t v = 0;
    assert_int_equal(agile__cu.cuMemcpyDtoH(&v, va, sizeof v), CUDA_SUCCESS);
    return v;
}

static int nmaps(void)
{
    int m, r;
    unsigned long long u;
    mock_stats(&m, &r, &u);
    return m;
}

/* The window works: sink aliasing holds and a lease at (off, len) maps, reads zeros,
 * keeps data, and goes again. */
static void check_window(agile__window *w, uint64_t off, uint64_t len)
{
    uint64_t b = agile__window_base(w), W = agile__window_size(w);
    uint64_t c = agile__window_sink_chunk(w);
    agile__lease *l;
    int fd;
    wr(b + W - 8, 0x77);
    assert_int_equal(rd(b + c - 8), 0x77);
    assert_int_equal(agile__lease_create(w, off, len, &l, &fd), AGILE_OK);
    close(fd);
    assert_int_equal(rd(b + off), 0);
    assert_int_equal(rd(b + off + len - 8), 0);
    wr(b + off, 1);
    assert_int_equal(rd(b + off), 1);
    agile__lease_destroy(l);
}

static const char *const lease_fns[] = {"cuMemCreate",
                                        "cuMemUnmap",
                                        "cuMemMap",
                                        "cuMemSetAccess",
                                        "cuMemsetD8Async",
                                        "cuStreamSynchronize",
                                        "cuMemExportToShareableHandle"};

static void test_lease_create_faults(void **state)
{
    agile__window *w;
    const uint64_t W = 16 * GiB; /* 16 MiB sink chunks: 8 granules each */
    /* inside a chunk (fragments), straddling two chunks, and chunk-aligned */
    const uint64_t offs[] = {18 * MiB, 30 * MiB, 64 * MiB}, lens[] = {4 * MiB, 6 * MiB, 16 * MiB};
    int m0, failures = 0;
    (void)state;

    assert_int_equal(agile__window_create(be, 0, W, 32 * MiB, &w), AGILE_OK);
    m0 = nmaps();
    for (size_t k = 0; k < AGILE_ARRAY_LEN(offs); k++) {
        for (size_t f = 0; f < AGILE_ARRAY_LEN(lease_fns); f++) {
            for (int n = 1; n <= 12; n++) {
                agile__lease *l;
                int fd;
                mock_fail(lease_fns[f], n);
                int rv = agile__lease_create(w, offs[k], lens[k], &l, &fd);
                mock_fail("", 0);
                if (rv == AGILE_OK) {
                    close(fd);
                    agile__lease_destroy(l);
                } else {
                    failures++;
                    assert_int_equal(agile_err_class(rv), AGILE_ECUDA);
                    assert_int_equal(fd, -1);
                }
                assert_int_equal(nmaps(), m0);
                check_window(w, offs[k], lens[k]);
                assert_int_equal(nmaps(), m0);
            }
        }
    }
    print_message("lease create: %d injected failures recovered\n", failures);
    assert_true(failures > 20);
    agile__window_destroy(w);
}

static void test_lease_destroy_faults(void **state)
{
    agile__window *w;
    const uint64_t W = 16 * GiB, off = 18 * MiB, len = 4 * MiB;
    static const char *const fns[] = {"cuMemMap", "cuMemSetAccess", "cuMemUnmap"};
    int m0;
    (void)state;

    assert_int_equal(agile__window_create(be, 0, W, 32 * MiB, &w), AGILE_OK);
    m0 = nmaps();
    for (size_t f = 0; f < AGILE_ARRAY_LEN(fns); f++) {
        for (int n = 1; n <= 10; n++) {
            agile__lease *l;
            int fd;
            assert_int_equal(agile__lease_create(w, off, len, &l, &fd), AGILE_OK);
            close(fd);
            mock_fail(fns[f], n);
            agile__lease_destroy(l);
            mock_fail("", 0);
            if (strcmp(fns[f], "cuMemUnmap") == 0 && n == 1) {
                /* the lease itself could not be unmapped: the window refuses new leases
                 * rather than hand out memory it cannot account for */
                agile__lease *l2;
                assert_int_equal(agile__lease_create(w, 64 * MiB, len, &l2, &fd), AGILE_EINTERNAL);
                agile__window_destroy(w);
                assert_int_equal(agile__window_create(be, 0, W, 32 * MiB, &w), AGILE_OK);
                continue;
            }
            /* a failed coalesce leaves fragments, never a hole */
            check_window(w, off, len);
            check_window(w, 64 * MiB, 16 * MiB);
            assert_true(nmaps() >= m0);
        }
    }
    agile__window_destroy(w);
}

static void test_window_create_faults(void **state)
{
    static const char *const fns[] = {
        "cuMemAddressReserve", "cuMemCreate",         "cuMemMap",  "cuMemSetAccess",
        "cuMemsetD8Async",     "cuStreamSynchronize", "cuMemUnmap"};
    int m0, r0, m, r;
    unsigned long long u0, u;
    (void)state;
    mock_stats(&m0, &r0, &u0);
    for (size_t f = 0; f < AGILE_ARRAY_LEN(fns); f++) {
        for (int n = 1; n <= 4; n++) {
            agile__window *w;
            mock_fail(fns[f], n);
            int rv = agile__window_create(be, 0, 16 * GiB, 32 * MiB, &w);
            mock_fail("", 0);
            if (rv == AGILE_OK) {
                check_window(w, 18 * MiB, 4 * MiB);
                agile__window_destroy(w);
            }
            mock_stats(&m, &r, &u);
            assert_int_equal(m, m0);
            assert_int_equal(r, r0);
            assert_int_equal(u, u0);
        }
    }
}

static void test_destroy_releases_everything(void **state)
{
    agile__window *w;
    agile__lease *l;
    agile__pmem *p;
    uint64_t a;
    int fd, m0, r0, m, r;
    unsigned long long u0, u;
    (void)state;
    mock_stats(&m0, &r0, &u0);
    assert_int_equal(agile__window_create(be, 0, 64 * GiB, 64 * MiB, &w), AGILE_OK);
    for (uint64_t i = 0; i < 6; i++) {
        assert_int_equal(agile__lease_create(w, i * 70 * MiB, 6 * MiB, &l, &fd), AGILE_OK);
        close(fd);
    }
    assert_int_equal(agile__pmem_alloc(be, 0, 5 * MiB, &p, &a), AGILE_OK);
    agile__window_destroy(w);
    agile__pmem_free(p);
    mock_stats(&m, &r, &u);
    assert_int_equal(m, m0);
    assert_int_equal(r, r0);
    assert_int_equal(u, u0);
}

static agile__pool_stats pstats(void)
{
    agile__pool_stats st;
    assert_int_equal(agile__lease_pool_stats(be, 0, &st), AGILE_OK);
    return st;
}

/* Every granule's ends read zero (mockcuda fills them with 0xee in fresh memory). */
static void check_zero(uint64_t va, uint64_t len)
{
    for (uint64_t g = 0; g < len; g += 2 * MiB) {
        assert_int_equal(rd(va + g), 0);
        assert_int_equal(rd(va + g + 2 * MiB - 8), 0);
    }
}

static const char *const refill_fns[] = {
    "cuMemAddressReserve", "cuMemCreate",         "cuMemMap",   "cuMemSetAccess",
    "cuMemsetD8Async",     "cuStreamSynchronize", "cuMemUnmap", "cuMemExportToShareableHandle"};

static void test_pool_refill_faults(void **state)
{
    int m0, r0, m, r, failures = 0;
    unsigned long long u0, u;
    (void)state;
    mock_stats(&m0, &r0, &u0);
    for (size_t f = 0; f < AGILE_ARRAY_LEN(refill_fns); f++) {
        for (int n = 1; n <= 3; n++) {
            agile__pool_stats st0, st;
            assert_int_equal(agile__lease_pool_config(be, 0, 2, 64 * MiB, AGILE_LEASE_POOL_MANUAL),
                             AGILE_OK);
            st0 = pstats();
            mock_fail(refill_fns[f], n);
            int rv = agile__lease_pool_fill(be, 0);
            mock_fail("", 0);
            st = pstats();
            if (rv != AGILE_OK) {
                failures++;
                assert_int_equal(agile_err_class(rv), AGILE_ECUDA);
                assert_int_equal(st.refill_failures, st0.refill_failures + 1);
                assert_int_equal(st.last_error, rv);
                assert_true(st.ready < 2);
            }
            /* a failed refill leaves no mapping behind and the pool fills again */
            assert_int_equal(nmaps(), m0);
            assert_int_equal(agile__lease_pool_fill(be, 0), AGILE_OK);
            st = pstats();
            assert_int_equal(st.ready, 2);
            assert_int_equal(st.chunk_size, 64 * MiB);
            /* off: every pooled chunk and the scratch go */
            assert_int_equal(agile__lease_pool_config(be, 0, 0, 0, 0), AGILE_OK);
            assert_int_equal(pstats().ready, 0);
            mock_stats(&m, &r, &u);
            assert_int_equal(m, m0);
            assert_int_equal(r, r0);
            assert_int_equal(u, u0);
        }
    }
    print_message("pool refill: %d injected failures recovered\n", failures);
    assert_true(failures >= (int)AGILE_ARRAY_LEN(refill_fns));
}

static void test_pooled_lease_faults(void **state)
{
    agile__window *w;
    const uint64_t W = 16 * GiB; /* 16 MiB sink chunks: a 64 MiB lease replaces 4, or 5 */
    const uint64_t offs[] = {64 * MiB, 70 * MiB}, len = 64 * MiB;
    static const char *const fns[] = {"cuMemUnmap", "cuMemMap", "cuMemSetAccess", "cuMemCreate",
                                      "cuMemExportToShareableHandle"};
    int m0, r0, m, r, failures = 0;
    unsigned long long u0, u;
    (void)state;
    mock_stats(&m0, &r0, &u0);
    assert_int_equal(agile__window_create(be, 0, W, 32 * MiB, &w), AGILE_OK);
    int mw = nmaps();
    for (size_t k = 0; k < AGILE_ARRAY_LEN(offs); k++) {
        for (size_t f = 0; f < AGILE_ARRAY_LEN(fns); f++) {
            for (int n = 1; n <= 8; n++) {
                agile__lease *l;
                agile__pool_stats st0, st;
                int fd;
                assert_int_equal(agile__lease_pool_config(be, 0, 2, len, AGILE_LEASE_POOL_MANUAL),
                                 AGILE_OK);
                assert_int_equal(agile__lease_pool_fill(be, 0), AGILE_OK);
                st0 = pstats();
                mock_fail(fns[f], n);
                int rv = agile__lease_create(w, offs[k], len, &l, &fd);
                mock_fail("", 0);
                st = pstats();
                /* served from the pool, whatever happened next */
                assert_int_equal(st.hits, st0.hits + 1);
                assert_int_equal(st.ready, 1);
                if (rv == AGILE_OK) {
                    assert_true(fd >= 0);
                    close(fd);
                    check_zero(agile__window_base(w) + offs[k], len);
                    agile__lease_destroy(l);
                } else {
                    failures++;
                    assert_int_equal(agile_err_class(rv), AGILE_ECUDA);
                    assert_int_equal(fd, -1);
                }
                /* the chunk is gone either way: leased or failed, never pooled again */
                assert_int_equal(pstats().ready, 1);
                assert_int_equal(nmaps(), mw);
                check_window(w, offs[k], len);
                assert_int_equal(nmaps(), mw);
            }
        }
    }
    print_message("pooled lease: %d injected failures recovered\n", failures);
    assert_true(failures >= 6);
    assert_int_equal(agile__lease_pool_config(be, 0, 0, 0, 0), AGILE_OK);
    agile__window_destroy(w);
    mock_stats(&m, &r, &u);
    assert_int_equal(m, m0);
    assert_int_equal(r, r0);
    assert_int_equal(u, u0);
}

/* A tenant's chunk goes back to the driver, not the pool: the next lease at the same place
 * gets another, zeroed chunk, and the pool only ever grows by refills. */
static void test_pool_never_recycles(void **state)
{
    agile__window *w;
    agile__lease *l;
    agile__pool_stats st0, st;
    const uint64_t off = 64 * MiB, len = 64 * MiB;
    int fd;
    (void)state;
    assert_int_equal(agile__window_create(be, 0, 64 * GiB, 64 * MiB, &w), AGILE_OK);
    assert_int_equal(agile__lease_pool_config(be, 0, 2, len, AGILE_LEASE_POOL_MANUAL), AGILE_OK);
    assert_int_equal(agile__lease_pool_fill(be, 0), AGILE_OK);
    st0 = pstats();
    for (int i = 0; i < 4; i++) {
        uint64_t b = agile__window_base(w) + off;
        assert_int_equal(agile__lease_create(w, off, len, &l, &fd), AGILE_OK);
        close(fd);
        check_zero(b, len);
        for (uint64_t g = 0; g < len; g += 2 * MiB)
            wr(b + g, 0xdead0000 + i);
        agile__lease_destroy(l);
        st = pstats();
        assert_int_equal(st.ready, 1); /* not given back */
        assert_int_equal(agile__lease_pool_fill(be, 0), AGILE_OK);
    }
    st = pstats();
    assert_int_equal(st.hits, st0.hits + 4);
    assert_int_equal(st.refills, st0.refills + 4);
    /* another size is not pooled */
    assert_int_equal(agile__lease_create(w, off, 2 * MiB, &l, &fd), AGILE_OK);
    close(fd);
    agile__lease_destroy(l);
    assert_int_equal(pstats().other_sizes, st.other_sizes + 1);
    assert_int_equal(pstats().ready, 2);
    assert_int_equal(agile__lease_pool_config(be, 0, 0, 0, 0), AGILE_OK);
    agile__window_destroy(w);
}

/* A full GPU: a lease the pool cannot serve gets the pool's memory instead of failing. */
static void test_pool_drains_for_a_full_gpu(void **state)
{
    agile__window *w;
    agile__lease *l;
    int fd;
    (void)state;
    assert_int_equal(agile__window_create(be, 0, 16 * GiB, 32 * MiB, &w), AGILE_OK);
    assert_int_equal(agile__lease_pool_config(be, 0, 2, 64 * MiB, AGILE_LEASE_POOL_MANUAL),
                     AGILE_OK);
    assert_int_equal(agile__lease_pool_fill(be, 0), AGILE_OK);
    mock_fail("cuMemCreate", 1); /* CUDA_ERROR_OUT_OF_MEMORY */
    assert_int_equal(agile__lease_create(w, 18 * MiB, 4 * MiB, &l, &fd), AGILE_OK);
    mock_fail("", 0);
    close(fd);
    check_zero(agile__window_base(w) + 18 * MiB, 4 * MiB);
    assert_int_equal(pstats().ready, 0);
    assert_int_equal(pstats().drains, 1);
    agile__lease_destroy(l);
    /* nothing pooled: the failure stands */
    mock_fail("cuMemCreate", 1);
    assert_int_equal(agile_err_class(agile__lease_create(w, 18 * MiB, 4 * MiB, &l, &fd)),
                     AGILE_ECUDA);
    mock_fail("", 0);
    assert_int_equal(fd, -1);
    assert_int_equal(agile__lease_pool_config(be, 0, 0, 0, 0), AGILE_OK);
    agile__window_destroy(w);
}

static bool wait_ready(unsigned want, int ms)
{
    for (int i = 0; i < ms; i++) {
        if (pstats().ready == want) return true;
        usleep(1000);
    }
    return false;
}

/* The refill thread: a failure is retried after a backoff, a hit is replaced, and turning
 * the pool off stops it and frees everything. */
static void test_pool_background(void **state)
{
    agile__window *w;
    agile__lease *l;
    agile__pool_stats st;
    int fd, m0, r0, m, r;
    unsigned long long u0, u;
    (void)state;
    mock_stats(&m0, &r0, &u0);
    /* no driver call from this thread until the pool is full: the fault hits the refill */
    mock_fail("cuMemCreate", 1);
    assert_int_equal(agile__lease_pool_config(be, 0, 2, 64 * MiB, 0), AGILE_OK);
    assert_true(wait_ready(2, 5000));
    mock_fail("", 0);
    st = pstats();
    assert_true(st.refill_failures >= 1);
    assert_int_equal(agile_err_class(st.last_error), AGILE_ECUDA);
    assert_true(st.refills >= 2);

    assert_int_equal(agile__window_create(be, 0, 64 * GiB, 64 * MiB, &w), AGILE_OK);
    for (int i = 0; i < 3; i++) {
        assert_true(wait_ready(2, 5000));
        assert_int_equal(agile__lease_create(w, 64 * MiB, 64 * MiB, &l, &fd), AGILE_OK);
        close(fd);
        check_zero(agile__window_base(w) + 64 * MiB, 64 * MiB);
        agile__lease_destroy(l);
    }
    assert_true(wait_ready(2, 5000));
    assert_true(pstats().hits >= 3);
    assert_int_equal(agile__lease_pool_config(be, 0, 0, 0, 0), AGILE_OK);
    agile__window_destroy(w);
    mock_stats(&m, &r, &u);
    assert_int_equal(m, m0);
    assert_int_equal(r, r0);
    assert_int_equal(u, u0);
}

/* A sticky error poisons the context (every call fails); agile__backend_reset brings it
 * back: windows at the same base with their leases' data, sinks zeroed, protected memory at
 * the same address, the pool refilled, new leases, and the generation counts the reset. */
static void test_reset_restores_windows(void **state)
{
    agile__window *w, *w2;
    agile__lease *l1, *l2, *l3, *lx = NULL;
    agile__pmem *pm;
    const uint64_t W = 1 * GiB;
    uint64_t b, b2, pa = 0, ns = 0;
    int fd, m0;
    CUevent ev;
    (void)state;

    assert_int_equal(agile__lease_pool_config(be, 0, 2, 64 * MiB, AGILE_LEASE_POOL_MANUAL),
                     AGILE_OK);
    assert_int_equal(agile__lease_pool_fill(be, 0), AGILE_OK);
    assert_int_equal(agile__window_create(be, 0, W, 2 * MiB, &w), AGILE_OK);
    assert_int_equal(agile__window_create(be, 0, 64 * MiB, 2 * MiB, &w2), AGILE_OK);
    b = agile__window_base(w);
    b2 = agile__window_base(w2);
    assert_int_equal(agile__lease_create(w, 0, 64 * MiB, &l1, &fd), AGILE_OK); /* pooled */
    close(fd);
    assert_int_equal(agile__lease_create(w, 80 * MiB, 6 * MiB, &l2, &fd), AGILE_OK);
    close(fd);
    assert_int_equal(agile__lease_create(w2, 0, 2 * MiB, &l3, &fd), AGILE_OK);
    close(fd);
    assert_int_equal(agile__pmem_alloc(be, 0, 4096, &pm, &pa), AGILE_OK);
    wr(b + 8, 0x1111);
    wr(b + 80 * MiB + 6 * MiB - 8, 0x2222);
    wr(b2 + 16, 0x3333);
    wr(b + W - 8, 0x77); /* the sink: must read 0 after the reset (fresh, zeroed) */
    m0 = nmaps();

    /* the fault: the next completion reports it, then every call fails */
    mock_sticky(CUDA_ERROR_LAUNCH_FAILED);
    assert_int_equal(agile__cu.cuEventCreate(&ev, 0), CUDA_SUCCESS);
    assert_int_equal(agile__cu.cuEventQuery(ev), CUDA_ERROR_LAUNCH_FAILED);
    assert_true(agile__cu_sticky(CUDA_ERROR_LAUNCH_FAILED));
    assert_false(agile__cu_sticky(CUDA_ERROR_OUT_OF_MEMORY));
    assert_int_equal(agile__cu.cuMemsetD8Async(b, 0, 8, NULL), CUDA_ERROR_LAUNCH_FAILED);
    assert_int_equal(agile__lease_create(w, 128 * MiB, 2 * MiB, &lx, &fd),
                     agile_err_cuda(CUDA_ERROR_LAUNCH_FAILED));

    assert_int_equal(agile__backend_generation(be, 0), 0);
    agile__backend_leave(be); /* a reset waits for every caller inside the context */
    assert_int_equal(agile__backend_reset(be, 0, &ns), AGILE_OK);
    assert_int_equal(agile__backend_enter(be, 0), AGILE_OK);
    assert_int_equal(agile__backend_generation(be, 0), 1);
    print_message("reset: %.3f ms\n", (double)ns / 1e6);

    assert_int_equal(agile__window_base(w), b);
    assert_int_equal(agile__window_base(w2), b2);
    assert_int_equal(rd(b + 8), 0x1111);
    assert_int_equal(rd(b + 80 * MiB + 6 * MiB - 8), 0x2222);
    assert_int_equal(rd(b2 + 16), 0x3333);
    assert_int_equal(rd(b + W - 8), 0);
    wr(b + W - 8, 0x78);
    assert_int_equal(agile__window_sink_chunk(w), 2 * MiB);
    assert_int_equal(rd(b + 72 * MiB - 8), 0x78); /* the same sink byte */
    assert_int_equal(nmaps(), m0); /* the same mappings, the protected memory's included */
    wr(pa, 0x4444);
    assert_int_equal(rd(pa), 0x4444);
    /* the pool was emptied (its chunks died with the context) and fills again */
    assert_int_equal(pstats().ready, 0);
    assert_int_equal(agile__lease_pool_fill(be, 0), AGILE_OK);
    assert_int_equal(pstats().ready, 2);
    /* new leases, pooled and not, read zeros and keep data */
    uint64_t hits = pstats().hits;
    assert_int_equal(agile__lease_create(w, 128 * MiB, 64 * MiB, &lx, &fd), AGILE_OK);
    close(fd);
    assert_int_equal(pstats().hits, hits + 1);
    check_zero(b + 128 * MiB, 64 * MiB);
    wr(b + 128 * MiB, 5);
    assert_int_equal(rd(b + 128 * MiB), 5);
    agile__lease_destroy(lx);
    assert_int_equal(agile__lease_create(w2, 32 * MiB, 2 * MiB, &lx, &fd), AGILE_OK);
    close(fd);
    check_zero(b2 + 32 * MiB, 2 * MiB);
    agile__lease_destroy(lx);
    agile__lease_destroy(l2);
    agile__pmem_free(pm);
    agile__lease_destroy(l3);
    agile__lease_destroy(l1);
    agile__window_destroy(w2);
    agile__window_destroy(w);
    assert_int_equal(agile__lease_pool_config(be, 0, 0, 0, 0), AGILE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_create_faults),
        cmocka_unit_test(test_lease_destroy_faults),
        cmocka_unit_test(test_window_create_faults),
        cmocka_unit_test(test_destroy_releases_everything),
        cmocka_unit_test(test_pool_refill_faults),
        cmocka_unit_test(test_pooled_lease_faults),
        cmocka_unit_test(test_pool_never_recycles),
        cmocka_unit_test(test_pool_drains_for_a_full_gpu),
        cmocka_unit_test(test_pool_background),
        cmocka_unit_test(test_reset_restores_windows),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
