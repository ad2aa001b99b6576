/* cudadrv_test — the driver loader where there is no driver (CI, development machines):
 * clear ENODEV reasons, no crash, the toolkit's stub never mistaken for a driver. On a
 * GPU machine the no-driver cases are skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "backend.h"
#include "core.h"
#include "cudadrv.h"
#include "cwin.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STUB "/usr/local/cuda/lib64/stubs/libcuda.so"
#define CHILD_ENV "AGILE_CUDADRV_TEST_CHILD"

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(agile__cu_name(CUDA_ERROR_NO_DEVICE), "CUDA_ERROR_NO_DEVICE");
    assert_string_equal(agile__cu_name(CUDA_ERROR_STUB_LIBRARY), "CUDA_ERROR_STUB_LIBRARY");
    assert_non_null(strstr(agile__cu_name((CUresult)12345), "12345"));
    assert_int_equal(agile__cu_err(CUDA_SUCCESS, "x"), AGILE_OK);
    assert_int_equal(agile__cu_err(CUDA_ERROR_OUT_OF_MEMORY, "x"),
                     AGILE_ECUDA | CUDA_ERROR_OUT_OF_MEMORY);
    assert_int_equal(agile_err_class(agile__cu_err(CUDA_ERROR_NO_DEVICE, "x")), AGILE_ECUDA);
}

static void *load_thread(void *arg)
{
    char why[256];
    *(int *)arg = agile__cuda_load(why, sizeof why);
    return NULL;
}

static void test_load_no_driver(void **state)
{
    char why[256], why2[256];
    int rv, rvs[8];
    pthread_t t[8];
    (void)state;
    /* Loaded from many threads at once: one load, one answer. */
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&t[i], NULL, load_thread, &rvs[i]), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    rv = agile__cuda_load(why, sizeof why);
    for (int i = 0; i < 8; i++)
        assert_int_equal(rvs[i], rv);
    if (rv == AGILE_OK) skip(); /* a machine with a GPU: backend-gpu-test covers it */
    print_message("agile__cuda_load: %s\n", why);
    assert_int_equal(rv, AGILE_ENODEV);
    assert_true(strlen(why) > 0);
    assert_true(strstr(why, "libcuda") || strstr(why, "cuInit failed") ||
                strstr(why, "no CUDA device"));
    if (!getenv("LD_LIBRARY_PATH") || !strstr(getenv("LD_LIBRARY_PATH"), "stubs"))
        assert_non_null(strstr(why, "libcuda.so.1 not found"));
    /* the same answer again, also without a buffer */
    assert_int_equal(agile__cuda_load(why2, sizeof why2), AGILE_ENODEV);
    assert_string_equal(why, why2);
    assert_int_equal(agile__cuda_load(NULL, 0), AGILE_ENODEV);
    /* nothing in the table can be called by mistake */
    assert_null(agile__cu.cuMemCreate);
}

static void test_backend_open_no_driver(void **state)
{
    agile__backend *be = NULL;
    agile__cwin *cw = NULL;
    char why[256];
    int rv;
    (void)state;
    rv = agile__backend_open(AGILE_BACKEND_KIND_CUDA, &be, why, sizeof why);
    if (rv == AGILE_OK) {
        agile__backend_close(be);
        skip();
    }
    print_message("agile__backend_open(cuda): %s: %s\n", agile_err_name(rv), why);
    assert_int_equal(rv, AGILE_ENODEV);
    assert_true(strlen(why) > 0);
    assert_null(be);
    assert_int_equal(agile__cmem_reserve(AGILE_BACKEND_KIND_CUDA, 0, 1ull << 30, &cw),
                     AGILE_ENODEV);
    assert_null(cw);
    assert_int_equal(agile__backend_open(42, &be, why, sizeof why), AGILE_EINVAL);
}

/* Run this binary again with `libpath` first in LD_LIBRARY_PATH (the dynamic loader reads
 * it at start, so it takes a new process); return the child's reason line. */
static int run_child(const char *libpath, char *out, size_t cap)
{
    int p[2], st;
    pid_t pid;
    ssize_t n;
    size_t got = 0;

    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        setenv("LD_LIBRARY_PATH", libpath, 1);
        setenv(CHILD_ENV, "1", 1);
        execl("/proc/self/exe", "cudadrv_test", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    while (got + 1 < cap && (n = read(p[0], out + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    close(p[0]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_stub_is_not_a_driver(void **state)
{
    char dir[] = "/tmp/agile-cudadrv-XXXXXX", link[64], out[512];
    (void)state;
    if (access(STUB, R_OK) != 0) skip();
    /* The stubs directory itself has no libcuda.so.1: pointing LD_LIBRARY_PATH at it
     * must not load the stub at all. */
    assert_int_equal(run_child("/usr/local/cuda/lib64/stubs", out, sizeof out), 0);
    print_message("stubs dir in LD_LIBRARY_PATH: %s", out);
    if (!strstr(out, "rv=0")) assert_non_null(strstr(out, "libcuda.so.1 not found"));
    /* A libcuda.so.1 that is the stub: cuInit fails and the reason says so. */
    assert_non_null(mkdtemp(dir));
    snprintf(link, sizeof link, "%s/libcuda.so.1", dir);
    assert_int_equal(symlink(STUB, link), 0);
    assert_int_equal(run_child(dir, out, sizeof out), 0);
    unlink(link);
    rmdir(dir);
    print_message("stub as libcuda.so.1: %s", out);
    assert_non_null(strstr(out, "rv=AGILE_ENODEV"));
    assert_non_null(strstr(out, "cuInit failed: CUDA_ERROR_STUB_LIBRARY"));
    assert_non_null(strstr(out, "stub"));
}

static int child_main(void)
{
    char why[256];
    agile__backend *be = NULL;
    int rv = agile__cuda_load(why, sizeof why);
    int rv2 = agile__backend_open(AGILE_BACKEND_KIND_CUDA, &be, NULL, 0);
    printf("rv=%s why=%s\n", rv == AGILE_OK ? "0" : agile_err_name(rv), why);
    if (be) agile__backend_close(be);
    return rv2 == rv ? 0 : 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_load_no_driver),
        cmocka_unit_test(test_backend_open_no_driver),
        cmocka_unit_test(test_stub_is_not_a_driver),
    };
    if (getenv(CHILD_ENV)) return child_main();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
