/* canon.c — guard-canon [--no-loc] FILE: the PTX text the guard believes it read,
 * re-emitted from its own token stream (for the ptxas differential check,
 * tests/ptxas_differential.py).
 *
 * Comments are gone (the tokenizer drops them), tokens are separated by one space, a token
 * on a later source line starts a new line (line-terminated directives keep their ends),
 * the file name of `.file` becomes "f", and a `.pragma` whose string is not one of the
 * allowed pragmas is dropped whole (ptxas ignores unknown pragmas). If ptxas compiles this
 * text and the original to different machine code, ptxas read something the guard did not:
 * code hidden in a string or a comment, a continuation, an extra function. --no-loc also
 * drops every .loc line as the guard reads it (line information does not change machine
 * code): an instruction hidden after a .loc's operands then shows.
 * Exit 0 with the text on stdout; 1 with the guard's reason on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "ptx.h"

static bool pragma_kept(const ptx_module *m, uint32_t s)
{
    static const char *const keep[] = {"\"nounroll\"", "\"enable_smem_spilling\""};
    static const char *const with_num[] = {"\"used_bytes_mask ", "\"frequency "};
    const char *p = ptx_tok_str(m, s);
    size_t n = m->toks[s].len;
    for (size_t k = 0; k < AGILE_ARRAY_LEN(keep); k++)
        if (agile_guard_tok_eq(m, s, keep[k])) return true;
    for (size_t k = 0; k < AGILE_ARRAY_LEN(with_num); k++) {
        size_t w = strlen(with_num[k]);
        if (n > w + 1 && memcmp(p, with_num[k], w) == 0 &&
            strspn(p + w, "0123456789abcdefABCDEFx") == n - w - 1)
            return true;
    }
    return false;
}

int main(int argc, char **argv)
{
    ptx_module m;
    FILE *f;
    char *src = NULL;
    size_t len = 0, cap = 0, got;
    uint32_t line = 1;
    int rv;

    bool no_loc = argc == 3 && strcmp(argv[1], "--no-loc") == 0;
    const char *path = argv[argc - 1];

    if ((argc != 2 && !no_loc) || (f = fopen(path, "rb")) == NULL) {
        fprintf(stderr, "usage: guard-canon [--no-loc] FILE.ptx\n");
        return 2;
    }
    do {
        if (len == cap) {
            char *n = realloc(src, cap = cap ? cap * 2 : 1 << 16);
            if (n == NULL) {
                fclose(f);
                free(src);
                return 2;
            }
            src = n;
        }
        got = fread(src + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    fclose(f);
    rv = agile_guard_ptx_parse(&m, src, len);
    if (rv != AGILE_OK) {
        fprintf(stderr, "%s:%u: %s\n", path, m.err_line, m.err[0] ? m.err : agile_err_name(rv));
        agile_guard_ptx_fini(&m);
        free(src);
        return 1;
    }
    for (uint32_t t = 0; t < m.ntoks; t++) {
        const ptx_tok *k = &m.toks[t];
        if (agile_guard_tok_eq(&m, t, ".pragma") && t + 2 < m.ntoks &&
            m.toks[t + 1].kind == PTK_STR && agile_guard_tok_punct(&m, t + 2, ';') &&
            !pragma_kept(&m, t + 1)) {
            t += 2;
            continue;
        }
        if (no_loc && agile_guard_tok_eq(&m, t, ".loc")) { /* all the guard reads as its line */
            while (t + 1 < m.ntoks && m.toks[t + 1].line == k->line)
                t++;
            continue;
        }
        if (k->line != line) {
            while (line < k->line) {
                putchar('\n');
                line++;
            }
        } else if (t > 0) {
            putchar(' ');
        }
        if (k->kind == PTK_STR && !(t > 0 && agile_guard_tok_eq(&m, t - 1, ".pragma")))
            fputs("\"f\"", stdout);
        else
            fwrite(ptx_tok_str(&m, t), 1, k->len, stdout);
    }
    putchar('\n');
    agile_guard_ptx_fini(&m);
    free(src);
    return 0;
}
