#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "core.h"

static int parse(agile__config *c, const char *text, char *err)
{
    return agile__config_parse(c, text, strlen(text), err, 256);
}

static void test_defaults_and_sections(void **state)
{
    agile__config c;
    char err[256] = "";
    (void)state;
    assert_int_equal(parse(&c, "", err), AGILE_OK);
    assert_int_equal(c.dflt.quota, 8ull << 30);
    assert_int_equal(parse(&c,
                           "# policy\n[default]\nquota = 4GiB\nmodules = fft\n"
                           "[tenant 1000]\nquota=512MiB   # small\npriority = 4\n"
                           "time_limit_ms = 250\nlease_step = 32M\n[tenant 0]\nmodules = none\n",
                           err),
                     AGILE_OK);
    assert_int_equal(c.dflt.quota, 4ull << 30);
    assert_int_equal(c.dflt.modules, 1u);
    const agile__policy *p = agile__config_policy(&c, 1000);
    assert_int_equal(p->quota, 512ull << 20);
    assert_int_equal(p->priority, 4);
    assert_int_equal(p->modules, 1u); /* inherited from [default] */
    assert_int_equal(p->time_limit_ms, 250);
    assert_int_equal(p->lease_step, 32ull << 20);
    assert_int_equal(agile__config_policy(&c, 0)->modules, 0);
    assert_ptr_equal(agile__config_policy(&c, 4242), &c.dflt);
    /* root is a user name everywhere */
    assert_int_equal(parse(&c, "[tenant root]\nquota=1G\n", err), AGILE_OK);
    assert_int_equal(agile__config_policy(&c, 0)->quota, 1ull << 30);
}

static void test_tenant_limits(void **state)
{
    agile__config c;
    char err[256] = "";
    (void)state;
    assert_int_equal(parse(&c, "", err), AGILE_OK);
    /* defaults: no uid can take every session, context or object slot of the worker */
    assert_true(c.dflt.max_sessions >= 1 && c.dflt.max_sessions < 4096);
    assert_true(c.dflt.max_requests < 32 && c.dflt.max_module_loads <= c.dflt.max_requests);
    assert_true(c.dflt.max_objects < (1u << 20));
    assert_true(c.dflt.max_module_bytes < (16ull << 20));
    assert_int_equal(parse(&c,
                           "max_sessions = 16\nmax_pending = 4\n[tenant 1000]\nmax_objects = 100\n"
                           "max_requests = 3\nmax_module_loads = 1\nmax_module_bytes = 64KiB\n",
                           err),
                     AGILE_OK);
    const agile__policy *p = agile__config_policy(&c, 1000);
    assert_int_equal(p->max_sessions, 16); /* inherited */
    assert_int_equal(p->max_pending, 4);
    assert_int_equal(p->max_objects, 100);
    assert_int_equal(p->max_requests, 3);
    assert_int_equal(p->max_module_loads, 1);
    assert_int_equal(p->max_module_bytes, 64u << 10);
    assert_int_equal(c.dflt.max_objects, 65536);
}

static void test_errors_name_the_line(void **state)
{
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"quota = lots\n", "line 1: bad size for quota"},
        {"\n\npriority = 99\n", "line 3: priority must be 1..16"},
        {"[tenant nosuchuser_xyz]\n", "line 1: unknown tenant (not a uid nor a user name)"},
        {"[weird]\n", "line 1: section header must be [default], [tenant UID|NAME] or [worker]"},
        {"[worker]\nquota = 1G\n", "line 2: unknown key in [worker] (known: metrics_listen)"},
        {"[worker]\nmetrics_listen = tcp://127.0.0.1:9464\n",
         "line 2: metrics_listen must be http://HOST:PORT (HOST a name, an IPv4 address or "
         "[IPv6]), or empty for none"},
        {"modules = fft, gpu\n", "line 1: unknown module in modules (known: fft, guard)"},
        {"just words\n", "line 1: expected key = value"},
        {"color = red\n", "line 1: unknown key (known: quota, modules, priority, time_limit_ms, "
                          "lease_step, max_sessions, max_pending, max_objects, max_requests, "
                          "max_module_loads, max_module_bytes)"},
        {"max_sessions = 0\n", "line 1: max_sessions must be 1..4096"},
        {"max_pending = 5000\n", "line 1: max_pending must be 1..4096"},
        {"max_objects = 2M\n", "line 1: max_objects must be 16..1048576"},
        {"max_requests = 33\n", "line 1: max_requests must be 1..32"},
        {"max_module_loads = 0\n", "line 1: max_module_loads must be 1..32"},
        {"max_module_bytes = 16MiB\n", "line 1: max_module_bytes must be 1KiB..15MiB"},
        {"quota = 99999999999999999999\n", "line 1: bad size for quota"},
        {"quota = 17179869184T\n", "line 1: bad size for quota"},
        {"lease_step = 0\n", "line 1: bad size for lease_step"},
    };
    (void)state;
    for (size_t i = 0; i < AGILE_ARRAY_LEN(bad); i++) {
        agile__config c;
        char err[256] = "";
        assert_int_equal(parse(&c, bad[i].text, err), AGILE_ECONFIG);
        assert_string_equal(err, bad[i].msg);
    }
    agile__config c;
    char err[128];
    assert_int_equal(agile__config_parse(&c, "quota = 1\0G\n", 12, err, sizeof err), AGILE_ECONFIG);
    assert_string_equal(err, "line 1: NUL byte");
}

static void test_worker_section(void **state)
{
    agile__config c;
    char err[256] = "";
    (void)state;
    assert_int_equal(parse(&c, "", err), AGILE_OK);
    assert_string_equal(c.metrics_listen, ""); /* off by default */
    /* sections switch as usual around [worker] */
    assert_int_equal(parse(&c, "[tenant 7]\nquota = 1G\n[worker]\nmetrics_listen = "
                               "http://127.0.0.1:9464\n[default]\npriority = 2\n", err),
                     AGILE_OK);
    assert_string_equal(c.metrics_listen, "http://127.0.0.1:9464");
    assert_int_equal(c.dflt.priority, 2);
    assert_int_equal(agile__config_policy(&c, 7)->quota, 1ull << 30);
    static const char *good[] = {"http://localhost:1", "http://[::1]:9464", "http://0.0.0.0:65535",
                                 "http://metrics-host.example:80", "http://127.0.0.1:0"};
    static const char *bad[] = {"http://:9464", "http://127.0.0.1", "http://127.0.0.1:65536", "http://127.0.0.1:9464/metrics",
                                "https://127.0.0.1:9464", "http://[::1:9464", "http://a b:1",
                                "http://127.0.0.1:123456", "http://[]:1"};
    for (size_t i = 0; i < AGILE_ARRAY_LEN(good); i++)
        assert_int_equal(agile__config_check_listen(good[i]), AGILE_OK);
    for (size_t i = 0; i < AGILE_ARRAY_LEN(bad); i++)
        assert_int_equal(agile__config_check_listen(bad[i]), AGILE_EINVAL);
}

static void test_sizes(void **state)
{
    uint64_t v;
    (void)state;
    assert_int_equal(agile__parse_size("64MiB", &v), AGILE_OK);
    assert_int_equal(v, 64ull << 20);
    assert_int_equal(agile__parse_size("2gb", &v), AGILE_OK);
    assert_int_equal(v, 2000000000ull);
    assert_int_equal(agile__parse_size("7", &v), AGILE_OK);
    assert_int_equal(v, 7);
    assert_int_equal(agile__parse_size("", &v), AGILE_EINVAL);
    assert_int_equal(agile__parse_size("-1", &v), AGILE_EINVAL);
    assert_int_equal(agile__parse_size("1 Q", &v), AGILE_EINVAL);
    assert_int_equal(agile__parse_size("18446744073709551615", &v), AGILE_OK);
    assert_int_equal(agile__parse_size("18446744073709551616", &v), AGILE_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_sections),
        cmocka_unit_test(test_tenant_limits),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_worker_section),
        cmocka_unit_test(test_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
