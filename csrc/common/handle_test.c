#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "core.h"

static int finis;
static void count_fini(void *obj)
{
    finis++;
    free(obj);
}

static void test_encoding(void **state)
{
    (void)state;
    uint64_t h = agile__handle_make(AGILE_OBJ_LEASE, 0x123456, 0xdeadbeef);
    assert_int_equal(agile__handle_type(h), AGILE_OBJ_LEASE);
    assert_int_equal(agile__handle_gen(h), 0x123456);
    assert_int_equal(agile__handle_index(h), 0xdeadbeef);
    assert_string_equal(agile__obj_name(AGILE_OBJ_PLAN), "PLAN");
}

static void test_generation_and_owner(void **state)
{
    agile__htab t;
    uint64_t h1, h2, forged;
    void *o;
    (void)state;
    finis = 0;
    assert_int_equal(agile__htab_init(&t, 16), AGILE_OK);
    assert_int_equal(agile__htab_add(&t, AGILE_OBJ_STREAM, 7, malloc(8), count_fini, &h1), 0);
    assert_int_equal(agile__htab_hold(&t, h1, AGILE_OBJ_STREAM, 7, &o), AGILE_OK);
    agile__htab_rele(&t, h1);
    /* wrong owner, wrong type, forged generation, out-of-range index */
    assert_int_equal(agile__htab_hold(&t, h1, AGILE_OBJ_STREAM, 8, &o), AGILE_EHANDLE);
    assert_int_equal(agile__htab_hold(&t, h1, AGILE_OBJ_EVENT, 7, &o), AGILE_EHANDLE);
    forged = agile__handle_make(AGILE_OBJ_STREAM, agile__handle_gen(h1) + 1, 0);
    assert_int_equal(agile__htab_hold(&t, forged, AGILE_OBJ_STREAM, 7, &o), AGILE_EHANDLE);
    forged = agile__handle_make(AGILE_OBJ_STREAM, agile__handle_gen(h1), 9999);
    assert_int_equal(agile__htab_hold(&t, forged, AGILE_OBJ_STREAM, 7, &o), AGILE_EHANDLE);
    /* a held object outlives its removal; the handle is stale at once */
    assert_int_equal(agile__htab_hold(&t, h1, AGILE_OBJ_STREAM, 7, &o), AGILE_OK);
    assert_int_equal(agile__htab_remove(&t, h1, AGILE_OBJ_STREAM, 7), AGILE_OK);
    assert_int_equal(finis, 0);
    assert_int_equal(agile__htab_hold(&t, h1, AGILE_OBJ_STREAM, 7, &o), AGILE_EHANDLE);
    assert_int_equal(agile__htab_remove(&t, h1, AGILE_OBJ_STREAM, 7), AGILE_EHANDLE);
    agile__htab_rele(&t, h1);
    assert_int_equal(finis, 1);
    /* the slot is reused with a new generation: the old handle stays stale */
    assert_int_equal(agile__htab_add(&t, AGILE_OBJ_STREAM, 7, malloc(8), count_fini, &h2), 0);
    assert_int_equal(agile__handle_index(h2), agile__handle_index(h1));
    assert_int_not_equal(h1, h2);
    assert_int_equal(agile__htab_hold(&t, h1, AGILE_OBJ_STREAM, 7, &o), AGILE_EHANDLE);
    agile__htab_fini(&t);
    assert_int_equal(finis, 2);
}

static void test_owner_tree_release(void **state)
{
    agile__htab t;
    uint64_t h;
    uint32_t counts[AGILE_OBJ_MAX_] = {0};
    (void)state;
    finis = 0;
    assert_int_equal(agile__htab_init(&t, 1000), AGILE_OK);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(agile__htab_add(&t, AGILE_OBJ_LEASE, 1, malloc(1), count_fini, &h), 0);
        assert_int_equal(agile__htab_add(&t, AGILE_OBJ_PLAN, 2, malloc(1), count_fini, &h), 0);
    }
    agile__htab_count_owner(&t, 1, counts);
    assert_int_equal(counts[AGILE_OBJ_LEASE], 10);
    assert_int_equal(counts[AGILE_OBJ_PLAN], 0);
    assert_int_equal(agile__htab_remove_owner(&t, 1), 10);
    assert_int_equal(finis, 10);
    assert_int_equal(t.live, 10);
    assert_int_equal(agile__htab_hold(&t, h, AGILE_OBJ_PLAN, 2, &(void *){0}), AGILE_OK);
    agile__htab_rele(&t, h);
    agile__htab_fini(&t);
    assert_int_equal(finis, 20);
}

static void test_limit(void **state)
{
    agile__htab t;
    uint64_t h;
    (void)state;
    assert_int_equal(agile__htab_init(&t, 3), AGILE_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(agile__htab_add(&t, AGILE_OBJ_EVENT, 1, NULL, NULL, &h), AGILE_OK);
    assert_int_equal(agile__htab_add(&t, AGILE_OBJ_EVENT, 1, NULL, NULL, &h), AGILE_ENOMEM);
    assert_int_equal(agile__htab_add(&t, 0, 1, NULL, NULL, &h), AGILE_EINVAL);
    agile__htab_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoding),
        cmocka_unit_test(test_generation_and_owner),
        cmocka_unit_test(test_owner_tree_release),
        cmocka_unit_test(test_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
