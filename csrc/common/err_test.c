#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agile/agile.h"
#include "core.h"

static void test_names_and_messages(void **state)
{
    (void)state;
    assert_string_equal(agile_err_name(AGILE_OK), "AGILE_OK");
    assert_string_equal(agile_err_name(AGILE_EQUOTA), "AGILE_EQUOTA");
    assert_string_equal(agile_strerror(AGILE_EHANDLE), "invalid, stale or foreign handle");
    assert_string_equal(agile_err_name(12345), "AGILE_E?");
    assert_non_null(strstr(agile_strerror(12345), "unknown"));
}

static void test_wrapped(void **state)
{
    (void)state;
    int e = agile_err_sys(ENOENT);
    assert_int_equal(agile_err_class(e), AGILE_ESYSERR);
    assert_int_equal(e & AGILE_ERR_CODE_MASK, ENOENT);
    assert_string_equal(agile_err_name(e), "AGILE_ESYSERR");
    assert_string_equal(agile_strerror(e), strerror(ENOENT));
    assert_int_equal(agile_err_sys(0), AGILE_OK);
    e = agile_err_cuda(2); /* CUDA_ERROR_OUT_OF_MEMORY */
    assert_int_equal(agile_err_class(e), AGILE_ECUDA);
    assert_string_equal(agile_strerror(e), "CUDA driver error 2");
    e = agile_err_cufft(5);
    assert_string_equal(agile_err_name(e), "AGILE_ECUFFT");
}

/* The name tables that bindings read instead of copying the lists (agile/err.h, defs.h). */
static void test_tables(void **state)
{
    unsigned i, n = 0;
    int code = -1;
    const char *name, *key = NULL;
    (void)state;
    for (i = 0; (name = agile_err_entry(i, &code)) != NULL; i++)
        assert_string_equal(agile_err_name(code), name);
    assert_int_equal(i, 30);
    assert_string_equal(agile_err_entry(12, &code), "AGILE_EGUARD");
    assert_int_equal(code, AGILE_EGUARD);
    for (; agile_mem_stat_name(n, NULL); n++)
        ;
    assert_int_equal(n, sizeof(agile_mem_stats) / sizeof(uint64_t));
    assert_string_equal(agile_mem_stat_name(0, &key), "allocated_bytes");
    assert_string_equal(key, "allocated_bytes.all.current");
    assert_string_equal(agile_mem_stat_name(n - 1, NULL), "window_bytes");
    assert_null(agile_mem_stat_name(n, &key));
    assert_string_equal(agile_backend_name(AGILE_BACKEND_KIND_HOST), "host");
    assert_string_equal(agile_backend_name(AGILE_BACKEND_KIND_CUDA), "cuda");
    assert_null(agile_backend_name(0));
    assert_int_equal(AGILE_MODULE_BIT(AGILE_MODULE_ID_GUARD), 2u);
}

static void test_runtime_dir(void **state)
{
    char buf[256], small[4];
    (void)state;
    setenv("AGILE_RUNTIME_DIR", "/x/y", 1);
    assert_int_equal(agile__runtime_dir(buf, sizeof buf), AGILE_OK);
    assert_string_equal(buf, "/x/y");
    assert_int_equal(agile__runtime_dir(small, sizeof small), AGILE_ETOOBIG);
    unsetenv("AGILE_RUNTIME_DIR");
    setenv("XDG_RUNTIME_DIR", "/run/user/7", 1);
    assert_int_equal(agile__runtime_dir(buf, sizeof buf), AGILE_OK);
    assert_string_equal(buf, "/run/user/7/agile");
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(agile__runtime_dir(buf, sizeof buf), AGILE_OK);
    assert_int_equal(strncmp(buf, "/tmp/agile-", 11), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_messages),
        cmocka_unit_test(test_wrapped),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_runtime_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
