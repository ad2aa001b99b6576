/* The log rate limiter: a burst, then one line per interval, and the count of the lines
 * dropped in between given to the next line written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core.h"

static void test_burst_then_interval(void **state)
{
    agile__ratelimit rl = AGILE_RATELIMIT_INIT(3, 1000);
    uint64_t sup = 99, t = 5000;
    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(agile__ratelimit_take(&rl, t, &sup), 1);
        assert_int_equal(sup, 0);
    }
    for (int i = 0; i < 1000; i++) /* a flood within one interval: all dropped */
        assert_int_equal(agile__ratelimit_take(&rl, t + (uint64_t)i / 2, &sup), 0);
    assert_int_equal(agile__ratelimit_take(&rl, t + 999, &sup), 0);
    assert_int_equal(agile__ratelimit_take(&rl, t + 1000, &sup), 1);
    assert_int_equal(sup, 1001); /* the line written says how many were not */
    assert_int_equal(agile__ratelimit_take(&rl, t + 1000, &sup), 0);
    /* a long quiet spell refills the bucket to its burst, no more */
    t += 1000000;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(agile__ratelimit_take(&rl, t, &sup), 1);
        assert_int_equal(sup, i == 0 ? 1 : 0);
    }
    assert_int_equal(agile__ratelimit_take(&rl, t, &sup), 0);
}

static void test_clock_going_back_takes_nothing_extra(void **state)
{
    agile__ratelimit rl = AGILE_RATELIMIT_INIT(1, 1000);
    uint64_t sup;
    (void)state;
    assert_int_equal(agile__ratelimit_take(&rl, 10000, &sup), 1);
    assert_int_equal(agile__ratelimit_take(&rl, 500, &sup), 0);
    assert_int_equal(agile__ratelimit_take(&rl, 10999, &sup), 0);
    assert_int_equal(agile__ratelimit_take(&rl, 11000, &sup), 1);
    assert_int_equal(sup, 2);
}

static void test_log_limited_macro_compiles_and_runs(void **state)
{
    (void)state;
    agile__log_set_level(AGILE_LOG_ERROR); /* below the level: nothing written, no token */
    for (int i = 0; i < 100; i++)
        agile__log_limited(AGILE_LOG_WARN, 7, "refused %d", i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_interval),
        cmocka_unit_test(test_clock_going_back_takes_nothing_extra),
        cmocka_unit_test(test_log_limited_macro_compiles_and_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
