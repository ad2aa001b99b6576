/* client_test: a client owns what its session made. Against a real agile-worker (host
 * backend, foreground, private runtime dir): the default client's window, arena, ring and
 * fft plans are freed by agile_disconnect (the ASan build's leak check sees anything left),
 * the next implicit call connects a new default client, an explicit client's ring goes with
 * it; and the object table's own rules (objtab.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agile/agile.h"
#include "agile/fft.h"
#include "agile/ring.h"
#include "core.h"
#include "cudadrv.h"
#include "objtab.h"

extern char **environ;

static const char *g_backend = "host"; /* "cuda" on mockcuda: client_test cuda-mock */
static char g_dir[64];
static pid_t g_worker = -1;
static agile_connect_opts g_opts;

static int start_worker(void **state)
{
    char *argv[] = {AGILE_WORKER_PATH, "--foreground", "--runtime-dir", g_dir, "--backend",
                    (char *)g_backend, NULL};
    agile_client *c = NULL;
    snprintf(g_dir, sizeof g_dir, "/tmp/agile-client-test.XXXXXX");
    if (!mkdtemp(g_dir) || posix_spawn(&g_worker, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    g_opts = (agile_connect_opts){g_dir, 5000, 1, NULL, g_backend};
    /* Up once it takes a connection (a loaded machine can take seconds to start it). */
    for (int i = 0; i < 3000 && agile_connect(&g_opts, &c) != AGILE_OK; i++)
        usleep(20000);
    if (!c) return -1;
    agile_disconnect(c);
    return 0;
}

static int stop_worker(void **state)
{
    char cmd[128];
    if (g_worker > 0) {
        kill(g_worker, SIGTERM);
        waitpid(g_worker, NULL, 0);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* On cuda the client works in the device's primary context, current on its thread, as it is
 * under PyTorch. */
static bool cuda(void)
{
    return strcmp(g_backend, "cuda") == 0;
}

static void cuda_context(void)
{
    CUdevice dev;
    CUcontext ctx;
    if (!cuda()) return;
    assert_int_equal(agile__cuda_load(NULL, 0), AGILE_OK);
    assert_int_equal(agile__cu.cuDeviceGet(&dev, 0), CUDA_SUCCESS);
    assert_int_equal(agile__cu.cuDevicePrimaryCtxRetain(&ctx, dev), CUDA_SUCCESS);
    assert_int_equal(agile__cu.cuCtxSetCurrent(ctx), CUDA_SUCCESS);
}

static void test_disconnect_frees_the_default_clients_session(void **state)
{
    agile_client *c = NULL, *c2 = NULL;
    agile_handle_t plan = 0;
    uint64_t base, size, in_bytes;
    long long n[1] = {256};
    agile_mem_stats st;

    cuda_context();
    assert_int_equal(agile_init(&g_opts), AGILE_OK);
    uint8_t *p = agile_malloc(1 << 20, 0, NULL);
    assert_non_null(p);
    if (cuda()) {
        /* the ring (stream-ordered posts would block mockcuda's legacy stream) */
        assert_int_equal(agile_ring_nop(NULL, 0, 1), AGILE_OK);
        /* an event in the pool: a block freed on a stream, settled by empty_cache */
        CUstream s;
        assert_int_equal(agile__cu.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
        void *q = agile_malloc(4096, 0, s);
        assert_non_null(q);
        agile_free(q, 4096, 0, s);
        assert_int_equal(agile_empty_cache(), AGILE_OK);
        assert_int_equal(agile__cu.cuStreamDestroy(s), CUDA_SUCCESS);
    } else {
        assert_int_equal(agile_memset_async(p, 7, 4096, NULL), AGILE_OK); /* the ring */
        assert_int_equal(agile_barrier(NULL, NULL), AGILE_OK);
        assert_int_equal(p[4095], 7);
    }
    if (!cuda()) { /* mockcuda has no cuFFT */
        assert_int_equal(agile_fft_plan_many(0, 1, n, NULL, 0, 0, NULL, 0, 0, AGILE_FFT_C2C_T, 4,
                                             0, &plan),
                         AGILE_OK);
        assert_int_equal(agile_fft_plan_extent(plan, &in_bytes, NULL), AGILE_OK);
        assert_int_equal(in_bytes, 4 * 256 * 8);
    }
    assert_int_equal(agile_pool_window(0, &base, &size), AGILE_OK);
    assert_true((uint64_t)(uintptr_t)p - base < size);

    assert_int_equal(agile_default_client(&c), AGILE_OK);
    agile_disconnect(c);
    /* Nothing of that session is known any more, and nothing connects by asking. */
    assert_int_equal(agile_pool_window(0, &base, &size), AGILE_ENOENT);
    assert_int_equal(agile_fft_plan_extent(plan, NULL, NULL), AGILE_EHANDLE);
    assert_int_equal(agile_memory_stats(0, &st), AGILE_OK);
    assert_int_equal(st.window_bytes, 0);
    agile_free(p, 1 << 20, 0, NULL); /* its window is gone: nothing to do */

    /* The next implicit call connects a new default client, with agile_init's options (no
     * autostart, this test's worker). */
    p = agile_malloc(4096, 0, NULL);
    assert_non_null(p);
    assert_int_equal(agile_default_client(&c2), AGILE_OK);
    assert_int_equal(agile_memory_stats(0, &st), AGILE_OK);
    assert_int_equal(st.allocated_bytes, 4096);
    agile_free(p, 4096, 0, NULL);
    agile_disconnect(c2);
}

static void test_explicit_client_owns_its_ring(void **state)
{
    agile_client *c = NULL;
    assert_int_equal(agile_connect(&g_opts, &c), AGILE_OK);
    assert_int_equal(agile_ring_nop(c, 0, 42), AGILE_OK);
    assert_true(agile_ring_completed(c, 0) >= 1);
    agile_disconnect(c);
}

/* ---- objtab ------------------------------------------------------------------------------ */

typedef struct rec {
    uint64_t v;
    int *freed; /* counts fini calls */
} rec;

static void rec_fini(void *r)
{
    ++*((rec *)r)->freed;
}

static rec *mkrec(uint64_t v, int *freed)
{
    rec *r = malloc(sizeof *r);
    assert_non_null(r);
    r->v = v;
    r->freed = freed;
    return r;
}

static void test_objtab(void **state)
{
    agile__objtab t;
    int freed = 0;
    rec out;
    uint64_t h5 = agile__handle_make(AGILE_OBJ_PLAN, 1, 5);
    uint64_t h5_next = agile__handle_make(AGILE_OBJ_PLAN, 2, 5); /* slot 5, reused */

    agile__objtab_init(&t);
    assert_int_equal(agile__objtab_get(&t, h5, AGILE_OBJ_PLAN, &out, sizeof out), 0);
    assert_null(agile__objtab_take(&t, h5, AGILE_OBJ_PLAN));
    assert_int_equal(agile__objtab_add(&t, h5, AGILE_OBJ_PLAN, mkrec(5, &freed), rec_fini), 0);
    assert_int_equal(agile__objtab_get(&t, h5, AGILE_OBJ_PLAN, &out, sizeof out), 1);
    assert_int_equal(out.v, 5);
    /* another generation of the slot, or another type: not this record */
    assert_int_equal(agile__objtab_get(&t, h5_next, AGILE_OBJ_PLAN, &out, sizeof out), 0);
    assert_int_equal(agile__objtab_get(&t, h5, AGILE_OBJ_MODULE, &out, sizeof out), 0);
    /* the same handle again replaces the stale record */
    assert_int_equal(agile__objtab_add(&t, h5, AGILE_OBJ_PLAN, mkrec(6, &freed), rec_fini), 0);
    assert_int_equal(freed, 1);
    assert_int_equal(agile__objtab_get(&t, h5, AGILE_OBJ_PLAN, &out, sizeof out), 1);
    assert_int_equal(out.v, 6);
    /* many: the table grows and finds every one */
    for (uint32_t i = 100; i < 5100; i++)
        assert_int_equal(agile__objtab_add(&t, agile__handle_make(AGILE_OBJ_FUNCTION, 1, i),
                                           AGILE_OBJ_FUNCTION, mkrec(i, &freed), rec_fini),
                         0);
    for (uint32_t i = 100; i < 5100; i += 7) {
        assert_int_equal(agile__objtab_get(&t, agile__handle_make(AGILE_OBJ_FUNCTION, 1, i),
                                           AGILE_OBJ_FUNCTION, &out, sizeof out),
                         1);
        assert_int_equal(out.v, i);
    }
    rec *r = agile__objtab_take(&t, h5, AGILE_OBJ_PLAN);
    assert_non_null(r);
    assert_int_equal(r->v, 6);
    free(r); /* taken: the caller's, no fini */
    assert_int_equal(agile__objtab_get(&t, h5, AGILE_OBJ_PLAN, &out, sizeof out), 0);
    agile__objtab_fini(&t); /* the 5000 left */
    assert_int_equal(freed, 1 + 5000);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "cuda-mock") == 0) g_backend = "cuda";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objtab),
        cmocka_unit_test_setup_teardown(test_disconnect_frees_the_default_clients_session,
                                        start_worker, stop_worker),
        cmocka_unit_test_setup_teardown(test_explicit_client_owns_its_ring, start_worker,
                                        stop_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
