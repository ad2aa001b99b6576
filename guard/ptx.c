/* ptx.c — tokenizer and statement parser for PTX (nvcc 12-13, Triton 3.x).
 *
 * Spans, not copies: see ptx.h. The grammar handled is the subset of PTX that compilers
 * emit plus what inline asm can add: module directives (.version/.target/.address_size/
 * .file are line-terminated, .section blocks are skipped whole), variables, .entry/.func
 * with return and parameter lists and performance directives, and bodies made of labels,
 * directives (.loc is line-terminated), nested { } scopes and instructions with an
 * optional guard predicate. Anything else is refused with a line and a reason.
 */
#include "ptx.h"
#include "guard.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static int fail(ptx_module *m, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(ptx_module *m, uint32_t line, const char *fmt, ...)
{
    va_list ap;
    if (m->err[0] == '\0') {
        m->err_line = line;
        va_start(ap, fmt);
        vsnprintf(m->err, sizeof(m->err), fmt, ap);
        va_end(ap);
    }
    return AGILE_EREJECT;
}

/* Arrays grow geometrically; a failed grow leaves the old array intact for fini. */
static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    uint32_t nc;
    void *np;
    if (need <= *cap) return AGILE_OK;
    if (need > UINT32_MAX / 2) return AGILE_ENOMEM;
    nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    np = realloc(*p, (size_t)nc * elem);
    if (np == NULL) return AGILE_ENOMEM;
    *p = np;
    *cap = nc;
    return AGILE_OK;
}

bool agile_guard_parse_int(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    unsigned base = 10;
    size_t i = 0;
    if (n > 0 && (s[n - 1] == 'U' || s[n - 1] == 'u')) n--;
    if (n == 0) return false;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    } else if (n > 2 && s[0] == '0' && (s[1] == 'b' || s[1] == 'B')) {
        base = 2;
        i = 2;
    } else if (n > 1 && s[0] == '0') {
        base = 8;
        i = 1;
    }
    for (; i < n; i++) {
        unsigned d;
        char c = s[i];
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        if (d >= base) return false;
        if (v > (UINT64_MAX - d) / base) return false;
        v = v * base + d;
    }
    *out = v;
    return true;
}

/* ---- tokenizer ------------------------------------------------------------------------ */

/* Character classes of the lexer, one table lookup per character (filled once). */
enum { C_ID = 1, C_START = 2, C_PUNCT = 4 };
static uint8_t cls[256];
static pthread_once_t cls_once = PTHREAD_ONCE_INIT;

static void cls_init(void)
{
    for (int c = 0; c < 256; c++) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$' || c == '.')
            cls[c] = C_ID | C_START;
        else if (c >= '0' && c <= '9')
            cls[c] = C_ID;
        else if (c == '%')
            cls[c] = C_START;
        else if (c != 0 && strchr(",;:{}[]()+-!@=<>|*/~&^?", c) != NULL)
            cls[c] = C_PUNCT;
    }
}

static inline bool id_start(unsigned char c)
{
    return (cls[c] & C_START) != 0;
}

static inline bool id_char(unsigned char c)
{
    return (cls[c] & C_ID) != 0;
}

/* ---- lexical rules ----------------------------------------------------------------------
 *
 * ptxas, not the PTX ISA text, decides what is code: it ends a string at the first '"' (a
 * backslash escapes nothing), lets a string run over a newline, does not nest block
 * comments, stops reading at a NUL byte and refuses bytes >= 0x80. Any lexical difference
 * between the guard and ptxas hides code from the guard, so the guard accepts only text
 * that every reasonable lexer splits the same way (guard/README.md, "Lexing"):
 *   - bytes: printable ASCII, tab, newline, and carriage return only before a newline;
 *     no backslash anywhere (no escapes, no line continuations);
 *   - a string is one line, holds none of "//", "/" "*", "*" "/", and stands only as the one
 *     argument of an allow-listed .pragma (".pragma "nounroll";") or as the name in .file;
 *   - a comment holds no '"', no "/" "*" and no "*" "/" (a block comment also no "//").
 * With these, strings and comments cannot contain each other's delimiters, so the order in
 * which a lexer looks for them cannot change where they end. */

/* A .pragma string ptxas documents (PTX ISA 9.x, "Descriptions of .pragma Strings"): the
 * only ones nvcc 13 and Triton 3.6 emit. Numbers are decimal or 0x-hex, one space before. */
static bool pragma_num(const char *s, size_t n)
{
    size_t i = 0;
    bool hex = n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    if (hex) i = 2;
    if (n == i || n > 20) return false;
    for (; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') ||
              (hex && ((s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))))
            return false;
    return true;
}

static bool pragma_allowed(const char *s, size_t n)
{
    static const char *const plain_pragmas[] = {"nounroll", "enable_smem_spilling"};
    static const char *const num_pragmas[] = {"used_bytes_mask ", "frequency "};
    for (size_t k = 0; k < AGILE_ARRAY_LEN(plain_pragmas); k++)
        if (n == strlen(plain_pragmas[k]) && memcmp(s, plain_pragmas[k], n) == 0) return true;
    for (size_t k = 0; k < AGILE_ARRAY_LEN(num_pragmas); k++) {
        size_t p = strlen(num_pragmas[k]);
        if (n > p && memcmp(s, num_pragmas[k], p) == 0 && pragma_num(s + p, n - p)) return true;
    }
    return false;
}

/* First occurrence in s[0..n) of any of the two-byte markers in `marks` ("//", "/" "*"...),
 * or NULL. */
static const char *find_marker(const unsigned char *s, size_t n, const char *const *marks,
                               size_t nmarks)
{
    for (size_t i = 0; i + 1 < n; i++)
        for (size_t k = 0; k < nmarks; k++)
            if (s[i] == (unsigned char)marks[k][0] && s[i + 1] == (unsigned char)marks[k][1])
                return marks[k];
    return NULL;
}

/* The byte alphabet, over the whole input (comments and strings included). */
static int check_bytes(ptx_module *m)
{
    const unsigned char *s = (const unsigned char *)m->src;
    uint32_t line = 1;
    for (size_t i = 0; i < m->len; i++) {
        unsigned char c = s[i];
        if (c == '\n') {
            line++;
        } else if (c == '\\') {
            return fail(m, line,
                        "backslash: PTX has no escapes or line continuations the "
                        "guard accepts");
        } else if (c == '\r') {
            if (i + 1 >= m->len || s[i + 1] != '\n')
                return fail(m, line, "carriage return not followed by a newline");
        } else if (c != '\t' && (c < 0x20 || c > 0x7e)) {
            return fail(m, line,
                        "byte 0x%02x outside PTX's alphabet (printable ASCII, tab, "
                        "newline)",
                        c);
        }
    }
    return AGILE_OK;
}

/* Where each string stands: the argument of an allow-listed .pragma, followed by ';', or
 * the file name of `.file N "name"`. */
static int check_strings(ptx_module *m)
{
    for (uint32_t t = 0; t < m->ntoks; t++) {
        const ptx_tok *k = &m->toks[t];
        if (agile_guard_tok_eq(m, t, ".pragma")) {
            if (t + 2 >= m->ntoks || m->toks[t + 1].kind != PTK_STR ||
                !agile_guard_tok_punct(m, t + 2, ';'))
                return fail(m, k->line, "'.pragma' must be one string and ';'");
            if (!pragma_allowed(ptx_tok_str(m, t + 1) + 1, m->toks[t + 1].len - 2))
                return fail(m, k->line,
                            ".pragma %.*s is not allowed (nounroll, enable_smem_spilling, "
                            "used_bytes_mask N, frequency N)",
                            (int)AGILE_MIN(m->toks[t + 1].len, 64u), ptx_tok_str(m, t + 1));
            t++;
        } else if (k->kind == PTK_STR && !(t >= 2 && m->toks[t - 1].kind == PTK_NUM &&
                                           agile_guard_tok_eq(m, t - 2, ".file"))) {
            return fail(m, k->line, "a string outside '.pragma' and '.file'");
        }
    }
    return AGILE_OK;
}

static int lex(ptx_module *m)
{
    static const char *const in_string[] = {"//", "/*", "*/"};
    static const char *const in_line_comment[] = {"/*", "*/"};
    static const char *const in_block_comment[] = {"/*", "//"};
    const unsigned char *s = (const unsigned char *)m->src;
    size_t n = m->len, i = 0;
    uint32_t line = 1;
    int rv = AGILE_OK;

    pthread_once(&cls_once, cls_init);
    if (n >= UINT32_MAX) return fail(m, 0, "input too large");
    AGILE_TRY(check_bytes(m));
    while (i < n) {
        unsigned char c = s[i];
        size_t st = i;
        uint8_t kind;
        const char *mark;
        if (c == '\n') {
            line++;
            i++;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r') {
            i++;
            continue;
        }
        if (c == '/' && i + 1 < n && s[i + 1] == '/') {
            while (i < n && s[i] != '\n')
                i++;
            if (memchr(s + st, '"', i - st) != NULL) return fail(m, line, "'\"' in a comment");
            mark = find_marker(s + st + 2, i - st - 2, in_line_comment, 2);
            if (mark) return fail(m, line, "'%s' in a '//' comment", mark);
            continue;
        }
        if (c == '/' && i + 1 < n && s[i + 1] == '*') {
            uint32_t l0 = line;
            i += 2;
            while (i + 1 < n && !(s[i] == '*' && s[i + 1] == '/')) {
                if (s[i] == '\n') line++;
                i++;
            }
            if (i + 1 >= n) return fail(m, l0, "unterminated comment");
            if (memchr(s + st, '"', i - st) != NULL) return fail(m, l0, "'\"' in a comment");
            mark = find_marker(s + st + 2, i - st - 2, in_block_comment, 2);
            if (mark) return fail(m, l0, "'%s' in a block comment", mark);
            i += 2;
            continue;
        }
        if (id_start(c)) {
            i++;
            for (;;) {
                if (i < n && id_char(s[i])) {
                    i++;
                } else if (i + 2 < n && s[i] == ':' && s[i + 1] == ':' && id_char(s[i + 2])) {
                    i += 2; /* .shared::cta, .L2::evict_last */
                } else {
                    break;
                }
            }
            kind = PTK_IDENT;
            if (i - st == 1 && (c == '%' || c == '.')) return fail(m, line, "stray '%c'", c);
            /* No PTX word runs into a register name ("ld.shared%rd", ".target%x"): refuse it
             * here rather than split it, the verifier reads such text as one word. */
            if (i < n && s[i] == '%')
                return fail(m, line, "malformed word '%.*s%%...'", (int)(i - st), s + st);
        } else if (c >= '0' && c <= '9') {
            bool plain = !(c == '0' && i + 1 < n &&
                           (s[i + 1] == 'x' || s[i + 1] == 'X' || s[i + 1] == 'f' ||
                            s[i + 1] == 'F' || s[i + 1] == 'd' || s[i + 1] == 'D'));
            i++;
            while (i < n) {
                /* 0x1F, 0f3F800000, 1.5, 64U; a sign only right after a decimal exponent */
                if ((id_char(s[i]) && s[i] != '$') || (plain && (s[i] == '+' || s[i] == '-') &&
                                                       (s[i - 1] == 'e' || s[i - 1] == 'E'))) {
                    i++;
                } else {
                    break;
                }
            }
            kind = PTK_NUM;
        } else if (c == '"') {
            /* ptxas: the next '"' ends it, whatever precedes it (no escapes). */
            i++;
            while (i < n && s[i] != '"') {
                if (s[i] == '\n') return fail(m, line, "unterminated string");
                i++;
            }
            if (i >= n) return fail(m, line, "unterminated string");
            mark = find_marker(s + st + 1, i - st - 1, in_string, 3);
            if (mark) return fail(m, line, "'%s' in a string", mark);
            i++;
            kind = PTK_STR;
        } else if (cls[c] & C_PUNCT) {
            i++;
            kind = PTK_PUNCT;
        } else {
            return fail(m, line, "unexpected character '%c'", c);
        }
        AGILE_TRY(grow((void **)&m->toks, &m->captoks, m->ntoks + 1, sizeof(ptx_tok)));
        m->toks[m->ntoks++] = (ptx_tok){(uint32_t)st, (uint32_t)(i - st), line, kind};
    }
    AGILE_TRY(check_strings(m));
out:
    return rv;
}

/* ---- parser --------------------------------------------------------------------------- */

static uint32_t tok_end(const ptx_module *m, uint32_t t)
{
    return m->toks[t].off + m->toks[t].len;
}

/* Index of the token closing the bracket opened at t, or PTX_NONE. */
static uint32_t match_close(const ptx_module *m, uint32_t t, char open, char close)
{
    uint32_t depth = 0;
    for (uint32_t i = t; i < m->ntoks; i++) {
        /* a parameter list never spans a statement or a block */
        if (open == '(' && (agile_guard_tok_punct(m, i, ';') || agile_guard_tok_punct(m, i, '{') ||
                            agile_guard_tok_punct(m, i, '}')))
            return PTX_NONE;
        if (agile_guard_tok_punct(m, i, open)) {
            depth++;
        } else if (agile_guard_tok_punct(m, i, close)) {
            if (--depth == 0) return i;
        }
    }
    return PTX_NONE;
}

/* Are the brackets between tokens a and b (exclusive) balanced and properly nested? */
static bool balanced(const ptx_module *m, uint32_t a, uint32_t b)
{
    char stack[64];
    uint32_t d = 0;
    for (uint32_t t = a + 1; t < b; t++) {
        char c;
        if (m->toks[t].kind != PTK_PUNCT) continue;
        c = m->src[m->toks[t].off];
        if (c == '(' || c == '[' || c == '{') {
            if (d == sizeof(stack)) return false;
            stack[d++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (c == ')' || c == ']' || c == '}') {
            if (d == 0 || stack[d - 1] != c) return false;
            d--;
        }
    }
    return d == 0;
}

/* Are tokens [a, e) the operands of line directive d as the PTX ISA writes them? ptxas
 * does not end these directives at the newline: a word after their operands starts an
 * instruction for ptxas (".loc 1 5 0 trap" runs a trap) but would be one more operand for
 * a reader that skips to the end of the line. So the operands must be exactly:
 *   .version M.N | .address_size N | .target W {, W} | .file N "name" [, N, N]
 *   .loc N N N [, function_name LABEL, inlined_at N N N] */
static bool line_form_ok(const ptx_module *m, uint32_t d, uint32_t a, uint32_t e)
{
    static const char form_loc_inl[] = "nnn,ii,innn";
    const char *form;
    char kinds[16];
    uint32_t n = e - a;
    if (n >= sizeof(kinds)) return false;
    for (uint32_t k = 0; k < n; k++) {
        const ptx_tok *t = &m->toks[a + k];
        kinds[k] = t->kind == PTK_NUM     ? 'n'
                   : t->kind == PTK_STR   ? 's'
                   : t->kind == PTK_IDENT ? 'i'
                                          : ',';
    }
    kinds[n] = '\0';
    if (agile_guard_tok_eq(m, d, ".version") || agile_guard_tok_eq(m, d, ".address_size"))
        return strcmp(kinds, "n") == 0;
    if (agile_guard_tok_eq(m, d, ".target")) {
        for (uint32_t k = 0; k < n; k++)
            if (kinds[k] != (k % 2 ? ',' : 'i')) return false;
        return n % 2 == 1;
    }
    if (agile_guard_tok_eq(m, d, ".file"))
        return strcmp(kinds, "ns") == 0 || strcmp(kinds, "ns,n,n") == 0;
    form = n == 3 ? "nnn" : form_loc_inl;
    return agile_guard_tok_eq(m, d, ".loc") && strcmp(kinds, form) == 0 &&
           (n == 3 || (agile_guard_tok_eq(m, a + 4, "function_name") &&
                       agile_guard_tok_eq(m, a + 7, "inlined_at")));
}

/* First token after the line-terminated directive at t (.version, .target, .address_size,
 * .file, .loc), whose operands must have their PTX ISA form (line_form_ok). */
static uint32_t skip_line(ptx_module *m, uint32_t t)
{
    uint32_t line = m->toks[t].line, d = t;
    t++;
    while (t < m->ntoks && m->toks[t].line == line) {
        if (m->toks[t].kind == PTK_PUNCT && !agile_guard_tok_punct(m, t, ',')) {
            fail(m, line, "unexpected '%c' in a line directive", m->src[m->toks[t].off]);
            return PTX_NONE;
        }
        t++;
    }
    if (!line_form_ok(m, d, d + 1, t)) {
        fail(m, line,
             "malformed '%.*s' line (ptxas would read what follows its operands as "
             "code)",
             (int)m->toks[d].len, ptx_tok_str(m, d));
        return PTX_NONE;
    }
    return t;
}

uint32_t agile_guard_type_size(const char *s, size_t n, bool data_only)
{
    static const struct {
        const char *name;
        uint8_t len, size, data;
    } types[] = {
#define X(name, bytes, data) {#name, sizeof #name - 1, bytes, data},
        AGILE_PTX_TYPE_LIST(X)
#undef X
    };
    if (n && s[0] == '.') s++, n--;
    for (size_t k = 0; k < AGILE_ARRAY_LEN(types); k++)
        if (types[k].len == n && memcmp(types[k].name, s, n) == 0)
            return !data_only || types[k].data ? types[k].size : 0;
    return 0;
}

static uint64_t type_size(const ptx_module *m, uint32_t t)
{
    if (t >= m->ntoks || m->toks[t].len < 2 || ptx_tok_str(m, t)[0] != '.') return 0;
    return agile_guard_type_size(ptx_tok_str(m, t), m->toks[t].len, false);
}

static ptx_space space_of(const ptx_module *m, uint32_t t)
{
    if (agile_guard_tok_eq(m, t, ".global")) return PTX_SPACE_GLOBAL;
    if (agile_guard_tok_eq(m, t, ".shared") || agile_guard_tok_prefix(m, t, ".shared::"))
        return PTX_SPACE_SHARED;
    if (agile_guard_tok_eq(m, t, ".local")) return PTX_SPACE_LOCAL;
    if (agile_guard_tok_eq(m, t, ".const")) return PTX_SPACE_CONST;
    if (agile_guard_tok_eq(m, t, ".param") || agile_guard_tok_prefix(m, t, ".param::"))
        return PTX_SPACE_PARAM;
    if (agile_guard_tok_eq(m, t, ".texref") || agile_guard_tok_eq(m, t, ".surfref") ||
        agile_guard_tok_eq(m, t, ".samplerref"))
        return PTX_SPACE_OTHER;
    return PTX_SPACE_NONE;
}

/* A variable declaration in tokens [a, b): records its name, space and size. Declarations
 * of other spaces (.reg) and of several names at once record only what is certain: a name
 * the guard does not know is never an address it allows. */
static int parse_var(ptx_module *m, uint32_t a, uint32_t b, uint32_t func)
{
    ptx_var v = {PTX_NONE, func, PTX_SPACE_NONE, false, 0};
    uint64_t elem = 0, vec = 1, count = 1;
    bool sized = true;
    int rv = AGILE_OK;
    uint32_t t;

    for (t = a; t < b; t++) {
        ptx_space sp;
        if (m->toks[t].kind != PTK_IDENT) break;
        if (agile_guard_tok_eq(m, t, ".extern")) {
            v.ext = true;
        } else if ((sp = space_of(m, t)) != PTX_SPACE_NONE) {
            v.space = (uint8_t)sp;
        } else if (agile_guard_tok_eq(m, t, ".v2")) {
            vec = 2;
        } else if (agile_guard_tok_eq(m, t, ".v4")) {
            vec = 4;
        } else if (agile_guard_tok_eq(m, t, ".v8")) {
            vec = 8;
        } else if (type_size(m, t) != 0) {
            elem = type_size(m, t);
        } else if (agile_guard_tok_eq(m, t, ".align")) {
            t++; /* skip the alignment value */
        } else if (ptx_tok_str(m, t)[0] != '.') {
            v.name = t;
            break;
        }
    }
    if (v.name == PTX_NONE || v.space == PTX_SPACE_NONE) return AGILE_OK;
    for (t = v.name + 1; t + 1 < b && agile_guard_tok_punct(m, t, '[');) {
        uint64_t d;
        if (agile_guard_tok_punct(m, t + 1, ']')) {
            sized = false;
            t += 2;
            continue;
        }
        if (t + 2 >= b || m->toks[t + 1].kind != PTK_NUM || !agile_guard_tok_punct(m, t + 2, ']') ||
            !agile_guard_parse_int(ptx_tok_str(m, t + 1), m->toks[t + 1].len, &d))
            return AGILE_OK;
        if (d != 0 && count > UINT64_MAX / 1024 / d) return AGILE_OK;
        count *= d;
        t += 3;
    }
    v.size = sized ? elem * vec * count : 0;
    AGILE_TRY(grow((void **)&m->vars, &m->capvars, m->nvars + 1, sizeof(ptx_var)));
    m->vars[m->nvars++] = v;
out:
    return rv;
}

/* The ';' ending the declaration or directive that starts at t: brackets must balance
 * before it (a ';' inside "[", "(" or "{" is refused, not skipped). PTX_NONE on error. */
static uint32_t decl_end(ptx_module *m, uint32_t t, uint32_t line)
{
    char stack[64];
    uint32_t d = 0;
    for (; t < m->ntoks; t++) {
        char c;
        if (m->toks[t].kind != PTK_PUNCT) continue;
        c = m->src[m->toks[t].off];
        if (c == '(' || c == '[' || c == '{') {
            if (d == sizeof(stack)) {
                fail(m, m->toks[t].line, "nesting too deep");
                return PTX_NONE;
            }
            stack[d++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (c == ')' || c == ']' || c == '}') {
            if (d == 0 || stack[d - 1] != c) {
                fail(m, m->toks[t].line, "unbalanced '%c'", c);
                return PTX_NONE;
            }
            d--;
        } else if (c == ';') {
            if (d != 0) {
                fail(m, m->toks[t].line, "';' inside brackets");
                return PTX_NONE;
            }
            return t;
        }
    }
    fail(m, line, "declaration without ';'");
    return PTX_NONE;
}

static int push_stmt(ptx_module *m, const ptx_stmt *s)
{
    int rv = AGILE_OK;
    AGILE_TRY(grow((void **)&m->st, &m->capst, m->nst + 1, sizeof(ptx_stmt)));
    m->st[m->nst++] = *s;
out:
    return rv;
}

/* An instruction from token t (after any predicate) to its `;`. */
static int parse_instr(ptx_module *m, uint32_t *tp, ptx_stmt *s)
{
    uint32_t t = *tp, depth = 0, start;
    int rv = AGILE_OK;

    if (m->toks[t].kind != PTK_IDENT) return fail(m, m->toks[t].line, "expected an opcode");
    s->kind = PST_INSTR;
    s->op = t++;
    s->opnd0 = m->nopnds;
    s->nopnd = 0;
    start = t;
    for (;; t++) {
        char c;
        if (t >= m->ntoks) return fail(m, m->toks[s->op].line, "instruction without ';'");
        if (m->toks[t].kind != PTK_PUNCT) continue;
        c = m->src[m->toks[t].off];
        if (c == '(' || c == '[' || c == '{') {
            depth++;
        } else if (c == ')' || c == ']' || c == '}') {
            if (depth == 0) return fail(m, m->toks[t].line, "unbalanced '%c'", c);
            depth--;
        } else if (c == ':') {
            return fail(m, m->toks[t].line, "unexpected ':' in an instruction");
        } else if (c == ';' && depth > 0) {
            return fail(m, m->toks[t].line, "';' inside brackets");
        } else if (depth == 0 && (c == ',' || c == ';')) {
            if (c == ';' && t == s->op + 1) break; /* no operands: "ret;" */
            if (t == start) return fail(m, m->toks[t].line, "empty operand");
            AGILE_TRY(grow((void **)&m->opnds, &m->capopnds, m->nopnds + 1, sizeof(ptx_opnd)));
            m->opnds[m->nopnds++] = (ptx_opnd){start, t};
            s->nopnd++;
            start = t + 1;
            if (c == ';') break;
        }
    }
    s->t1 = t;
    s->end = tok_end(m, t);
    *tp = t + 1;
out:
    return rv;
}

static int parse_body(ptx_module *m, ptx_func *f, uint32_t open, uint32_t fidx)
{
    uint32_t t = open + 1, depth = 1;
    int rv = AGILE_OK;

    f->body_open = open;
    f->st0 = m->nst;
    while (t < m->ntoks) {
        ptx_stmt s;
        memset(&s, 0, sizeof(s));
        s.pred = PTX_NONE;
        s.op = PTX_NONE;
        s.t0 = t;
        s.depth = depth;
        if (agile_guard_tok_punct(m, t, '}')) {
            if (--depth == 0) {
                f->body_close = t;
                f->st1 = m->nst;
                return AGILE_OK;
            }
            s.kind = PST_CLOSE;
            s.t1 = t + 1;
            s.end = tok_end(m, t);
            s.depth = depth;
            t++;
        } else if (agile_guard_tok_punct(m, t, '{')) {
            s.kind = PST_OPEN;
            s.t1 = t + 1;
            s.end = tok_end(m, t);
            depth++;
            t++;
        } else if (m->toks[t].kind == PTK_IDENT && ptx_tok_str(m, t)[0] == '.') {
            s.kind = PST_DIR;
            s.op = t;
            if (agile_guard_tok_eq(m, t, ".loc") || agile_guard_tok_eq(m, t, ".file")) {
                t = skip_line(m, t);
                if (t == PTX_NONE) return AGILE_EREJECT;
                s.t1 = t;
                s.end = tok_end(m, t - 1);
            } else {
                t = decl_end(m, t, m->toks[s.op].line); /* .local .b32 a[2] = {1, 2}; */
                if (t == PTX_NONE) return AGILE_EREJECT;
                s.t1 = t;
                s.end = tok_end(m, t);
                AGILE_TRY(parse_var(m, s.t0, s.t1, fidx));
                t++;
            }
        } else if (m->toks[t].kind == PTK_IDENT && agile_guard_tok_punct(m, t + 1, ':')) {
            s.kind = PST_LABEL;
            s.t1 = t + 1;
            s.end = tok_end(m, t + 1);
            t += 2;
        } else if (agile_guard_tok_punct(m, t, '@')) {
            t++;
            if (agile_guard_tok_punct(m, t, '!')) {
                s.pred_neg = 1;
                t++;
            }
            if (t >= m->ntoks || m->toks[t].kind != PTK_IDENT)
                return fail(m, m->toks[s.t0].line, "bad guard predicate");
            s.pred = t++;
            if (t >= m->ntoks) return fail(m, m->toks[s.t0].line, "predicate without instruction");
            AGILE_TRY(parse_instr(m, &t, &s));
        } else if (m->toks[t].kind == PTK_IDENT) {
            AGILE_TRY(parse_instr(m, &t, &s));
        } else if (agile_guard_tok_punct(m, t, ';')) {
            t++; /* empty statement */
            continue;
        } else {
            return fail(m, m->toks[t].line, "unexpected '%.*s' in function body",
                        (int)m->toks[t].len, ptx_tok_str(m, t));
        }
        AGILE_TRY(push_stmt(m, &s));
    }
    return fail(m, m->toks[open].line, "function body without '}'");
out:
    return rv;
}

static int parse_func(ptx_module *m, uint32_t t0, uint32_t t, bool entry, uint32_t *next)
{
    ptx_func f;
    int rv = AGILE_OK;
    uint32_t fidx = m->nfuncs;

    memset(&f, 0xff, sizeof(f));
    f.entry = entry;
    f.has_body = false;
    f.t0 = t0;
    f.st0 = f.st1 = 0;
    t++;
    if (!entry && agile_guard_tok_punct(m, t, '(')) {
        f.ret_open = t;
        f.ret_close = match_close(m, t, '(', ')');
        if (f.ret_close == PTX_NONE || !balanced(m, f.ret_open, f.ret_close))
            return fail(m, m->toks[t].line, "unbalanced return parameter list");
        t = f.ret_close + 1;
    }
    if (t >= m->ntoks || m->toks[t].kind != PTK_IDENT || ptx_tok_str(m, t)[0] == '.')
        return fail(m, m->toks[t0].line, "function without a name");
    f.name = t++;
    if (agile_guard_tok_punct(m, t, '(')) {
        f.params_open = t;
        f.params_close = match_close(m, t, '(', ')');
        if (f.params_close == PTX_NONE || !balanced(m, f.params_open, f.params_close))
            return fail(m, m->toks[t].line, "unbalanced parameter list");
        t = f.params_close + 1;
    }
    /* Performance directives and attributes (.maxntid 128, 1, 1 / .noreturn / .pragma). */
    while (t < m->ntoks && !agile_guard_tok_punct(m, t, '{') && !agile_guard_tok_punct(m, t, ';')) {
        if (m->toks[t].kind == PTK_PUNCT && !agile_guard_tok_punct(m, t, ','))
            return fail(m, m->toks[t].line, "unexpected '%c' in function header",
                        m->src[m->toks[t].off]);
        t++;
    }
    if (t >= m->ntoks) return fail(m, m->toks[t0].line, "function without body or ';'");
    AGILE_TRY(grow((void **)&m->funcs, &m->capfuncs, m->nfuncs + 1, sizeof(ptx_func)));
    m->nfuncs++;
    if (agile_guard_tok_punct(m, t, ';')) {
        m->funcs[fidx] = f;
        *next = t + 1;
        return AGILE_OK;
    }
    f.has_body = true;
    AGILE_TRY(parse_body(m, &f, t, fidx));
    m->funcs[fidx] = f;
    *next = f.body_close + 1;
out:
    return rv;
}

static int parse_top(ptx_module *m)
{
    uint32_t t = 0;
    int rv = AGILE_OK;

    while (t < m->ntoks) {
        uint32_t a = t;
        if (agile_guard_tok_punct(m, t, ';')) {
            t++;
            continue;
        }
        if (m->toks[t].kind != PTK_IDENT || ptx_tok_str(m, t)[0] != '.')
            return fail(m, m->toks[t].line, "unexpected '%.*s' at module level",
                        (int)m->toks[t].len, ptx_tok_str(m, t));
        if (agile_guard_tok_eq(m, t, ".version")) {
            m->version_tok = t + 1;
            t = skip_line(m, t);
            if (t == PTX_NONE) return AGILE_EREJECT;
        } else if (agile_guard_tok_eq(m, t, ".target")) {
            m->target_tok = t + 1;
            t = skip_line(m, t);
            if (t == PTX_NONE) return AGILE_EREJECT;
        } else if (agile_guard_tok_eq(m, t, ".address_size")) {
            /* One, and a number alone on its line: the rewriter and the verifier must agree
             * on what it says. */
            uint64_t v = 0;
            if (m->address_size || t + 1 >= m->ntoks ||
                !agile_guard_parse_int(ptx_tok_str(m, t + 1), m->toks[t + 1].len, &v) || !v ||
                (t + 2 < m->ntoks && m->toks[t + 2].line == m->toks[t].line))
                return fail(m, m->toks[t].line, "bad .address_size");
            m->address_size = (uint32_t)AGILE_MIN(v, 1000);
            t = skip_line(m, t);
            if (t == PTX_NONE) return AGILE_EREJECT;
        } else if (agile_guard_tok_eq(m, t, ".file") || agile_guard_tok_eq(m, t, ".loc")) {
            t = skip_line(m, t);
            if (t == PTX_NONE) return AGILE_EREJECT;
        } else if (agile_guard_tok_eq(m, t, ".section")) {
            /* DWARF blocks: data only, passed through untouched. */
            uint32_t c;
            t += 2;
            if (!agile_guard_tok_punct(m, t, '{') || (c = match_close(m, t, '{', '}')) == PTX_NONE)
                return fail(m, m->toks[a].line, "bad .section block");
            /* DWARF data has no strings: a brace inside one would count for the verifier's
             * scan of the block and not for the tokenizer. */
            for (uint32_t k = t; k < c; k++)
                if (m->toks[k].kind == PTK_STR)
                    return fail(m, m->toks[a].line, "bad .section block");
            t = c + 1;
        } else if (agile_guard_tok_eq(m, t, ".alias")) {
            return fail(m, m->toks[t].line, ".alias is not supported by the guard");
        } else {
            /* Linkage attributes, then a function or a variable/directive up to ';'. */
            while (t < m->ntoks &&
                   (agile_guard_tok_eq(m, t, ".visible") || agile_guard_tok_eq(m, t, ".extern") ||
                    agile_guard_tok_eq(m, t, ".weak") || agile_guard_tok_eq(m, t, ".common")))
                t++;
            if (agile_guard_tok_eq(m, t, ".entry") || agile_guard_tok_eq(m, t, ".func")) {
                AGILE_TRY(parse_func(m, a, t, agile_guard_tok_eq(m, t, ".entry"), &t));
            } else {
                /* A variable (a state space first) or a .pragma; anything else is a directive
                 * the guard does not know, and a declaration it would misread is refused. */
                if (t >= m->ntoks ||
                    (space_of(m, t) == PTX_SPACE_NONE && !agile_guard_tok_eq(m, t, ".pragma")))
                    return fail(m, m->toks[a].line, "unknown module-level directive");
                t = decl_end(m, t, m->toks[a].line);
                if (t == PTX_NONE) return AGILE_EREJECT;
                AGILE_TRY(parse_var(m, a, t, PTX_NONE));
                t++;
            }
        }
    }
out:
    return rv;
}

int agile_guard_ptx_parse(ptx_module *m, const char *src, size_t len)
{
    int rv = AGILE_OK;

    memset(m, 0, sizeof(*m));
    m->src = src;
    m->len = len;
    m->target_tok = PTX_NONE;
    m->version_tok = PTX_NONE;
    AGILE_TRY(lex(m));
    AGILE_TRY(parse_top(m));
out:
    if (rv == AGILE_ENOMEM) m->oom = true;
    return rv;
}

void agile_guard_ptx_fini(ptx_module *m)
{
    free(m->toks);
    free(m->st);
    free(m->opnds);
    free(m->funcs);
    free(m->vars);
    m->toks = NULL;
    m->st = NULL;
    m->opnds = NULL;
    m->funcs = NULL;
    m->vars = NULL;
}

/* ---- kernel parameters (guard.h agile_guard_entry_params) ------------------------------- */

/* Element size of a kernel parameter's type token, 0 if it is none: the data types of
 * AGILE_PTX_TYPE_LIST (not .pred, nor the formats only instructions name). */
static uint32_t param_type_size(const ptx_module *m, uint32_t t)
{
    if (t >= m->ntoks || m->toks[t].len < 2 || ptx_tok_str(m, t)[0] != '.') return 0;
    return agile_guard_type_size(ptx_tok_str(m, t), m->toks[t].len, true);
}

static int param_fail(char *err, size_t cap, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int param_fail(char *err, size_t cap, int rv, const char *fmt, ...)
{
    va_list ap;
    if (!err || !cap) return rv;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return rv;
}

/* Parameter declarations in tokens (open, close): `.param <type> [.align N] name [count]`,
 * split at commas; a later .align belongs to .ptr (the pointee) and changes nothing here. */
static int lay_out_params(const ptx_module *m, const ptx_func *e, const char *name,
                          agile_guard_entry *out, char *err, size_t cap)
{
    uint32_t off = 0;
    out->nparams = 0;
    if (e->params_open != PTX_NONE && e->params_close > e->params_open + 1) {
        uint32_t t = e->params_open + 1;
        while (t < e->params_close) {
            uint32_t elem = 0, align = 0, count = 1;
            bool named = false;
            for (; t < e->params_close && !agile_guard_tok_punct(m, t, ','); t++) {
                const char *s = ptx_tok_str(m, t);
                if (!elem && agile_guard_tok_eq(m, t, ".align") && t + 1 < e->params_close) {
                    uint64_t a;
                    if (agile_guard_parse_int(ptx_tok_str(m, t + 1), m->toks[t + 1].len, &a) &&
                        a && a <= 256)
                        align = (uint32_t)a;
                    t++;
                } else if (!elem && (elem = param_type_size(m, t)) != 0) {
                    /* the type */
                } else if (elem && !named && m->toks[t].kind == PTK_IDENT && s[0] != '.') {
                    named = true;
                } else if (named && agile_guard_tok_punct(m, t, '[') && t + 1 < e->params_close) {
                    uint64_t c;
                    if (agile_guard_parse_int(ptx_tok_str(m, t + 1), m->toks[t + 1].len, &c) &&
                        c && c <= 4096)
                        count = (uint32_t)c;
                }
            }
            if (t < e->params_close) t++; /* the comma */
            if (!elem || !named)
                return param_fail(err, cap, AGILE_EINVAL, "kernel '%s': parameter %u not understood",
                                  name, out->nparams);
            if (out->nparams == AGILE_GUARD_MAX_PARAMS)
                return param_fail(err, cap, AGILE_ETOOBIG, "kernel '%s' has more than %u parameters",
                                  name, AGILE_GUARD_MAX_PARAMS);
            if (!align) align = elem;
            off = AGILE_ALIGN_UP(off, align);
            out->offset[out->nparams] = off;
            out->size[out->nparams] = elem * count;
            off += elem * count;
            out->nparams++;
        }
    }
    out->argsize = off;
    return AGILE_OK;
}

int agile_guard_entry_params(const char *src, size_t len, const char *name,
                             agile_guard_entry *out, char *err, size_t errcap)
{
    ptx_module pm;
    const ptx_func *e = NULL;
    uint32_t kidx = 0;
    size_t nlen = name ? strlen(name) : 0;
    int rv;

    if (!src || !name || !out) return AGILE_EINVAL;
    memset(out, 0, sizeof *out);
    rv = agile_guard_ptx_parse(&pm, src, len);
    if (rv != AGILE_OK) {
        param_fail(err, errcap, rv, "module PTX does not parse: %s", pm.err);
        goto out;
    }
    /* kernel ids count the defined entries in order, as the rewriter numbers them */
    for (uint32_t i = 0; i < pm.nfuncs && !e; i++) {
        const ptx_func *fn = &pm.funcs[i];
        if (!fn->entry || !fn->has_body) continue;
        const ptx_tok *t = &pm.toks[fn->name];
        if (t->len == nlen && memcmp(pm.src + t->off, name, nlen) == 0)
            e = fn;
        else
            kidx++;
    }
    if (!e) {
        rv = param_fail(err, errcap, AGILE_ENOENT, "no kernel (.entry) named '%s' in the module",
                        name);
        goto out;
    }
    out->kernel_id = kidx + 1;
    rv = lay_out_params(&pm, e, name, out, err, errcap);
out:
    agile_guard_ptx_fini(&pm);
    return rv;
}
