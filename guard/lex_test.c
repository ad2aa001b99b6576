/* lex_test.c — the lexical rules (guard/README.md, "Lexing"), checked on both readers.
 *
 * The rewriter's tokenizer (ptx.c) and the verifier's scanner (verify.c) apply the same
 * rules with separate code. Each case below goes to both: the rewriter must refuse it
 * with its reason (AGILE_EREJECT, "file:line: reason") and the verifier must refuse it on
 * its own, for its lexical rules (AGILE_EGUARD, "line N: lexical: ..."), before any other
 * check; accepted forms are guarded and the verifier accepts the output. Every reject/lex_*.ptx
 * file of the corpus is also given to the verifier. What ptxas itself does with each form is
 * recorded in tests/ptxas_lex_probes.py. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core.h"
#include "guard.h"

#ifndef AGILE_PTX_CORPUS
#error "AGILE_PTX_CORPUS must name tests/data/ptx"
#endif

#define HEAD ".version 8.0\n.target sm_90\n.address_size 64\n\n"
#define ENTRY(body)                                                                                \
    ".visible .entry k(.param .u64 k_p)\n{\n\t.reg .b32 %r<4>;\n\tmov.u32 %r1, 1;\n" body          \
    "\tret;\n}\n"

typedef struct lcase {
    const char *name;
    const char *text;
    size_t len;         /* 0: strlen(text) */
    const char *reason; /* the rewriter's reason, or NULL: accepted */
} lcase;

#define STR_LEN(s) (sizeof(s) - 1)

static const lcase cases[] = {
    {"plain", HEAD ENTRY(""), 0, NULL},
    {"pragma nounroll", HEAD ENTRY("\t.pragma \"nounroll\";\n"), 0, NULL},
    {"module pragma", HEAD ".pragma \"nounroll\";\n" ENTRY(""), 0, NULL},
    {"used_bytes_mask", HEAD ENTRY("\t.pragma \"used_bytes_mask 0xfff\";\n"), 0, NULL},
    {"used_bytes_mask dec", HEAD ENTRY("\t.pragma \"used_bytes_mask 4095\";\n"), 0, NULL},
    {"frequency", HEAD ENTRY("\t.pragma \"frequency 32\";\n"), 0, NULL},
    {"smem spilling", HEAD ENTRY("\t.pragma \"enable_smem_spilling\";\n"), 0, NULL},
    {"file", HEAD ".file 1 \"/src/a.cu\", 1700000000, 1234\n" ENTRY(""), 0, NULL},
    {"crlf", ".version 8.0\r\n.target sm_90\r\n.address_size 64\r\n" ENTRY("\t// c\r\n"), 0, NULL},
    {"comments", HEAD "/* a { } ; */\n" ENTRY("\t// x // y\n\t/* multi\n line */\n"), 0, NULL},
    {"escaped quote", HEAD ENTRY("\t.pragma \"x\\\"; mov.u32 %r2, 2; //\";\n"), 0, "backslash"},
    {"escaped entry", HEAD ".pragma \"\\\";\n.visible .entry e() { ret; }\n.pragma \\\"\";\n", 0,
     "backslash"},
    {"continuation", HEAD ENTRY("\tmov.u32 %r2, \\\n 2;\n"), 0, "backslash"},
    {"backslash in comment", HEAD ENTRY("\t// a \\\n"), 0, "backslash"},
    {"nul", HEAD ENTRY("\t// a\0b\n"), STR_LEN(HEAD ENTRY("\t// a\0b\n")), "byte 0x00"},
    {"nul at end", HEAD ENTRY("") "\0", STR_LEN(HEAD ENTRY("") "\0"), "byte 0x00"},
    {"high byte", HEAD ENTRY("\t// caf\xc3\xa9\n"), 0, "byte 0xc3"},
    {"del", HEAD ENTRY("\t// \x7f\n"), 0, "byte 0x7f"},
    {"control", HEAD ENTRY("\t/* \x01 */\n"), 0, "byte 0x01"},
    {"form feed", HEAD ENTRY("\t\f\n"), 0, "byte 0x0c"},
    {"vertical tab", HEAD ENTRY("\t\v\n"), 0, "byte 0x0b"},
    {"bare cr", HEAD ENTRY("\t// a\rmov.u32 %r2, 2;\n"), 0, "carriage return"},
    {"cr at end", HEAD ENTRY("") "\r", 0, "carriage return"},
    {"unknown pragma", HEAD ENTRY("\t.pragma \"foobar\";\n"), 0, "is not allowed"},
    {"pragma trailing space", HEAD ENTRY("\t.pragma \"nounroll \";\n"), 0, "is not allowed"},
    {"pragma bad number", HEAD ENTRY("\t.pragma \"frequency 0x\";\n"), 0, "is not allowed"},
    {"pragma tab", HEAD ENTRY("\t.pragma \"frequency\t1\";\n"), 0, "is not allowed"},
    {"pragma two strings", HEAD ENTRY("\t.pragma \"nounroll\", \"nounroll\";\n"), 0, "one string"},
    {"pragma no string", HEAD ENTRY("\t.pragma nounroll;\n"), 0, "one string"},
    {"pragma then code", HEAD ENTRY("\t.pragma \"nounroll\" mov.u32 %r2, 2;\n"), 0, "one string"},
    {"string operand", HEAD ENTRY("\tmov.u32 %r2, \"x\";\n"), 0, "a string outside"},
    {"string newline", HEAD ENTRY("\t.pragma \"nounroll\n\";\n"), 0, "unterminated string"},
    {"unterminated string", HEAD ENTRY("\t.pragma \"nounroll;\n"), 0, "unterminated string"},
    {"line comment in string", HEAD ".file 1 \"a//b\"\n" ENTRY(""), 0, "in a string"},
    {"block open in string", HEAD ".file 1 \"a/*b\"\n" ENTRY(""), 0, "in a string"},
    {"block close in string", HEAD ".file 1 \"a*/b\"\n" ENTRY(""), 0, "in a string"},
    {"quote in line comment", HEAD ENTRY("\t// \"\n"), 0, "in a comment"},
    {"quote in block comment", HEAD ENTRY("\t/* \" */\n"), 0, "in a comment"},
    {"nested block comment", HEAD ENTRY("\t/* /* */\n"), 0, "in a block comment"},
    {"line comment in block", HEAD ENTRY("\t/* // */\n"), 0, "in a block comment"},
    {"block open in line comment", HEAD ENTRY("\t// /*\n"), 0, "in a '//' comment"},
    {"block close in line comment", HEAD ENTRY("\t// */\n"), 0, "in a '//' comment"},
    {"unterminated comment", HEAD ENTRY("\t/* x\n"), 0, "unterminated comment"},
    {"loc inlined",
     HEAD ".file 1 \"a.cu\"\n" ENTRY("\t.loc 1 5 0, function_name $L__f, inlined_at 1 2 3\n"), 0,
     NULL},
    {"target list", ".version 8.0\n.target sm_90, debug\n.address_size 64\n" ENTRY(""), 0, NULL},
    {"file with size", HEAD ".file 1 \"a.cu\", 1700000000, 1234\n" ENTRY(""), 0, NULL},
    {"loc then instruction", HEAD ENTRY("\t.loc 1 5 0 trap\n\t;\n"), 0, "malformed '.loc' line"},
    {"loc then call", HEAD ENTRY("\t.loc 1 5 0 call f\n\t;\n"), 0, "malformed '.loc' line"},
    {"loc short", HEAD ENTRY("\t.loc 1 5\n"), 0, "malformed '.loc' line"},
    {"file then word", HEAD ".file 1 \"a.cu\" exit\n" ENTRY(""), 0, "malformed '.file' line"},
    {"version then word", ".version 8.0 trap\n.target sm_90\n.address_size 64\n" ENTRY(""), 0,
     "malformed '.version' line"},
    {"target then word", ".version 8.0\n.target sm_90 exit\n.address_size 64\n" ENTRY(""), 0,
     "malformed '.target' line"},
    {"hash", HEAD "#define X\n" ENTRY(""), 0, "unexpected character '#'"},
    {"single quote", HEAD ENTRY("\tmov.u32 %r2, 'a';\n"), 0, "unexpected character"},
};

static void test_cases(void **state)
{
    (void)state;
    for (size_t k = 0; k < AGILE_ARRAY_LEN(cases); k++) {
        const lcase *c = &cases[k];
        size_t len = c->len ? c->len : strlen(c->text);
        agile_guard_opts o;
        agile_guard_result res;
        agile_guard_vopts vo = {0, 0, NULL, 0};
        char err[320];
        int rv, vr;

        agile_guard_opts_init(&o);
        o.filename = "case.ptx";
        rv = agile_guard_ptx(c->text, len, &o, &res);
        vr = agile_guard_verify(c->text, len, &vo, err, sizeof(err));
        if (c->reason == NULL) {
            if (rv != AGILE_OK) fail_msg("%s: refused: %s", c->name, res.err);
            if (agile_guard_verify(res.ptx, res.ptx_len, &vo, err, sizeof(err)) != AGILE_OK)
                fail_msg("%s: verifier refuses the output: %s", c->name, err);
        } else {
            if (rv != AGILE_EREJECT || strstr(res.err, c->reason) == NULL ||
                strncmp(res.err, "case.ptx:", 9) != 0 || res.err_line == 0)
                fail_msg("%s: expected '%s', got %s '%s'", c->name, c->reason, agile_err_name(rv),
                         res.err);
            if (vr != AGILE_EGUARD || strstr(err, "lexical: ") == NULL)
                fail_msg("%s: the verifier does not refuse it for its lexis: %s", c->name, err);
            print_message("%-28s guard: %s\n%-28s verifier: %s\n", c->name, res.err, "", err);
        }
        agile_guard_result_fini(&res);
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    long n;
    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = malloc((size_t)n + 1)) != NULL) {
        if (fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        } else {
            b[n] = '\0';
            *len = (size_t)n;
        }
    }
    fclose(f);
    return b;
}

/* The lexical reject corpus: the verifier refuses each file by itself. */
static void test_reject_corpus(void **state)
{
    const char *dir = AGILE_PTX_CORPUS "/reject";
    DIR *d = opendir(dir);
    struct dirent *e;
    unsigned n = 0;
    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[4096], err[320];
        agile_guard_vopts vo = {0, 0, NULL, 0};
        size_t len = 0;
        char *src;
        if (strncmp(e->d_name, "lex_", 4) != 0) continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        src = slurp(path, &len);
        assert_non_null(src);
        if (agile_guard_verify(src, len, &vo, err, sizeof(err)) != AGILE_EGUARD ||
            strstr(err, "lexical: ") == NULL)
            fail_msg("%s: the verifier does not refuse it for its lexis: %s", path, err);
        free(src);
        n++;
    }
    closedir(d);
    print_message("%u lexical reject files refused by the verifier\n", n);
    assert_true(n >= 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cases),
                                       cmocka_unit_test(test_reject_corpus)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
