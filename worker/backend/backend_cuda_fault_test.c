/* backend_cuda_fault_test — the cuda backend's rollback paths, against mockcuda (ctest puts
 * it first on LD_LIBRARY_PATH): every driver call of window and lease creation and of
 * lease destruction is made to fail in turn, and the window must stay usable, keep its
 * sink, leak nothing, and go back to the same number of mappings. Not a GPU test: it
 * checks backend_cuda.c's bookkeeping against the VMM rules the mock enforces. */
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
#include <unistd.h>

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static void (*mock_fail)(const char *, int);
static void (*mock_stats)(int *, int *, unsigned long long *);
static agile__backend *be;

static int setup(void **state)
{
    char why[256];
    void *h;
    (void)state;
    if (agile__backend_open(AGILE_BACKEND_CUDA, &be, why, sizeof why) != AGILE_OK) {
        fprintf(stderr, "cuda backend: %s (LD_LIBRARY_PATH must hold mockcuda)\n", why);
        return -1;
    }
    h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) return -1;
    *(void **)&mock_fail = dlsym(h, "mockcuda_fail");
    *(void **)&mock_stats = dlsym(h, "mockcuda_stats");
    dlclose(h);
    if (!mock_fail || !mock_stats) {
        fprintf(stderr, "libcuda.so.1 is not mockcuda: refusing to inject faults\n");
        return -1;
    }
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_create_faults),
        cmocka_unit_test(test_lease_destroy_faults),
        cmocka_unit_test(test_window_create_faults),
        cmocka_unit_test(test_destroy_releases_everything),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
