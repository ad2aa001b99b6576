/* verify.c — the guard's independent verifier.
 *
 * It shares nothing with the rewriter (ptx.c/rewrite.c): its own scanner splits the text
 * into statements, its own opcode table says which instructions address memory and in
 * which state space, and it trusts no decision of the rewriter. It accepts a module only
 * if, for every instruction that can address global memory (global or generic space):
 *   - a register address R is, in the same basic block (no label, branch or brace
 *     between) and with no redefinition in between (last definition wins, a predicated
 *     definition fails), either
 *       fenced:   or.b64 R, T, %agile_base   with  and.b64 T, X, M  before it
 *                 (M = %agile_mask, or an immediate <= W-1 when the window size is known),
 *                 used as [R] or [R+off] with 0 <= off <= gap - 256; or
 *       generic:  selp.b64 R, F, X, P  with F fenced as above and isspacep.global P, X
 *                 (same X, not redefined in between), used as [R], generic space only;
 *   - a named address [var+off] is a variable defined in the module with 0 <= off < size;
 *   - [%agile_viol+off] is the strict-mode violation record;
 *   - bulk copies have an immediate size <= gap or a size register from min.u32 S, _, <=gap;
 * and if %agile_mask/%agile_base/%agile_viol are defined exactly once per function, by
 * ld.param from the hidden parameters, before any label; guard names are declared only at
 * the top level of a body; each call to a function of the module passes the caller's mask
 * and base in the callee's hidden parameters; other calls name a gate; no indirect calls,
 * tensor-map, multimem, texture/surface or unknown memory opcodes; .address_size 64.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "guard.h"

enum { VS_INSTR, VS_LABEL, VS_DIR, VS_OPEN, VS_CLOSE, VS_HEADER };

typedef struct span {
    const char *p;
    size_t n;
} span;

#define VMAXOPS AGILE_GUARD_MAX_OPERANDS
typedef struct vst {
    int kind;
    unsigned line, depth;
    span text; /* whole statement, comments removed only at the edges */
    span pred; /* guard predicate register (without @ and !) */
    span op;   /* opcode or directive */
    span ops[VMAXOPS];
    unsigned nops; /* may exceed VMAXOPS: only the first VMAXOPS are kept */
} vst;

typedef struct vfunc {
    bool entry, body;
    span name, header;
    unsigned s0, s1; /* body statements */
} vfunc;

typedef struct vvar {
    span name;
    int space; /* 'g' global, 's' shared, 'l' local, 'c' const */
    uint64_t size;
    unsigned func; /* UINT32_MAX: module level */
} vvar;

typedef struct vctx {
    const char *src;
    size_t len;
    const agile_guard_vopts *o;
    uint64_t gap;
    vst *st;
    unsigned nst, capst;
    vfunc *fn;
    unsigned nfn, capfn;
    vvar *var;
    unsigned nvar, capvar;
    unsigned *vidx; /* open-addressed index of var by (name, func): var index + 1, 0 empty */
    unsigned vidxcap;
    bool addr64;
    char *err;
    size_t errcap;
    bool failed;
} vctx;

static int vfail(vctx *v, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int vfail(vctx *v, unsigned line, const char *fmt, ...)
{
    va_list ap;
    if (!v->failed && v->err && v->errcap) {
        int k = snprintf(v->err, v->errcap, "line %u: ", line);
        if (k >= 0 && (size_t)k < v->errcap) {
            va_start(ap, fmt);
            vsnprintf(v->err + k, v->errcap - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    v->failed = true;
    return AGILE_EGUARD;
}

static bool sp_eq(span a, const char *s)
{
    size_t n = strlen(s);
    return a.n == n && memcmp(a.p, s, n) == 0;
}

static bool sp_same(span a, span b)
{
    return a.n == b.n && a.n > 0 && memcmp(a.p, b.p, a.n) == 0;
}

static bool sp_starts(span a, const char *s)
{
    size_t n = strlen(s);
    return a.n >= n && memcmp(a.p, s, n) == 0;
}

/* White space as the guard's tokenizer has it (ptx.c): the two must split text alike. */
static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static span sp_trim(span a)
{
    while (a.n && is_space(a.p[0]))
        a.p++, a.n--;
    while (a.n && is_space(a.p[a.n - 1]))
        a.n--;
    return a;
}

static bool is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c == '%' || c == '.' || c == ':';
}

/* Does the text contain `w` as a whole word? */
static bool sp_has_span_word(span a, span w)
{
    const char *p = a.p, *e;
    if (w.n == 0 || a.p == NULL || a.n < w.n) return false;
    e = a.p + a.n;
    while (p + w.n <= e && (p = memmem(p, (size_t)(e - p), w.p, w.n)) != NULL) {
        if ((p == a.p || !is_word(p[-1])) && (p + w.n == e || !is_word(p[w.n]))) return true;
        p++;
    }
    return false;
}

static bool sp_has_word(span a, const char *w)
{
    return sp_has_span_word(a, (span){w, strlen(w)});
}

static bool sp_contains(span a, const char *s)
{
    return a.p != NULL && memmem(a.p, a.n, s, strlen(s)) != NULL;
}

/* A function header: linkage words, then .entry or .func. 0: no, 'e' entry, 'f' func. */
static int header_kind(span h)
{
    size_t i = 0;
    for (;;) {
        size_t a;
        while (i < h.n && is_space(h.p[i]))
            i++;
        a = i;
        while (i < h.n && is_word(h.p[i]))
            i++;
        span w = {h.p + a, i - a};
        if (sp_eq(w, ".visible") || sp_eq(w, ".extern") || sp_eq(w, ".weak") || sp_eq(w, ".common"))
            continue;
        return sp_eq(w, ".entry") ? 'e' : sp_eq(w, ".func") ? 'f' : 0;
    }
}

static bool v_int(span a, int64_t *out)
{
    uint64_t u = 0;
    unsigned base = 10;
    size_t i = 0;
    bool neg = false;
    a = sp_trim(a);
    if (a.n && a.p[0] == '-') {
        neg = true;
        i = 1;
    }
    if (a.n && (a.p[a.n - 1] == 'U' || a.p[a.n - 1] == 'u')) a.n--;
    if (a.n - i > 2 && a.p[i] == '0' && (a.p[i + 1] == 'x' || a.p[i + 1] == 'X'))
        base = 16, i += 2;
    else if (a.n - i > 1 && a.p[i] == '0')
        base = 8, i += 1;
    if (i >= a.n) return false;
    for (; i < a.n; i++) {
        char c = a.p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 99;
        if (d >= base || u > (UINT64_MAX - d) / base) return false;
        u = u * base + d;
    }
    if (u > (uint64_t)INT64_MAX) return false;
    *out = neg ? -(int64_t)u : (int64_t)u;
    return true;
}

/* ---- scanner ---------------------------------------------------------------------------- */

/* The lexical rules (guard/README.md, "Lexing"; the rewriter's tokenizer applies the same
 * rules with its own code). ptxas ends a string at the first '"' and knows no escapes, so
 * text is accepted only if no lexer could split it differently: printable ASCII, tab,
 * newline (carriage return only before one), no backslash; a string stays on its line,
 * holds no comment marker and is the one argument of an allow-listed .pragma or the name of
 * a .file; a comment holds no '"' and no comment opener or closer other than its own. */
static bool v_pragma_ok(span s)
{
    static const char *const words[] = {"nounroll", "enable_smem_spilling"};
    static const char *const with_num[] = {"used_bytes_mask ", "frequency "};
    for (size_t k = 0; k < AGILE_ARRAY_LEN(words); k++)
        if (sp_eq(s, words[k])) return true;
    for (size_t k = 0; k < AGILE_ARRAY_LEN(with_num); k++) {
        if (!sp_starts(s, with_num[k])) continue;
        span d = {s.p + strlen(with_num[k]), s.n - strlen(with_num[k])};
        bool hex = sp_starts(d, "0x") || sp_starts(d, "0X");
        size_t j = hex ? 2 : 0;
        if (d.n <= j || d.n > 20) return false;
        for (; j < d.n; j++)
            if (!(d.p[j] >= '0' && d.p[j] <= '9') &&
                !(hex && ((d.p[j] >= 'a' && d.p[j] <= 'f') || (d.p[j] >= 'A' && d.p[j] <= 'F'))))
                return false;
        return true;
    }
    return false;
}

static bool v_has(span a, const char *s)
{
    return a.n > 0 && memmem(a.p, a.n, s, strlen(s)) != NULL;
}

static int v_lexical(vctx *v, const char *s, size_t n)
{
    unsigned line = 1;
    span prev = {NULL, 0}, prev2 = {NULL, 0}; /* the last two code words or characters */
    int after_pragma = 0; /* 1: the string must come; 2: the ';' must come */

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        line += c == '\n';
        if (c == '\\') return vfail(v, line, "lexical: backslash (escape or line continuation)");
        if (c == '\r' && (i + 1 == n || s[i + 1] != '\n'))
            return vfail(v, line, "lexical: carriage return without a newline");
        if (!(c == '\t' || c == '\n' || c == '\r' || (c >= ' ' && c <= '~')))
            return vfail(v, line, "lexical: byte 0x%02x is not PTX text", c);
    }
    line = 1;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        span tok;
        if (c == '\n' || c == ' ' || c == '\t' || c == '\r') {
            line += c == '\n';
            i++;
            continue;
        }
        if (c == '/' && i + 1 < n && (s[i + 1] == '/' || s[i + 1] == '*')) {
            bool block = s[i + 1] == '*';
            const char *e = block ? memmem(s + i + 2, n - i - 2, "*/", 2)
                                  : memchr(s + i, '\n', n - i);
            span body;
            if (e == NULL && block) return vfail(v, line, "lexical: unterminated comment");
            if (e == NULL) e = s + n;
            body = (span){s + i + 2, (size_t)(e - s - i - 2)};
            if (memchr(body.p, '"', body.n) != NULL || v_has(body, "/*") ||
                v_has(body, block ? "//" : "*/"))
                return vfail(v, line, "lexical: a quote or comment marker inside a comment");
            for (size_t k = 0; k < body.n; k++)
                line += body.p[k] == '\n';
            i = (size_t)(e - s) + (block ? 2 : 0);
            continue;
        }
        if (c == '"') {
            const char *e = memchr(s + i + 1, '"', n - i - 1);
            span body;
            if (e == NULL) return vfail(v, line, "lexical: unterminated string");
            body = (span){s + i + 1, (size_t)(e - s - i - 1)};
            if (memchr(body.p, '\n', body.n) != NULL)
                return vfail(v, line, "lexical: string over a newline");
            if (v_has(body, "//") || v_has(body, "/*") || v_has(body, "*/"))
                return vfail(v, line, "lexical: comment marker inside a string");
            if (after_pragma == 1) {
                if (!v_pragma_ok(body))
                    return vfail(v, line, "lexical: .pragma \"%.*s\" is not allowed",
                                 (int)AGILE_MIN(body.n, 64u), body.p);
                after_pragma = 2;
            } else if (!(sp_eq(prev2, ".file") && prev.n && prev.p[0] >= '0' && prev.p[0] <= '9')) {
                return vfail(v, line, "lexical: string outside .pragma and .file");
            }
            tok = (span){s + i, body.n + 2};
            i += tok.n;
        } else {
            size_t j = i + 1;
            if (c == '#' || c == '\'' || c == '`') /* cpp lines, character literals */
                return vfail(v, line, "lexical: character '%c' outside PTX's tokens", c);
            if (is_word(c))
                while (j < n && is_word(s[j]))
                    j++;
            tok = (span){s + i, j - i};
            i = j;
            if (after_pragma == 1) return vfail(v, line, "lexical: .pragma without its string");
            if (after_pragma == 2 && !sp_eq(tok, ";"))
                return vfail(v, line, "lexical: .pragma string not followed by ';'");
            after_pragma = sp_eq(tok, ".pragma") ? 1 : 0;
        }
        prev2 = prev;
        prev = tok;
    }
    if (after_pragma) return vfail(v, line, "lexical: .pragma at end of input");
    return AGILE_OK;
}

/* Copy src to dst with // and block comments replaced by spaces (newlines kept, so line
 * numbers stay); strings are copied as they are. v_lexical has run: strings and comments
 * cannot hold each other's delimiters, and every block comment is terminated. */
static void blank_comments(const char *src, size_t n, char *dst)
{
    size_t i = 0;
    while (i < n) {
        char c = src[i];
        if (c == '"') {
            dst[i++] = c;
            while (i < n && src[i] != '"')
                dst[i] = src[i], i++;
            if (i < n) dst[i++] = '"';
        } else if (c == '/' && i + 1 < n && src[i + 1] == '/') {
            while (i < n && src[i] != '\n')
                dst[i++] = ' ';
        } else if (c == '/' && i + 1 < n && src[i + 1] == '*') {
            dst[i++] = ' ';
            dst[i++] = ' ';
            while (i < n && !(src[i] == '*' && i + 1 < n && src[i + 1] == '/')) {
                dst[i] = src[i] == '\n' ? '\n' : ' ';
                i++;
            }
            if (i < n) {
                dst[i++] = ' ';
                dst[i++] = ' ';
            } else {
                dst[n - 1] = '\x01'; /* unterminated: make sure the scanner refuses it */
            }
        } else {
            dst[i++] = c;
        }
    }
    dst[n] = '\0';
}

static int push(vctx *v, const vst *s)
{
    if (v->nst == v->capst) {
        unsigned nc = v->capst ? v->capst * 2 : 256;
        vst *n = realloc(v->st, nc * sizeof(vst));
        if (n == NULL) return AGILE_ENOMEM;
        v->st = n;
        v->capst = nc;
    }
    v->st[v->nst++] = *s;
    return AGILE_OK;
}

/* t starts with the whole word w (".loc" is not ".local"). */
static bool sp_starts_word(span t, const char *w)
{
    size_t n = strlen(w);
    return sp_starts(t, w) && (t.n == n || !is_word(t.p[n]));
}

static bool line_directive(span t)
{
    return sp_starts_word(t, ".version") || sp_starts_word(t, ".target") ||
           sp_starts_word(t, ".address_size") || sp_starts_word(t, ".file") ||
           sp_starts_word(t, ".loc");
}

/* A line directive's operands as the PTX ISA writes them (ptxas reads on past the newline:
 * a word after them would be an instruction to it). The text is classified into words
 * (n: starting with a digit, w: others), strings (s) and commas; the shape must be one of
 * the forms below, by the directive. */
static bool v_line_form_ok(span t)
{
    char shape[16];
    size_t k = 0, i = 0;
    span words[16];
    while (i < t.n) {
        char c = t.p[i];
        size_t j = i + 1;
        if (is_space(c)) {
            i++;
            continue;
        }
        if (k + 1 >= sizeof(shape)) return false;
        if (c == '"') {
            while (j < t.n && t.p[j] != '"')
                j++;
            if (j++ >= t.n) return false;
            shape[k] = 's';
        } else if (is_word(c)) {
            while (j < t.n && is_word(t.p[j]))
                j++;
            shape[k] = c >= '0' && c <= '9' ? 'n' : 'w';
        } else if (c == ',') {
            shape[k] = ',';
        } else {
            return false;
        }
        words[k++] = (span){t.p + i, j - i};
        i = j;
    }
    shape[k] = '\0';
    if (k == 0) return false;
    if (sp_eq(words[0], ".version") || sp_eq(words[0], ".address_size"))
        return strcmp(shape, "wn") == 0;
    if (sp_eq(words[0], ".file")) return strcmp(shape, "wns") == 0 || strcmp(shape, "wns,n,n") == 0;
    if (sp_eq(words[0], ".loc"))
        return strcmp(shape, "wnnn") == 0 ||
               (strcmp(shape, "wnnn,ww,wnnn") == 0 && sp_eq(words[5], "function_name") &&
                sp_eq(words[8], "inlined_at"));
    if (sp_eq(words[0], ".target")) {
        for (size_t x = 1; x < k; x++)
            if (shape[x] != (x % 2 ? 'w' : ',')) return false;
        return k % 2 == 0;
    }
    return false;
}

/* Split the text into statements. Comments are skipped; a statement's text is the source
 * from its first to its last character (comments inside long statements stay but never
 * matter: operands are checked by exact words). */
static bool plain[256];
static pthread_once_t plain_once = PTHREAD_ONCE_INIT;

static void plain_init(void)
{
    for (int c = 1; c < 256; c++)
        plain[c] = strchr("\n \t\r\f\v\";:{}()[]/", c) == NULL;
}

static int scan(vctx *v)
{
    const char *s = v->src;
    size_t n = v->len, i = 0, st = SIZE_MAX;
    unsigned line = 1, sline = 1, depth = 0, nest = 0; /* nest: ( [ { inside a statement */
    int rv = AGILE_OK;
    vst cur;

    pthread_once(&plain_once, plain_init);
#define EMIT(kind_, end_)                                                                          \
    do {                                                                                           \
        memset(&cur, 0, sizeof(cur));                                                              \
        cur.kind = (kind_);                                                                        \
        cur.line = sline;                                                                          \
        cur.depth = depth;                                                                         \
        cur.text = sp_trim((span){s + st, (end_)-st});                                             \
        AGILE_TRY(push(v, &cur));                                                                  \
        st = SIZE_MAX;                                                                             \
        nest = 0;                                                                                  \
    } while (0)

    while (i < n) {
        char c = s[i];
        /* Inside a statement, plain characters (names, numbers, operators that split
         * nothing) need no decision: skip them in a tight loop. Comments are blanked. */
        if (st != SIZE_MAX && plain[(unsigned char)c]) {
            i++;
            while (i < n && plain[(unsigned char)s[i]])
                i++;
            continue;
        }
        if (c == '\n') {
            if (st != SIZE_MAX && line_directive((span){s + st, i - st})) EMIT(VS_DIR, i);
            line++;
            i++;
            continue;
        }
        if (c != '\n' && is_space(c)) {
            i++;
            continue;
        }
        if (st == SIZE_MAX) {
            st = i;
            sline = line;
            if (n - i >= 8 && memcmp(s + i, ".section", 8) == 0) {
                /* DWARF: skip the block whole */
                while (i < n && s[i] != '{') {
                    line += s[i] == '\n';
                    i++;
                }
                unsigned d = 0;
                for (; i < n; i++) {
                    line += s[i] == '\n';
                    if (s[i] == '/' && i + 1 < n && s[i + 1] == '/') { /* as the tokenizer */
                        while (i + 1 < n && s[i + 1] != '\n')
                            i++;
                    } else if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
                        for (i += 2; i + 1 < n && !(s[i] == '*' && s[i + 1] == '/'); i++)
                            line += s[i] == '\n';
                        i++;
                    } else if (s[i] == '{')
                        d++;
                    else if (s[i] == '}' && --d == 0)
                        break;
                }
                if (i >= n) return vfail(v, sline, "unterminated .section");
                i++;
                st = SIZE_MAX;
                continue;
            }
        }
        if (c == '"') {
            i++;
            while (i < n && s[i] != '"' && s[i] != '\n') /* no escapes (v_lexical) */
                i++;
            if (i >= n || s[i] != '"') return vfail(v, line, "unterminated string");
            i++;
            continue;
        }
        if (c == '(' || c == '[' || (c == '{' && i > st)) {
            /* '{' opens a block only at the start of a statement or after a function
             * header; inside an instruction it opens a vector operand. */
            if (c == '{') {
                span h = {s + st, i - st};
                if (depth == 0 && nest == 0 && header_kind(h)) {
                    EMIT(VS_HEADER, i);
                    st = i;
                    EMIT(VS_OPEN, i + 1);
                    depth++;
                    i++;
                    continue;
                }
            }
            nest++;
            i++;
            continue;
        }
        if ((c == ')' || c == ']' || c == '}') && nest > 0) {
            nest--;
            i++;
            continue;
        }
        if (c == '{') { /* st == i */
            EMIT(VS_OPEN, i + 1);
            depth++;
            i++;
            continue;
        }
        if (c == '}') {
            if (st != i) return vfail(v, line, "unexpected '}'");
            if (depth == 0) return vfail(v, line, "unbalanced '}'");
            depth--;
            EMIT(VS_CLOSE, i + 1);
            i++;
            continue;
        }
        if (c == ';' && nest == 0) {
            span t = sp_trim((span){s + st, i - st});
            bool header = depth == 0 && header_kind(t);
            EMIT(header ? VS_HEADER : (t.n && t.p[0] == '.') ? VS_DIR : VS_INSTR, i);
            i++;
            continue;
        }
        if (c == ':' && nest == 0 && !(i + 1 < n && s[i + 1] == ':') &&
            !(i > 0 && s[i - 1] == ':')) {
            /* a label: one word, then ':' */
            span t = sp_trim((span){s + st, i - st});
            bool word = t.n > 0;
            for (size_t k = 0; k < t.n; k++)
                if (!is_word(t.p[k]) || t.p[k] == ':') word = false;
            if (word) {
                EMIT(VS_LABEL, i);
                i++;
                continue;
            }
        }
        i++;
    }
    if (st != SIZE_MAX) {
        span t = sp_trim((span){s + st, n - st});
        if (!line_directive(t)) return vfail(v, sline, "statement without ';' at end of input");
        EMIT(VS_DIR, n);
    }
    if (depth != 0) return vfail(v, line, "unbalanced '{'");
out:
#undef EMIT
    return rv;
}

/* Predicate, opcode and operands of an instruction. */
static void split_instr(vst *s)
{
    span t = s->text;
    size_t i = 0;
    if (t.n && t.p[0] == '@') {
        i = 1;
        if (i < t.n && t.p[i] == '!') i++;
        while (i < t.n && is_space(t.p[i]))
            i++;
        s->pred.p = t.p + i;
        while (i < t.n && is_word(t.p[i]))
            i++;
        s->pred.n = (size_t)(t.p + i - s->pred.p);
    }
    while (i < t.n && is_space(t.p[i]))
        i++;
    s->op.p = t.p + i;
    while (i < t.n && is_word(t.p[i]))
        i++;
    s->op.n = (size_t)(t.p + i - s->op.p);
    s->nops = 0;
    {
        size_t st = i;
        int nest = 0;
        for (; i <= t.n; i++) {
            char c = i < t.n ? t.p[i] : ',';
            if (c == '(' || c == '[' || c == '{')
                nest++;
            else if (c == ')' || c == ']' || c == '}')
                nest--;
            else if (c == ',' && nest == 0) {
                span o = sp_trim((span){t.p + st, i - st});
                if (o.n || s->nops || i < t.n) {
                    if (s->nops < VMAXOPS) s->ops[s->nops] = o;
                    s->nops++;
                }
                st = i + 1;
            }
        }
        if (s->nops == 1 && s->ops[0].n == 0) s->nops = 0;
    }
}

/* ---- module structure ------------------------------------------------------------------- */

static int add_var(vctx *v, span text, unsigned func)
{
    static const struct {
        const char *n;
        uint8_t s;
    } ty[] = {{".b8", 1},  {".u8", 1},  {".s8", 1},  {".b16", 2},  {".u16", 2},  {".s16", 2},
              {".f16", 2}, {".b32", 4}, {".u32", 4}, {".s32", 4},  {".f32", 4},  {".b64", 8},
              {".u64", 8}, {".s64", 8}, {".f64", 8}, {".bf16", 2}, {".b128", 16}};
    vvar x = {{NULL, 0}, 0, 0, func};
    uint64_t elem = 0, count = 1;
    size_t i = 0;
    bool ext = false;

    while (i < text.n) {
        size_t a;
        while (i < text.n && is_space(text.p[i]))
            i++;
        a = i;
        while (i < text.n && is_word(text.p[i]))
            i++;
        span w = {text.p + a, i - a};
        if (w.n == 0) break;
        if (sp_eq(w, ".extern"))
            ext = true;
        else if (sp_eq(w, ".global"))
            x.space = 'g';
        else if (sp_eq(w, ".shared") || sp_starts(w, ".shared::"))
            x.space = 's';
        else if (sp_eq(w, ".local"))
            x.space = 'l';
        else if (sp_eq(w, ".const"))
            x.space = 'c';
        else if (sp_eq(w, ".v2") || sp_eq(w, ".v4"))
            count *= w.p[2] - '0';
        else if (w.p[0] == '.') {
            for (size_t k = 0; k < sizeof(ty) / sizeof(ty[0]); k++)
                if (sp_eq(w, ty[k].n)) elem = ty[k].s;
        } else if (w.p[0] >= '0' && w.p[0] <= '9') {
            continue; /* .align N */
        } else {
            x.name = w;
            break;
        }
    }
    if (x.name.n == 0 || x.space == 0 || ext || elem == 0) return AGILE_OK;
    /* dimensions */
    while (i < text.n && text.p[i] == '[') {
        size_t a = ++i;
        int64_t d;
        while (i < text.n && text.p[i] != ']')
            i++;
        if (i >= text.n || !v_int((span){text.p + a, i - a}, &d) || d <= 0 ||
            (uint64_t)d > (1ull << 40) / count)
            return AGILE_OK;
        count *= (uint64_t)d;
        i++;
    }
    x.size = elem * count;
    if (v->nvar == v->capvar) {
        unsigned nc = v->capvar ? v->capvar * 2 : 32;
        vvar *nv = realloc(v->var, nc * sizeof(vvar));
        if (nv == NULL) return AGILE_ENOMEM;
        v->var = nv;
        v->capvar = nc;
    }
    v->var[v->nvar++] = x;
    return AGILE_OK;
}

static int structure(vctx *v)
{
    int rv = AGILE_OK;
    unsigned cur = UINT32_MAX;
    for (unsigned i = 0; i < v->nst; i++) {
        vst *s = &v->st[i];
        if (s->kind == VS_INSTR) split_instr(s);
        if (s->kind == VS_DIR && s->depth == 0 && sp_starts(s->text, ".address_size")) {
            int64_t a;
            span x = {s->text.p + 13, s->text.n - 13};
            if (!v_int(x, &a) || a != 64) return vfail(v, s->line, "not 64-bit addressing");
            v->addr64 = true;
        }
        if (s->depth == 0 && s->kind != VS_HEADER && s->kind != VS_OPEN &&
            sp_contains(s->text, "agile"))
            if (sp_contains(s->text, "%agile") || sp_contains(s->text, "__agile"))
                return vfail(v, s->line, "guard name used at module level");
        if (s->kind == VS_HEADER) {
            vfunc f;
            span h = s->text;
            size_t k;
            memset(&f, 0, sizeof(f));
            f.entry = header_kind(h) == 'e';
            f.header = h;
            /* the name: the word before the parameter list '(' that follows .entry/.func
             * (and the return list of a .func) */
            {
                const char *kw = f.entry ? ".entry" : ".func";
                size_t at = 0;
                for (k = 0; k + strlen(kw) <= h.n; k++)
                    if (memcmp(h.p + k, kw, strlen(kw)) == 0 &&
                        (k + strlen(kw) == h.n || !is_word(h.p[k + strlen(kw)]))) {
                        at = k + strlen(kw);
                        break;
                    }
                while (at < h.n && is_space(h.p[at]))
                    at++;
                if (at < h.n && h.p[at] == '(') {
                    int d = 0;
                    for (; at < h.n; at++) {
                        if (h.p[at] == '(')
                            d++;
                        else if (h.p[at] == ')' && --d == 0) {
                            at++;
                            break;
                        }
                    }
                }
                while (at < h.n && is_space(h.p[at]))
                    at++;
                f.name.p = h.p + at;
                while (at < h.n && is_word(h.p[at]))
                    at++;
                f.name.n = (size_t)(h.p + at - f.name.p);
            }
            if (i + 1 < v->nst && v->st[i + 1].kind == VS_OPEN && v->st[i + 1].depth == 0) {
                f.body = true;
                f.s0 = i + 2;
                cur = v->nfn;
            }
            if (v->nfn == v->capfn) {
                unsigned nc = v->capfn ? v->capfn * 2 : 16;
                vfunc *nf = realloc(v->fn, nc * sizeof(vfunc));
                if (nf == NULL) return AGILE_ENOMEM;
                v->fn = nf;
                v->capfn = nc;
            }
            v->fn[v->nfn++] = f;
            continue;
        }
        if (s->kind == VS_CLOSE && s->depth == 0 && cur != UINT32_MAX) {
            v->fn[cur].s1 = i;
            cur = UINT32_MAX;
            continue;
        }
        if (s->kind == VS_DIR && (sp_starts(s->text, ".global") || sp_starts(s->text, ".shared") ||
                                  sp_starts(s->text, ".local") || sp_starts(s->text, ".const") ||
                                  sp_starts(s->text, ".visible") || sp_starts(s->text, ".weak") ||
                                  sp_starts(s->text, ".common")))
            AGILE_TRY(
                add_var(v, s->text, s->depth == 0 ? UINT32_MAX : (cur == UINT32_MAX ? 0 : cur)));
    }
    if (!v->addr64) return vfail(v, 1, "missing .address_size 64");
out:
    return rv;
}

/* ---- dataflow in a basic block ---------------------------------------------------------- */

static bool writes(const vst *s, span reg)
{
    span d;
    if (s->kind != VS_INSTR || s->nops == 0) return false;
    d = s->ops[0];
    if (d.n == 0 || d.p[0] == '[' || d.p[0] == '(') return false;
    return sp_has_span_word(d, reg);
}

static bool ends_block(const vst *s)
{
    if (s->kind == VS_LABEL || s->kind == VS_OPEN || s->kind == VS_CLOSE || s->kind == VS_HEADER)
        return true;
    if (s->kind != VS_INSTR) return false;
    return sp_starts(s->op, "bra") || sp_starts(s->op, "brx") || sp_starts(s->op, "ret") ||
           sp_starts(s->op, "exit") || sp_starts(s->op, "trap") || sp_starts(s->op, "call");
}

/* The last definition of reg before statement i in its basic block, or UINT32_MAX. */
static unsigned last_def(const vctx *v, unsigned s0, unsigned i, span reg)
{
    while (i > s0) {
        const vst *s = &v->st[--i];
        if (ends_block(s) && !(s->kind == VS_INSTR && sp_starts(s->op, "call") && !writes(s, reg)))
            return UINT32_MAX;
        if (writes(s, reg)) return i;
    }
    return UINT32_MAX;
}

static bool is_def(const vst *s, const char *op, unsigned nops)
{
    return s->kind == VS_INSTR && sp_eq(s->op, op) && s->nops == nops && s->pred.n == 0;
}

static uint64_t reg_number(span w, size_t plen, int64_t lo);

/* The alignment-mask register %agile_mN: N (a power of two, 2..128), else 0. */
static uint64_t align_reg(span m)
{
    return sp_starts(m, "%agile_m") ? reg_number(m, 8, 2) : 0;
}

/* The alignment an immediate and-mask proves: its lowest set bit (all bits below are
 * cleared); 2^62 for 0. */
static uint64_t imm_align(int64_t k)
{
    uint64_t u = (uint64_t)k;
    return u ? (u & (~u + 1)) : (uint64_t)1 << 62;
}

/* Is the mask operand acceptable? The alignment it proves (1: none), 0 if it is not a
 * window mask. %agile_mN is accepted only as check_func proves it: defined once, at entry,
 * as and.b64 %agile_mN, %agile_mask, -N. */
static uint64_t mask_ok(const vctx *v, span m)
{
    int64_t k;
    if (sp_eq(m, "%agile_mask")) return 1;
    if (align_reg(m)) return align_reg(m);
    if (v->o->window_bits == 0 || !v_int(m, &k) || k < 0) return 0;
    return (uint64_t)k <= (((uint64_t)1 << v->o->window_bits) - 1) ? imm_align(k) : 0;
}

/* Is reg, just before statement i, the output of a fence? (or.b64 R, T, %agile_base with
 * and.b64 T, X, mask.) The alignment the fence proves, 0 if not fenced. The base is
 * W-aligned, so or-ing it keeps the alignment. */
static uint64_t fenced(const vctx *v, unsigned s0, unsigned i, span reg)
{
    unsigned j = last_def(v, s0, i, reg), k;
    const vst *o, *a;
    if (j == UINT32_MAX) return 0;
    o = &v->st[j];
    if (!is_def(o, "or.b64", 3) || !sp_eq(o->ops[2], "%agile_base")) return 0;
    k = last_def(v, s0, j, o->ops[1]);
    if (k == UINT32_MAX) return 0;
    a = &v->st[k];
    return is_def(a, "and.b64", 3) ? mask_ok(v, a->ops[2]) : 0;
}

/* The last definition of reg before i is `op reg, ...` with n operands (unpredicated):
 * its index, else UINT32_MAX. */
static unsigned def_is(const vctx *v, unsigned s0, unsigned i, span reg, const char *op,
                       unsigned n)
{
    unsigned j = last_def(v, s0, i, reg);
    return j != UINT32_MAX && is_def(&v->st[j], op, n) && sp_same(v->st[j].ops[0], reg)
               ? j
               : UINT32_MAX;
}

/* The shared side of a generic access (the address is clamped into the CTA's allocation
 * when it is in the shared window):
 *     isspacep.shared Q, X;  cvta.to.shared.u64 Y0, X;  cvt.u32.u64 V, Y0;
 *     min.u32 U1, V, %agile_lN;  and.b32 U, U1, imm;  cvt.u64.u32 Y1, U;
 *     cvta.shared.u64 Y, Y1;  [G0 = X | and.b64 G0, X, imm];  selp.b64 G, Y, G0, Q
 * The alignment it proves (at most N), 0 if not; *first gets the first statement that
 * reads X. */
static uint64_t generic_side(const vctx *v, unsigned s0, unsigned i, span G, span X,
                             unsigned *first)
{
    unsigned g = def_is(v, s0, i, G, "selp.b64", 4), q, y, y1, u, u1, vv, y0, g0 = UINT32_MAX;
    uint64_t ag = 1, au, n;
    int64_t imm;
    if (g == UINT32_MAX) return 0;
    const vst *sel = &v->st[g];
    if ((q = def_is(v, s0, g, sel->ops[3], "isspacep.shared", 2)) == UINT32_MAX ||
        !sp_same(v->st[q].ops[1], X) ||
        (y = def_is(v, s0, g, sel->ops[1], "cvta.shared.u64", 2)) == UINT32_MAX ||
        (y1 = def_is(v, s0, y, v->st[y].ops[1], "cvt.u64.u32", 2)) == UINT32_MAX ||
        (u = def_is(v, s0, y1, v->st[y1].ops[1], "and.b32", 3)) == UINT32_MAX ||
        !v_int(v->st[u].ops[2], &imm) ||
        (u1 = def_is(v, s0, u, v->st[u].ops[1], "min.u32", 3)) == UINT32_MAX ||
        !sp_starts(v->st[u1].ops[2], "%agile_l") ||
        (n = reg_number(v->st[u1].ops[2], 8, 1)) == 0 ||
        (vv = def_is(v, s0, u1, v->st[u1].ops[1], "cvt.u32.u64", 2)) == UINT32_MAX ||
        (y0 = def_is(v, s0, vv, v->st[vv].ops[1], "cvta.to.shared.u64", 2)) == UINT32_MAX ||
        !sp_same(v->st[y0].ops[1], X))
        return 0;
    au = AGILE_MIN(imm_align(imm), n);
    if (!sp_same(sel->ops[2], X)) {
        if ((g0 = def_is(v, s0, g, sel->ops[2], "and.b64", 3)) == UINT32_MAX ||
            !sp_same(v->st[g0].ops[1], X) || !v_int(v->st[g0].ops[2], &imm))
            return 0;
        ag = imm_align(imm);
    }
    *first = AGILE_MIN(AGILE_MIN(q, y0), g0);
    return AGILE_MIN(au, ag);
}

/* selp.b64 R, F, G, P with F fenced, isspacep.global P, X and G the shared side of X
 * (generic_side), X unchanged from its first use to the select. The alignment both sides
 * prove, 0 if not. */
static uint64_t generic_fenced(const vctx *v, unsigned s0, unsigned i, span reg)
{
    unsigned j = last_def(v, s0, i, reg), k, x, first = UINT32_MAX;
    const vst *sel;
    uint64_t af, ag;
    span X;
    if (j == UINT32_MAX) return 0;
    sel = &v->st[j];
    if (!is_def(sel, "selp.b64", 4)) return 0;
    if (!(af = fenced(v, s0, j, sel->ops[1]))) return 0;
    if ((k = def_is(v, s0, j, sel->ops[3], "isspacep.global", 2)) == UINT32_MAX) return 0;
    X = v->st[k].ops[1];
    if (!(ag = generic_side(v, s0, j, sel->ops[2], X, &first))) return 0;
    /* X must not change between its first use and the select */
    x = last_def(v, s0, j, X);
    if (x != UINT32_MAX && x >= AGILE_MIN(k, first)) return 0;
    return AGILE_MIN(af, ag);
}

/* Split [base+off] / [base+-off] / [base-off] / [base]. */
static bool split_addr(span a, span *base, int64_t *off)
{
    size_t i = 1, st;
    a = sp_trim(a);
    if (a.n < 3 || a.p[0] != '[' || a.p[a.n - 1] != ']') return false;
    while (i < a.n - 1 && is_space(a.p[i]))
        i++;
    st = i;
    while (i < a.n - 1 && is_word(a.p[i]) && a.p[i] != ':')
        i++;
    *base = (span){a.p + st, i - st};
    *off = 0;
    if (base->n == 0) return false;
    while (i < a.n - 1 && is_space(a.p[i]))
        i++;
    if (i == a.n - 1) return true;
    if (a.p[i] == '+') {
        i++;
        while (i < a.n - 1 && is_space(a.p[i]))
            i++;
    } else if (a.p[i] != '-') {
        return false;
    }
    return v_int((span){a.p + i, a.n - 1 - i}, off);
}

static unsigned v_var_slot(const vctx *v, span name, unsigned func)
{
    uint64_t h = 1469598103934665603u ^ func;
    for (size_t i = 0; i < name.n; i++)
        h = (h ^ (unsigned char)name.p[i]) * 1099511628211u;
    return (unsigned)(h ^ (h >> 29)) & (v->vidxcap - 1);
}

/* Index the variables (after structure): per (name, function) one slot, holding what
 * v_find_var answers for it — a function's first declaration, the module's last — so
 * that a lookup costs O(1), not a pass over every variable. */
static int v_index_vars(vctx *v)
{
    unsigned cap = 64;
    while (cap < 2 * v->nvar)
        cap *= 2;
    v->vidx = calloc(cap, sizeof(unsigned));
    if (v->vidx == NULL) return AGILE_ENOMEM;
    v->vidxcap = cap;
    for (unsigned i = 0; i < v->nvar; i++) {
        const vvar *x = &v->var[i];
        unsigned h = v_var_slot(v, x->name, x->func), e;
        for (; (e = v->vidx[h]) != 0; h = (h + 1) & (cap - 1))
            if (v->var[e - 1].func == x->func && sp_same(v->var[e - 1].name, x->name)) break;
        if (e == 0 || x->func == UINT32_MAX) v->vidx[h] = i + 1;
    }
    return AGILE_OK;
}

static const vvar *v_var_at(const vctx *v, span name, unsigned func)
{
    for (unsigned h = v_var_slot(v, name, func), e; (e = v->vidx[h]) != 0;
         h = (h + 1) & (v->vidxcap - 1))
        if (v->var[e - 1].func == func && sp_same(v->var[e - 1].name, name)) return &v->var[e - 1];
    return NULL;
}

/* A name in function func: its own declaration shadows the module's. */
static const vvar *v_find_var(const vctx *v, span name, unsigned func)
{
    const vvar *x;
    if (v->vidxcap == 0 || name.n == 0) return NULL;
    x = v_var_at(v, name, func);
    return x ? x : v_var_at(v, name, UINT32_MAX);
}

/* Check one address operand in global ('g') or generic ('n') space. */
static int check_addr(vctx *v, unsigned fidx, unsigned i, span a, int space, uint64_t width)
{
    const vfunc *f = &v->fn[fidx];
    const vst *s = &v->st[i];
    span base;
    int64_t off;
    uint64_t al;
    if (!split_addr(a, &base, &off))
        return vfail(v, s->line, "unrecognised address '%.*s'", (int)a.n, a.p);
    if (base.p[0] != '%') {
        const vvar *x = v_find_var(v, base, fidx);
        if (base.p[0] >= '0' && base.p[0] <= '9')
            return vfail(v, s->line, "unfenced absolute address");
        if (x == NULL || (space == 'g' && x->space != 'g'))
            return vfail(v, s->line, "address '%.*s' is not a variable of the module", (int)base.n,
                         base.p);
        if (off < 0 || (uint64_t)off >= x->size)
            return vfail(v, s->line, "offset outside variable '%.*s'", (int)base.n, base.p);
        if ((uint64_t)off % width != 0)
            return vfail(v, s->line, "misaligned offset into variable '%.*s'", (int)base.n,
                         base.p);
        return AGILE_OK;
    }
    if (sp_eq(base, "%agile_viol")) {
        if (off < 0 || off > 8 || space != 'g')
            return vfail(v, s->line, "bad violation record access");
        return AGILE_OK;
    }
    if ((al = fenced(v, f->s0, i, base)) != 0) {
        if (off < 0 || (uint64_t)off + AGILE_GUARD_ACCESS_SLACK > v->gap)
            return vfail(v, s->line, "offset %" PRId64 " not covered by the guard gap", off);
        if (al < width || (uint64_t)off % width != 0)
            return vfail(v, s->line, "'%.*s' needs %" PRIu64 "-byte alignment; the fence of '%.*s'"
                         " (+%" PRId64 ") does not give it", (int)s->op.n, s->op.p, width,
                         (int)base.n, base.p, off);
        return AGILE_OK;
    }
    if (space == 'n' && (al = generic_fenced(v, f->s0, i, base)) != 0) {
        if (off != 0) return vfail(v, s->line, "generic access with an offset after the fence");
        if (al < width)
            return vfail(v, s->line, "'%.*s' needs %" PRIu64 "-byte alignment; the fence of '%.*s'"
                         " does not give it", (int)s->op.n, s->op.p, width, (int)base.n, base.p);
        return AGILE_OK;
    }
    return vfail(v, s->line,
                 "'%.*s' addresses %s memory through '%.*s', which is not fenced in this block",
                 (int)s->op.n, s->op.p, space == 'g' ? "global" : "generic", (int)base.n, base.p);
}

/* How an explicit shared or local address must be confined: by a sized variable of that
 * space, or by the clamp the guard emits (and.<bits> R, T, imm over min.<bits> T, _, %agile_xN
 * with N >= width): shared below %aggr_smem_size - width (the CTA's allocation, 32-bit), local
 * at most the frame's end - width (the thread's allocation, 64-bit). */
typedef struct {
    char space;               /* the variables' state space ('s', 'l') */
    const char *and_op, *min_op, *bound; /* the clamp's instructions and bound register */
    const char *what, *within; /* for the refusal */
} confine_rule;

static const confine_rule SHARED_RULE = {'s', "and.b32", "min.u32", "%agile_l", "shared memory",
                                         "the allocation"};
static const confine_rule LOCAL_RULE = {'l', "and.b64", "min.u64", "%agile_h", "local memory",
                                        "the frame"};

static int check_confined(vctx *v, unsigned fidx, unsigned i, span a, uint64_t width,
                          const confine_rule *r)
{
    const vst *s = &v->st[i];
    unsigned s0 = v->fn[fidx].s0, j, k;
    span base;
    int64_t off, imm;
    if (!split_addr(a, &base, &off))
        return vfail(v, s->line, "unrecognised address '%.*s'", (int)a.n, a.p);
    if (base.p[0] != '%') {
        const vvar *x = v_find_var(v, base, fidx);
        if (x && x->space == r->space && x->size > 0 && off >= 0 &&
            (uint64_t)off % width == 0 && (uint64_t)off <= x->size &&
            width <= x->size - (uint64_t)off)
            return AGILE_OK;
    } else if (off == 0 && (j = last_def(v, s0, i, base)) != UINT32_MAX &&
               is_def(&v->st[j], r->and_op, 3) && v_int(v->st[j].ops[2], &imm) &&
               imm_align(imm) >= width &&
               (k = last_def(v, s0, j, v->st[j].ops[1])) != UINT32_MAX &&
               is_def(&v->st[k], r->min_op, 3) && sp_starts(v->st[k].ops[2], r->bound) &&
               reg_number(v->st[k].ops[2], 8, 1) >= width) {
        return AGILE_OK;
    }
    return vfail(v, s->line, "'%.*s' addresses %s through '%.*s', which is not confined to %s "
                 "for %" PRIu64 "-byte accesses in this block",
                 (int)s->op.n, s->op.p, r->what, (int)a.n, a.p, r->within, width);
}

/* A generic mbarrier address: a shared variable named with an 8-aligned offset inside
 * it, or [R] with R from and.b64 R, X, imm (8-aligned) and the instruction guarded by
 * P (not negated) from isspacep.shared P, R (only ever cleared after it by
 * setp.ne.u32 P, 0, 0), R unchanged since the test. AGILE_OK or AGILE_EGUARD (no message). */
static int check_mbarrier(const vctx *v, unsigned fidx, unsigned i, span a)
{
    const vst *s = &v->st[i];
    unsigned s0 = v->fn[fidx].s0, j, k, g;
    span base;
    int64_t off, imm;
    if (!split_addr(a, &base, &off)) return AGILE_EGUARD;
    if (base.p[0] != '%') {
        const vvar *x = v_find_var(v, base, fidx);
        return x && x->space == 's' && off >= 0 && off % 8 == 0 && (uint64_t)off + 8 <= x->size
                   ? AGILE_OK
                   : AGILE_EGUARD;
    }
    if (off != 0 || s->pred.n == 0 || s->text.n < 2 || s->text.p[1] == '!') return AGILE_EGUARD;
    j = last_def(v, s0, i, s->pred);
    while (j != UINT32_MAX && v->st[j].kind == VS_INSTR && sp_eq(v->st[j].op, "setp.ne.u32") &&
           v->st[j].nops == 3 && sp_same(v->st[j].ops[0], s->pred) &&
           sp_eq(v->st[j].ops[1], "0") && sp_eq(v->st[j].ops[2], "0"))
        j = last_def(v, s0, j, s->pred);
    if (j == UINT32_MAX || !is_def(&v->st[j], "isspacep.shared", 2) ||
        !sp_same(v->st[j].ops[0], s->pred) || !sp_same(v->st[j].ops[1], base))
        return AGILE_EGUARD;
    k = last_def(v, s0, i, base);
    if (k == UINT32_MAX || k > j) return AGILE_EGUARD;
    g = k;
    return is_def(&v->st[g], "and.b64", 3) && v_int(v->st[g].ops[2], &imm) && imm_align(imm) >= 8
               ? AGILE_OK
               : AGILE_EGUARD;
}

/* The opcode part after the next '.' at or after *i ("ld.global.u32": "global", "u32"). */
static span next_part(span op, size_t *i)
{
    size_t a;
    while (*i < op.n && op.p[*i] != '.')
        (*i)++;
    a = ++(*i);
    while (*i < op.n && op.p[*i] != '.')
        (*i)++;
    return (span){op.p + AGILE_MIN(a, op.n), *i > a ? *i - a : 0};
}

/* State spaces named in an opcode, in order: 'g' 's' 'l' 'c' 'p'. */
static unsigned op_spaces(span op, char *out, unsigned cap)
{
    unsigned n = 0;
    size_t i = 0;
    while (i < op.n) {
        span c = next_part(op, &i);
        char sp = 0;
        if (sp_eq(c, "global"))
            sp = 'g';
        else if (sp_eq(c, "shared") || sp_starts(c, "shared::"))
            sp = 's';
        else if (sp_eq(c, "local"))
            sp = 'l';
        else if (sp_eq(c, "const"))
            sp = 'c';
        else if (sp_eq(c, "param") || sp_starts(c, "param::"))
            sp = 'p';
        if (sp && n < cap) out[n++] = sp;
    }
    return n;
}

static bool root_is(span op, const char *r)
{
    size_t n = strlen(r);
    return op.n >= n && memcmp(op.p, r, n) == 0 && (op.n == n || op.p[n] == '.');
}

/* A bulk copy's size: at most the gap and a multiple of 16 (the hardware faults on
 * others): an immediate, or and.b32 S, T, -16 over min.u32 T, _, <= gap. */
static int check_bulk_size(vctx *v, unsigned fidx, unsigned i)
{
    const vst *s = &v->st[i];
    unsigned s0 = v->fn[fidx].s0;
    for (unsigned k = 0; k < s->nops && k < VMAXOPS; k++) {
        span o = s->ops[k];
        int64_t n, a;
        if (o.n && o.p[0] == '[') continue;
        if (v_int(o, &n))
            return (n >= 0 && (uint64_t)n <= v->gap && n % 16 == 0)
                       ? AGILE_OK
                       : vfail(v, s->line, "bulk size beyond the gap or not a multiple of 16");
        unsigned j = last_def(v, s0, i, o), m;
        if (j != UINT32_MAX && is_def(&v->st[j], "and.b32", 3) && v_int(v->st[j].ops[2], &a) &&
            imm_align(a) >= 16 && (m = last_def(v, s0, j, v->st[j].ops[1])) != UINT32_MAX &&
            is_def(&v->st[m], "min.u32", 3) && v_int(v->st[m].ops[2], &n) && n >= 0 &&
            (uint64_t)n <= v->gap)
            return AGILE_OK;
        return vfail(v, s->line, "bulk copy size is not bounded and 16-byte aligned");
    }
    return vfail(v, s->line, "bulk copy without size");
}

/* The alignment an access through op needs (own table, independent of the rewriter's):
 * a misaligned address faults. 0: cannot tell. */
static uint64_t access_align(const vst *s, span op)
{
    static const struct {
        const char *n;
        uint8_t b;
    } ty[] = {{"b8", 1},  {"u8", 1},  {"s8", 1},    {"b16", 2},    {"u16", 2},
              {"s16", 2}, {"f16", 2}, {"bf16", 2},  {"b32", 4},    {"u32", 4},
              {"s32", 4}, {"f32", 4}, {"f16x2", 4}, {"bf16x2", 4}, {"b64", 8},
              {"u64", 8}, {"s64", 8}, {"f64", 8},   {"b128", 16}};
    uint64_t vec = 1, size = 0, w;
    size_t i = 0;
    if (root_is(op, "prefetch") || root_is(op, "prefetchu")) return 1; /* never faults */
    if (root_is(op, "discard") || root_is(op, "applypriority")) return 128;
    if (root_is(op, "mbarrier") || sp_starts(op, "cp.async.mbarrier")) return 8;
    if (root_is(op, "ldmatrix") || root_is(op, "stmatrix")) return 16;
    if (sp_starts(op, "cp.async.bulk") || sp_starts(op, "cp.reduce.async.bulk")) return 16;
    if (sp_starts(op, "cp.async")) {
        for (unsigned k = 0; k < s->nops && k < VMAXOPS; k++) {
            int64_t n;
            if (s->ops[k].n && s->ops[k].p[0] == '[') continue;
            return v_int(s->ops[k], &n) && (n == 4 || n == 8 || n == 16) ? (uint64_t)n : 0;
        }
        return 0;
    }
    while (i < op.n) {
        span c = next_part(op, &i);
        if (sp_eq(c, "v2") || sp_eq(c, "v4") || sp_eq(c, "v8")) vec = (uint64_t)(c.p[1] - '0');
        for (size_t k = 0; k < sizeof(ty) / sizeof(ty[0]); k++)
            if (sp_eq(c, ty[k].n)) size = ty[k].b;
    }
    w = vec * size;
    return (w & (w - 1)) == 0 ? w : 0;
}

/* Opcodes that fault by design or by misuse the guard cannot exclude: the reason, or NULL. */
static const char *faults(span op)
{
    if (root_is(op, "trap")) return "trap";
    if (root_is(op, "brkpt")) return "brkpt";
    if (root_is(op, "setmaxnreg")) return "setmaxnreg";
    if (root_is(op, "alloca") || root_is(op, "stacksave") || root_is(op, "stackrestore"))
        return "dynamic stack allocation";
    if (root_is(op, "tcgen05")) return "tensor-memory access";
    return NULL;
}

static int check_mem(vctx *v, unsigned fidx, unsigned i)
{
    const vst *s = &v->st[i];
    span op = s->op;
    char sp[8];
    unsigned nsp = op_spaces(op, sp, 8), nbr = 0;
    bool any = false, per = false, bulk = false, fenced_global = false;

    for (unsigned k = 0; k < s->nops && k < VMAXOPS; k++)
        if (s->ops[k].n && s->ops[k].p[0] == '[') any = true;
    if (s->nops > VMAXOPS) {
        for (size_t k = 0; k < s->text.n; k++)
            if (s->text.p[k] == '[') any = true;
        if (any) return vfail(v, s->line, "too many operands in a memory instruction");
    }
    if (faults(op)) return vfail(v, s->line, "faulting instruction '%.*s'", (int)op.n, op.p);
    if (!any) return AGILE_OK;
    if (sp_contains(op, "tensor") || root_is(op, "multimem") || root_is(op, "tex") ||
        root_is(op, "tld4") || root_is(op, "suld") || root_is(op, "sust") || root_is(op, "sured") ||
        root_is(op, "suq") || root_is(op, "txq"))
        return vfail(v, s->line, "unbounded memory opcode '%.*s'", (int)op.n, op.p);
    if (root_is(op, "createpolicy")) return AGILE_OK;
    if (sp_starts(op, "cp.async.bulk") || sp_starts(op, "cp.reduce.async.bulk")) {
        per = bulk = true;
    } else if (sp_starts(op, "cp.async.mbarrier")) {
        per = false;
    } else if (sp_starts(op, "cp.async")) {
        per = true;
    } else if (!(root_is(op, "ld") || root_is(op, "st") || root_is(op, "ldu") ||
                 root_is(op, "atom") || root_is(op, "red") || root_is(op, "prefetch") ||
                 root_is(op, "prefetchu") || root_is(op, "discard") ||
                 root_is(op, "applypriority") || root_is(op, "mbarrier") ||
                 root_is(op, "ldmatrix") || root_is(op, "stmatrix"))) {
        return vfail(v, s->line, "unknown memory opcode '%.*s'", (int)op.n, op.p);
    }
    if (!per && nsp > 1)
        return vfail(v, s->line, "several state spaces in '%.*s'", (int)op.n, op.p);
    for (unsigned k = 0; k < s->nops && k < VMAXOPS; k++) {
        span a = s->ops[k];
        char space;
        if (!(a.n && a.p[0] == '[')) continue;
        if (!per)
            space = nsp ? sp[0] : 'n';
        else if (nbr < nsp)
            space = sp[nbr];
        else if (bulk && sp_contains(op, ".mbarrier::") && k + 1 == s->nops)
            space = 's';
        else
            return vfail(v, s->line, "cannot tell the space of an operand of '%.*s'", (int)op.n,
                         op.p);
        nbr++;
        if (space == 'g' || space == 'n') {
            uint64_t w = access_align(s, op);
            if (w == 0) return vfail(v, s->line, "cannot tell the width of '%.*s'", (int)op.n, op.p);
            if (root_is(op, "mbarrier") || sp_starts(op, "cp.async.mbarrier")) {
                if (space != 'n' || check_mbarrier(v, fidx, i, a) != AGILE_OK)
                    return vfail(v, s->line, "'%.*s' may address an mbarrier outside shared "
                                 "memory or misaligned", (int)op.n, op.p);
                continue;
            }
            if (check_addr(v, fidx, i, a, space, w) != AGILE_OK) return AGILE_EGUARD;
            fenced_global = true;
        } else if (space == 's' && !bulk && !sp_contains(op, "shared::cluster") &&
                   !sp_starts(op, "st.async") && !sp_starts(op, "red.async")) {
            uint64_t w = access_align(s, op);
            if (w == 0) return vfail(v, s->line, "cannot tell the width of '%.*s'", (int)op.n, op.p);
            if (check_confined(v, fidx, i, a, w, &SHARED_RULE) != AGILE_OK) return AGILE_EGUARD;
        } else if (space == 'l') {
            uint64_t w = access_align(s, op);
            if (w == 0) return vfail(v, s->line, "cannot tell the width of '%.*s'", (int)op.n, op.p);
            if (check_confined(v, fidx, i, a, w, &LOCAL_RULE) != AGILE_OK) return AGILE_EGUARD;
        }
    }
    if (bulk && fenced_global) return check_bulk_size(v, fidx, i);
    return AGILE_OK;
}

static const vfunc *find_func(const vctx *v, span name, bool *defined)
{
    const vfunc *r = NULL;
    *defined = false;
    for (unsigned i = 0; i < v->nfn; i++)
        if (sp_same(v->fn[i].name, name)) {
            r = &v->fn[i];
            if (r->body) {
                *defined = true;
                return r;
            }
        }
    return r;
}

/* Index of parameter `name` in a parameter list text "( .param .b64 a, .param .b64 b )". */
static int param_index(span list, const char *name)
{
    int idx = 0, d = 0;
    size_t st = 0;
    if (list.p == NULL) return -1;
    for (size_t i = 0; i <= list.n; i++) {
        char c = i < list.n ? list.p[i] : ',';
        if (c == '(' || c == '[')
            d++;
        else if (c == ')' || c == ']')
            d--;
        if ((c == ',' && d <= 1) || i == list.n) {
            if (sp_has_word((span){list.p + st, i - st}, name)) return idx;
            idx++;
            st = i + 1;
        }
    }
    return -1;
}

/* The last parameter list in a header: "(...)" after the name. */
static span header_params(span h, span name)
{
    const char *p = name.p + name.n;
    const char *e = h.p + h.n;
    while (p < e && *p != '(' && *p != '{')
        p++;
    if (p >= e || *p != '(') return (span){NULL, 0};
    const char *q = p;
    int d = 0;
    for (; q < e; q++) {
        if (*q == '(')
            d++;
        else if (*q == ')' && --d == 0)
            break;
    }
    return (span){p, (size_t)(q - p) + (q < e)};
}

static int check_call(vctx *v, unsigned fidx, unsigned i)
{
    const vst *s = &v->st[i];
    unsigned k = 0;
    bool defined;
    const vfunc *g;
    span callee, args = {NULL, 0};

    if (s->nops > VMAXOPS) return vfail(v, s->line, "call with too many operands");
    if (k < s->nops && s->ops[k].n && s->ops[k].p[0] == '(') k++;
    if (k >= s->nops) return vfail(v, s->line, "call without callee");
    callee = s->ops[k++];
    if (callee.n == 0 || callee.p[0] == '%') return vfail(v, s->line, "indirect call");
    for (size_t c = 0; c < callee.n; c++)
        if (!is_word(callee.p[c])) return vfail(v, s->line, "indirect call");
    if (k < s->nops && s->ops[k].n && s->ops[k].p[0] == '(') args = s->ops[k++];
    if (k < s->nops) return vfail(v, s->line, "indirect call");
    g = find_func(v, callee, &defined);
    if (!defined) {
        for (size_t n = 0; g && n < v->o->ngates; n++)
            if (strlen(v->o->gates[n]) == callee.n &&
                memcmp(v->o->gates[n], callee.p, callee.n) == 0)
                return AGILE_OK;
        return vfail(v, s->line, "call to '%.*s', which is neither in the module nor a gate",
                     (int)callee.n, callee.p);
    }
    if (g->entry) return vfail(v, s->line, "call to a kernel");
    {
        /* The callee's hidden parameters must receive the caller's mask and base. */
        static const char *const fp[] = {"__agile_fmask", "__agile_fbase", "__agile_fviol"};
        static const char *const cp[] = {"__agile_cm", "__agile_cb", "__agile_cv"};
        static const char *const src[] = {"%agile_mask", "%agile_base", "%agile_viol"};
        span plist = header_params(g->header, g->name);
        for (unsigned h = 0; h < 3; h++) {
            int pi = param_index(plist, fp[h]);
            int ai = param_index(args, cp[h]);
            bool ok = false;
            if (h == 2 && pi < 0 && ai < 0) break; /* no violation record */
            if (pi < 0 || pi != ai)
                return vfail(v, s->line, "call does not pass %s in %s", src[h], fp[h]);
            /* the last st.param into it, in this block */
            for (unsigned j = i; j > v->fn[fidx].s0;) {
                const vst *t = &v->st[--j];
                if (ends_block(t)) break;
                if (t->kind == VS_INSTR && t->nops == 2 && sp_starts(t->op, "st.param") &&
                    t->ops[0].n > 2 && sp_has_word(t->ops[0], cp[h])) {
                    ok = sp_eq(t->op, "st.param.b64") && t->pred.n == 0 && sp_eq(t->ops[1], src[h]);
                    break;
                }
            }
            if (!ok) return vfail(v, s->line, "call does not pass %s in %s", src[h], fp[h]);
        }
    }
    return AGILE_OK;
}

/* Registers the guard sets once at entry and the checks below rely on:
 *   %agile_mN = and.b64 %agile_mN, %agile_mask, -N   (alignment masks, N = 2..128)
 *   %agile_sh = mov.u32 %agile_sh, %aggr_smem_size   (the CTA's shared allocation)
 *   %agile_lN = sub.u32 %agile_lN, %agile_sh, N      (last N-byte slot in it, N = 1..128)
 * each written only so, once, at the top level before any label, after what it reads;
 * used only after that. Bits of *defined: N for m, N << 8 for l, 1 << 63 for sh. */
typedef struct entry_reg {
    const char *prefix, *op, *src;
    int sign; /* the immediate: sign * N; 0: none (%agile_sh) */
    unsigned shift;
} entry_reg;

/* N of a name `prefix` + power of two in [lo, 128], 0 if not one. */
static uint64_t reg_number(span w, size_t plen, int64_t lo)
{
    int64_t n;
    if (w.n <= plen || w.p[plen] < '1' || w.p[plen] > '9' ||
        !v_int((span){w.p + plen, w.n - plen}, &n) || n < lo || n > 128 || (n & (n - 1)) != 0)
        return 0;
    return (uint64_t)n;
}

static int check_entry_regs(vctx *v, const vst *s, uint64_t *defined, bool labelled,
                            bool mask_loaded)
{
    static const entry_reg er[] = {{"%agile_m", "and.b64", "%agile_mask", -1, 0},
                                   {"%agile_l", "sub.u32", "%agile_sh", 1, 8},
                                   {"%agile_sh", "mov.u32", "%aggr_smem_size", 0, 0}};
    const char *e = s->text.p + s->text.n;
    for (size_t r = 0; r < sizeof(er) / sizeof(er[0]); r++) {
        size_t plen = strlen(er[r].prefix);
        const char *p = s->text.p;
        while ((p = memmem(p, (size_t)(e - p), er[r].prefix, plen)) != NULL) {
            span w = {p, 0};
            uint64_t n = 0, bit, ready;
            int64_t k;
            bool ok;
            while (p + w.n < e && is_word(p[w.n]))
                w.n++;
            p += w.n;
            if (er[r].sign == 0) {
                if (w.n != plen) continue; /* another name */
                bit = (uint64_t)1 << 63;
                ready = 1;
            } else {
                n = reg_number(w, plen, er[r].sign < 0 ? 2 : 1);
                if (n == 0) {
                    if (w.n > plen && w.p[plen] >= '0' && w.p[plen] <= '9')
                        return vfail(v, s->line, "malformed guard register '%.*s'", (int)w.n, w.p);
                    continue; /* %agile_mask, %agile_sh */
                }
                bit = n << er[r].shift;
                ready = er[r].sign < 0 ? mask_loaded : (*defined >> 63);
            }
            if (!writes(s, w)) {
                if (!(*defined & bit))
                    return vfail(v, s->line, "%.*s used before it is set", (int)w.n, w.p);
                continue;
            }
            ok = is_def(s, er[r].op, er[r].sign ? 3 : 2) && sp_same(s->ops[0], w) &&
                 sp_eq(s->ops[1], er[r].src) && !labelled && s->depth == 1 && ready &&
                 !(*defined & bit);
            if (ok && er[r].sign) ok = v_int(s->ops[2], &k) && k == er[r].sign * (int64_t)n;
            if (!ok)
                return vfail(v, s->line, "%.*s is not set once at entry by %s from %s", (int)w.n,
                             w.p, er[r].op, er[r].src);
            *defined |= bit;
        }
    }
    return AGILE_OK;
}

/* The local-frame bounds: %agile_fr = mov.u64 %agile_fr, F (a sized .local variable of
 * this function) and %agile_hN = add.u64 %agile_hN, %agile_fr, size(F) - N, each set once
 * at the top level before any label; used only after that. Bits of *defined: N << 16 for
 * h, 1 << 62 for fr; *frame receives F. */
static int check_local_regs(vctx *v, unsigned fidx, const vst *s, uint64_t *defined,
                            const vvar **frame, bool labelled)
{
    const char *e = s->text.p + s->text.n;
    static const char *const pre[] = {"%agile_fr", "%agile_h"};
    for (unsigned r = 0; r < 2; r++) {
        size_t plen = strlen(pre[r]);
        const char *p = s->text.p;
        while ((p = memmem(p, (size_t)(e - p), pre[r], plen)) != NULL) {
            span w = {p, 0};
            uint64_t n = 0, bit;
            int64_t k;
            bool ok;
            while (p + w.n < e && is_word(p[w.n]))
                w.n++;
            p += w.n;
            if (r == 0) {
                if (w.n != plen) continue;
                bit = (uint64_t)1 << 62;
            } else {
                if ((n = reg_number(w, plen, 1)) == 0) {
                    if (w.n > plen && w.p[plen] >= '0' && w.p[plen] <= '9')
                        return vfail(v, s->line, "malformed guard register '%.*s'", (int)w.n, w.p);
                    continue;
                }
                bit = n << 16;
            }
            if (!writes(s, w)) {
                if (!(*defined & bit))
                    return vfail(v, s->line, "%.*s used before it is set", (int)w.n, w.p);
                continue;
            }
            ok = !labelled && s->depth == 1 && !(*defined & bit) && sp_same(s->ops[0], w);
            if (ok && r == 0) {
                const vvar *x = is_def(s, "mov.u64", 2) ? v_find_var(v, s->ops[1], fidx) : NULL;
                ok = x && x->func == fidx && x->space == 'l' && x->size > 0;
                if (ok) *frame = x;
            } else if (ok) {
                ok = is_def(s, "add.u64", 3) && sp_eq(s->ops[1], "%agile_fr") && *frame &&
                     (*defined >> 62 & 1) && (*frame)->size >= n && v_int(s->ops[2], &k) &&
                     k >= 0 && (uint64_t)k == (*frame)->size - n;
            }
            if (!ok)
                return vfail(v, s->line, "%.*s is not set once at entry from the local frame",
                             (int)w.n, w.p);
            *defined |= bit;
        }
    }
    return AGILE_OK;
}

static int check_func(vctx *v, unsigned fidx)
{
    const vfunc *f = &v->fn[fidx];
    static const char *const regs[] = {"%agile_mask", "%agile_base", "%agile_viol"};
    const char *pe[] = {"[__agile_mask]", "[__agile_base]", "[__agile_viol]"};
    const char *pf[] = {"[__agile_fmask]", "[__agile_fbase]", "[__agile_fviol]"};
    const char *hp[] = {"__agile_mask", "__agile_base", "__agile_viol"};
    const char *hf[] = {"__agile_fmask", "__agile_fbase", "__agile_fviol"};
    bool loaded[3] = {false, false, false}, labelled = false;
    uint64_t aligned = 0; /* guard registers set at entry so far (check_*_regs) */
    const vvar *frame = NULL;
    span plist = header_params(f->header, f->name);

    for (unsigned i = f->s0; i < f->s1; i++) {
        const vst *s = &v->st[i];
        if (s->kind == VS_LABEL ||
            (s->kind == VS_INSTR && (sp_starts(s->op, "bra") || sp_starts(s->op, "brx"))))
            labelled = true;
        if (s->kind == VS_DIR) {
            static const char *const ok[] = {".reg",    ".local",         ".shared",       ".param",
                                             ".const",  ".global",        ".loc",          ".file",
                                             ".pragma", ".callprototype", ".branchtargets"};
            size_t k = 0;
            span w = {s->text.p, 0};
            while (w.n < s->text.n && is_word(s->text.p[w.n]))
                w.n++;
            while (k < sizeof(ok) / sizeof(ok[0]) && !sp_eq(w, ok[k]))
                k++;
            if (k == sizeof(ok) / sizeof(ok[0]))
                return vfail(v, s->line, "directive '%.*s' in a function body", (int)w.n, w.p);
            if (sp_eq(w, ".reg") && sp_contains(s->text, "%agile") && s->depth != 1)
                return vfail(v, s->line, "guard register declared in a nested scope");
            if (sp_eq(w, ".param") && sp_contains(s->text, "__agile") &&
                !sp_contains(s->text, "__agile_c"))
                return vfail(v, s->line, "guard parameter redeclared");
            continue;
        }
        if (s->kind != VS_INSTR) continue;
        bool guard_regs = memmem(s->text.p, s->text.n, "%agile_", 7) != NULL;
        for (unsigned r = 0; r < 3 && guard_regs; r++) {
            span reg = {regs[r], strlen(regs[r])};
            bool uses = sp_has_word(s->text, regs[r]);
            if (writes(s, reg)) {
                if (!is_def(s, "ld.param.u64", 2) || !sp_eq(s->ops[1], f->entry ? pe[r] : pf[r]) ||
                    labelled || s->depth != 1 || loaded[r] ||
                    param_index(plist, f->entry ? hp[r] : hf[r]) < 0)
                    return vfail(v, s->line,
                                 "%s is not loaded once from its hidden parameter at entry",
                                 regs[r]);
                loaded[r] = true;
            } else if (uses && !loaded[r]) {
                return vfail(v, s->line, "%s used before it is loaded", regs[r]);
            }
        }
        if (guard_regs && (check_entry_regs(v, s, &aligned, labelled, loaded[0]) != AGILE_OK ||
                           check_local_regs(v, fidx, s, &aligned, &frame, labelled) != AGILE_OK))
            return AGILE_EGUARD;
        if (root_is(s->op, "call")) {
            if (check_call(v, fidx, i) != AGILE_OK) return AGILE_EGUARD;
            continue;
        }
        if (check_mem(v, fidx, i) != AGILE_OK) return AGILE_EGUARD;
    }
    if (param_index(plist, f->entry ? hp[0] : hf[0]) < 0 ||
        param_index(plist, f->entry ? hp[1] : hf[1]) < 0)
        return vfail(v, v->st[f->s0 ? f->s0 - 1 : 0].line, "'%.*s' lacks the hidden parameters",
                     (int)f->name.n, f->name.p);
    return AGILE_OK;
}

int agile_guard_verify(const char *ptx, size_t len, const agile_guard_vopts *o, char *err,
                       size_t errcap)
{
    vctx v;
    agile_guard_vopts dflt = {0, 0, NULL, 0};
    char *clean;
    int rv = AGILE_OK;

    memset(&v, 0, sizeof(v));
    if (err && errcap) err[0] = '\0';
    /* Work on a copy with comments blanked (newlines kept), so that no statement's text
     * can carry operands from a comment. */
    clean = malloc(len + 1);
    if (clean == NULL) return AGILE_ENOMEM;
    blank_comments(ptx, len, clean);
    v.src = clean;
    v.len = len;
    v.o = o ? o : &dflt;
    v.gap = v.o->guard_gap ? v.o->guard_gap : AGILE_GUARD_DEFAULT_GAP;
    v.err = err;
    v.errcap = errcap;
    AGILE_TRY(v_lexical(&v, ptx, len));
    AGILE_TRY(scan(&v));
    for (unsigned k = 0; k < v.nst; k++)
        if (v.st[k].kind == VS_DIR && line_directive(v.st[k].text) && !v_line_form_ok(v.st[k].text))
            AGILE_TRY(vfail(&v, v.st[k].line, "lexical: malformed line directive '%.*s'",
                            (int)AGILE_MIN(v.st[k].text.n, 80u), v.st[k].text.p));
    AGILE_TRY(structure(&v));
    AGILE_TRY(v_index_vars(&v));
    for (unsigned f = 0; f < v.nfn; f++)
        if (v.fn[f].body) AGILE_TRY(check_func(&v, f));
out:
    free(clean);
    free(v.st);
    free(v.fn);
    free(v.var);
    free(v.vidx);
    if (v.failed && rv == AGILE_OK) rv = AGILE_EGUARD;
    return rv;
}
