/* corpus_test.c — the guard over every *.ptx of tests/data/ptx (recursively, so PTX added
 * later, e.g. triton/, is picked up automatically):
 *   - parse + print back is byte-identical (round trip);
 *   - reject/ files are refused with their "// EXPECT-REJECT: reason" and "file:line:";
 *   - every other file is guarded in mask, strict and immediate-mask modes, and the
 *     independent verifier accepts each output;
 *   - hand-broken outputs (a fence deleted, a fenced register redefined before its use,
 *     the access moved before its fence, an isspacep/selp deleted) are refused.
 * ptxas is run on the outputs by tests/ptxas_corpus.sh. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "core.h"
#include "guard.h"

#ifndef AGILE_PTX_CORPUS
#error "AGILE_PTX_CORPUS must name tests/data/ptx"
#endif

typedef struct flist {
    char **v;
    size_t n, cap;
} flist;

static void walk(const char *dir, flist *l)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL) return;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            walk(path, l);
        } else if ((n > 4 && strcmp(e->d_name + n - 4, ".ptx") == 0) ||
                   (n > 5 && strcmp(e->d_name + n - 5, ".fuzz") == 0)) {
            if (l->n == l->cap) {
                size_t nc = l->cap ? l->cap * 2 : 64;
                char **nv = realloc(l->v, nc * sizeof(char *));
                if (nv == NULL) break;
                l->v = nv;
                l->cap = nc;
            }
            l->v[l->n++] = strdup(path);
        }
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b;
    long n;
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    b[n] = '\0';
    *len = (size_t)n;
    return b;
}

static flist files;
static unsigned nmut, nguarded, nreject;

/* Delete the line containing `needle` (the first at or after `from`). */
static char *del_line(const char *p, const char *at)
{
    const char *s = at, *e = strchr(at, '\n');
    char *q;
    while (s > p && s[-1] != '\n')
        s--;
    e = e ? e + 1 : at + strlen(at);
    q = malloc(strlen(p) + 1);
    memcpy(q, p, (size_t)(s - p));
    strcpy(q + (s - p), e);
    return q;
}

/* Insert text before the line containing `at`. */
static char *ins_before(const char *p, const char *at, const char *text)
{
    const char *s = at;
    char *q;
    while (s > p && s[-1] != '\n')
        s--;
    q = malloc(strlen(p) + strlen(text) + 1);
    memcpy(q, p, (size_t)(s - p));
    strcpy(q + (s - p), text);
    strcat(q, s);
    return q;
}

static void expect_broken(const char *file, const char *what, char *q)
{
    agile_guard_vopts vo = {0, 0, NULL, 0};
    char err[300];
    if (agile_guard_verify(q, strlen(q), &vo, err, sizeof(err)) != AGILE_EGUARD)
        fail_msg("%s: verifier accepted output with %s", file, what);
    free(q);
    nmut++;
}

/* Break the output around up to `max` fences, each way. */
static void mutations(const char *file, const char *p, unsigned max)
{
    unsigned k = 0;
    for (const char *at = strstr(p, "or.b64 %agile_a"); at && k < max;
         at = strstr(at + 1, "or.b64 %agile_a"), k++) {
        char reg[32], use[40], redef[128];
        const char *u;
        int n = 0;
        sscanf(at, "or.b64 %31[^,],%n", reg, &n);
        expect_broken(file, "a fence deleted", del_line(p, at));
        snprintf(use, sizeof(use), "[%s", reg);
        u = strstr(at, use);
        if (u == NULL) continue;
        snprintf(redef, sizeof(redef), "\tadd.s64 %s, %s, 4096;\n", reg, reg);
        expect_broken(file, "the fenced register redefined", ins_before(p, u, redef));
        {
            /* move the access line right before the fence */
            const char *ls = u, *le = strchr(u, '\n');
            char line[1024];
            size_t ln;
            char *tmp, *q;
            while (ls > p && ls[-1] != '\n')
                ls--;
            le = le ? le + 1 : u + strlen(u);
            ln = (size_t)(le - ls);
            if (ln >= sizeof(line)) continue;
            memcpy(line, ls, ln);
            line[ln] = '\0';
            tmp = del_line(p, u);
            q = ins_before(tmp, tmp + (at - p), line);
            free(tmp);
            expect_broken(file, "the access moved before its fence", q);
        }
    }
    k = 0;
    for (const char *at = strstr(p, "isspacep.global %agile_p"); at && k < max;
         at = strstr(at + 1, "isspacep.global %agile_p"), k++)
        expect_broken(file, "isspacep deleted", del_line(p, at));
    k = 0;
    for (const char *at = strstr(p, "selp.b64 %agile_a"); at && k < max;
         at = strstr(at + 1, "selp.b64 %agile_a"), k++)
        expect_broken(file, "selp deleted", del_line(p, at));
    k = 0;
    for (const char *at = strstr(p, "ld.param.u64 %agile_base"); at && k < max;
         at = strstr(at + 1, "ld.param.u64 %agile_base"), k++) {
        /* only where the function uses the base (a function without accesses needs none) */
        const char *end = strstr(at, "\n}"), *use = strstr(at + 10, ", %agile_base");
        if (use && (end == NULL || use < end))
            expect_broken(file, "the base load deleted", del_line(p, at));
    }
}

static void test_corpus(void **state)
{
    (void)state;
    assert_true(files.n >= 10);
    for (size_t i = 0; i < files.n; i++) {
        const char *f = files.v[i];
        size_t len = 0, rlen = 0;
        char *src = slurp(f, &len), *rt = NULL, err[320];
        bool reject = strstr(f, "/reject/") != NULL;
        agile_guard_opts o;
        agile_guard_result res;
        int rv;

        assert_non_null(src);
        if (strstr(f, ".fuzz") == f + strlen(f) - 5) {
            /* fuzzer findings: refused, or guarded into something the verifier accepts */
            for (int mode = 0; mode < 2; mode++) {
                agile_guard_vopts vo = {0, 0, NULL, 0};
                agile_guard_opts_init(&o);
                o.strict = mode == 1;
                rv = agile_guard_ptx(src, len, &o, &res);
                if (rv == AGILE_OK &&
                    agile_guard_verify(res.ptx, res.ptx_len, &vo, err, sizeof(err)) != AGILE_OK)
                    fail_msg("%s: verifier refuses the guarded output: %s", f, err);
                if (rv != AGILE_OK && rv != AGILE_EREJECT)
                    fail_msg("%s: %s", f, agile_err_name(rv));
                agile_guard_result_fini(&res);
            }
            free(src);
            continue;
        }
        rv = agile_guard_roundtrip(src, len, &rt, &rlen, err, sizeof(err));
        if (rv == AGILE_OK) {
            if (rlen != len || memcmp(rt, src, len) != 0) fail_msg("%s: round trip differs", f);
            free(rt);
        } else if (!reject) {
            fail_msg("%s: parse failed: %s", f, err);
        }
        agile_guard_opts_init(&o);
        o.filename = f;
        if (reject) {
            const char *exp = strstr(src, "EXPECT-REJECT: ");
            char want[200] = "", prefix[4200];
            if (exp == NULL) fail_msg("%s: no EXPECT-REJECT line", f);
            sscanf(exp + 15, "%199[^\n]", want);
            rv = agile_guard_ptx(src, len, &o, &res);
            if (rv != AGILE_EREJECT || strstr(res.err, want) == NULL)
                fail_msg("%s: expected rejection '%s', got %s '%s'", f, want, agile_err_name(rv),
                         res.err);
            snprintf(prefix, sizeof(prefix), "%s:%u: ", f, res.err_line);
            if (strncmp(res.err, prefix, strlen(prefix)) != 0 || res.err_line == 0)
                fail_msg("%s: reason not in file:line form: %s", f, res.err);
            agile_guard_result_fini(&res);
            nreject++;
            free(src);
            continue;
        }
        for (int mode = 0; mode < 3; mode++) {
            agile_guard_vopts vo = {0, 0, NULL, 0};
            o.strict = mode == 1;
            o.window_bits = mode == 2 ? 32 : 0;
            vo.window_bits = o.window_bits;
            rv = agile_guard_ptx(src, len, &o, &res);
            if (rv != AGILE_OK)
                fail_msg("%s (mode %d): %s %s", f, mode, agile_err_name(rv), res.err);
            if (agile_guard_verify(res.ptx, res.ptx_len, &vo, err, sizeof(err)) != AGILE_OK)
                fail_msg("%s (mode %d): verifier: %s", f, mode, err);
            /* the unguarded input must not pass (when it has anything to fence) */
            if (mode == 0 && res.nsites > 0 &&
                agile_guard_verify(src, len, &vo, err, sizeof(err)) == AGILE_OK)
                fail_msg("%s: verifier accepts the unguarded input", f);
            if (mode == 0) mutations(f, res.ptx, 6);
            agile_guard_result_fini(&res);
            nguarded++;
        }
        free(src);
    }
    print_message("corpus: %zu files, %u guarded outputs verified, %u rejections as expected, "
                  "%u broken outputs refused\n",
                  files.n, nguarded, nreject, nmut);
    assert_true(nmut > 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_corpus)};
    int rc;
    walk(AGILE_PTX_CORPUS, &files);
    qsort(files.v, files.n, sizeof(char *), cmp_str);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (size_t i = 0; i < files.n; i++)
        free(files.v[i]);
    free(files.v);
    return rc;
}
