/* rewrite.c — the guard's rewriter: fences every global/generic access of a parsed PTX
 * module, adds the hidden parameters, and rejects what it cannot bound (fail closed).
 *
 * Output is the input plus edits (insert/replace at byte offsets), so everything the guard
 * does not change is printed back byte for byte. The contract of the output is described
 * in guard.h; verify.c checks it independently.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "guard.h"
#include "ptx.h"
#include "sbuf.h"

typedef struct edit {
    uint32_t pos, del;
    size_t txt, txtlen; /* into rw.arena */
    uint32_t seq;
    /* At one offset, insertions before the statement come first, then what changes the
     * statement itself (replacements, a new guard predicate). */
    uint8_t late;
} edit;

typedef struct regdecl {
    uint32_t off, len; /* name (prefix for %r<N>) in the source */
    uint32_t count;    /* 0: a single register */
    uint8_t size;      /* bytes; 0 unknown (vector or .pred) */
    bool pred;
} regdecl;

/* Site kinds reported per function, in report order. */
static const char *const kinds[] = {
    "ld",       "st",      "ldu",           "atom",     "red",      "cp.async",  "cp.async.bulk",
    "prefetch", "discard", "applypriority", "mbarrier", "st.async", "red.async", "ldmatrix",
    "stmatrix"};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

typedef struct rw {
    ptx_module m;
    const agile_guard_opts *o;
    const char *file;
    uint64_t gap;
    agile_guard_sbuf arena;
    edit *ed;
    uint32_t ned, caped;
    agile_guard_sbuf rep; /* per-function report entries */
    unsigned site;        /* next site id of the module */
    unsigned nentry;
    /* current function */
    const ptx_func *f;
    unsigned fsite; /* per-function register index */
    unsigned kidx;  /* kernel index (entries) */
    unsigned counts[NKINDS];
    agile_guard_sbuf fsites; /* JSON site list of the current function */
    regdecl *regs;
    uint32_t nregs, capregs;
    /* Hash index of regs by name (single registers) or prefix (%r<N>): slot = index + 1,
     * 0 empty; rtabcap a power of two >= 2 * nregs. */
    uint32_t *rtab;
    uint32_t rtabcap;
    /* The same for m.vars by name, built once per module. */
    uint32_t *vtab;
    uint32_t vtabcap;
    bool bulk;
    uint64_t aligns; /* alignments (bits) whose fence mask register the function needs */
    /* Functions take the violation-record parameters: strict mode, or a module that calls
     * __assertfail (its asserts report through the record). */
    bool rec;
    uint64_t slims; /* widths (bits) whose shared-memory limit register the function needs */
    bool generic;   /* the function has generic accesses (their shared-side registers) */
    bool scrub;     /* entries zero the CTA's shared memory first (the module can read it) */
    /* per function: its one sized .local variable (the frame), PTX_NONE if none, or
     * PTX_NONE - 1 if several */
    uint32_t *frame;
    uint64_t llims; /* widths (bits) whose local-frame limit register the function needs */
    uint32_t frame_end; /* byte offset just past the frame's declaration; 0: not usable */
    unsigned frame_w;   /* widest store that zeroes the frame aligned */
    /* rejection */
    uint32_t err_line;
    uint32_t err_func; /* name token of the function it is in, or PTX_NONE */
    char err[256];
} rw;

static int reject(rw *r, uint32_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int reject(rw *r, uint32_t line, const char *fmt, ...)
{
    va_list ap;
    if (r->err[0] == '\0') {
        r->err_line = line;
        r->err_func = r->f ? r->f->name : PTX_NONE;
        va_start(ap, fmt);
        vsnprintf(r->err, sizeof(r->err), fmt, ap);
        va_end(ap);
    }
    return AGILE_EREJECT;
}

#define TOK(t) (r->m.toks[(t)])
#define TSTR(t) (r->m.src + r->m.toks[(t)].off)
#define TLEN(t) ((int)r->m.toks[(t)].len)

static int add_edit(rw *r, uint32_t pos, uint32_t del, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Queue "replace del bytes at pos by the formatted text". */
static int add_edit(rw *r, uint32_t pos, uint32_t del, const char *fmt, ...)
{
    va_list ap;
    size_t at = r->arena.n;
    char small[512];
    int k;

    if (r->ned == r->caped) {
        uint32_t nc = r->caped ? r->caped * 2 : 256;
        edit *ne = realloc(r->ed, (size_t)nc * sizeof(edit));
        if (ne == NULL) return AGILE_ENOMEM;
        r->ed = ne;
        r->caped = nc;
    }
    va_start(ap, fmt);
    k = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (k < 0) return AGILE_EINTERNAL;
    if ((size_t)k < sizeof(small)) {
        agile_guard_sb_add(&r->arena, small, (size_t)k);
    } else {
        char *big = malloc((size_t)k + 1);
        if (big == NULL) return AGILE_ENOMEM;
        va_start(ap, fmt);
        vsnprintf(big, (size_t)k + 1, fmt, ap);
        va_end(ap);
        agile_guard_sb_add(&r->arena, big, (size_t)k);
        free(big);
    }
    if (r->arena.oom) return AGILE_ENOMEM;
    r->ed[r->ned] = (edit){pos, del, at, (size_t)k, r->ned, del > 0};
    r->ned++;
    return AGILE_OK;
}

/* ---- opcode model ---------------------------------------------------------------------- */

typedef enum { CL_NONE, CL_ONE, CL_PER_OPND, CL_BULK, CL_CALL, CL_IGNORE, CL_REJECT } op_class;

#define MAXPARTS 24
typedef struct opparts {
    const char *p[MAXPARTS];
    uint8_t n[MAXPARTS];
    unsigned np;
} opparts;

static void split_op(const char *s, size_t len, opparts *o)
{
    size_t i = 0, st = 0;
    o->np = 0;
    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (o->np < MAXPARTS) {
                o->p[o->np] = s + st;
                o->n[o->np] = (uint8_t)AGILE_MIN(i - st, 255);
                o->np++;
            }
            st = i + 1;
        }
    }
}

static bool part_is(const opparts *o, unsigned i, const char *s)
{
    size_t n = strlen(s);
    return i < o->np && o->n[i] == n && memcmp(o->p[i], s, n) == 0;
}

static bool part_has_prefix(const opparts *o, unsigned i, const char *s)
{
    size_t n = strlen(s);
    return i < o->np && o->n[i] >= n && memcmp(o->p[i], s, n) == 0;
}

static bool any_part(const opparts *o, const char *s)
{
    for (unsigned i = 1; i < o->np; i++)
        if (part_is(o, i, s)) return true;
    return false;
}

static ptx_space part_space(const opparts *o, unsigned i)
{
    if (part_is(o, i, "global")) return PTX_SPACE_GLOBAL;
    if (part_is(o, i, "shared") || part_has_prefix(o, i, "shared::")) return PTX_SPACE_SHARED;
    if (part_is(o, i, "local")) return PTX_SPACE_LOCAL;
    if (part_is(o, i, "const")) return PTX_SPACE_CONST;
    if (part_is(o, i, "param") || part_has_prefix(o, i, "param::")) return PTX_SPACE_PARAM;
    return PTX_SPACE_NONE;
}

/* Bytes one access of this opcode touches: vector count times element size; 0 when the
 * type is not recognised. */
static uint64_t op_width(const opparts *o)
{
    uint64_t vec = 1, size = 0;
    for (unsigned i = 1; i < o->np; i++) {
        if (part_is(o, i, "v2"))
            vec = 2;
        else if (part_is(o, i, "v4"))
            vec = 4;
        else if (part_is(o, i, "v8"))
            vec = 8;
        if (o->n[i] && o->p[i][0] != '.') {
            uint32_t s = agile_guard_type_size(o->p[i], o->n[i], true);
            if (s) size = s;
        }
    }
    return vec * size;
}

static bool tok_int(const rw *r, uint32_t t, int64_t *v);

/* Alignment (bytes, a power of two) the hardware requires of the address of one access of
 * kind through its global/generic operand, or 0 when it cannot be told. A misaligned
 * address faults (a sticky context error), so every fence clears these low bits. */
static uint64_t op_align(const rw *r, const ptx_stmt *s, const opparts *o, const char *kind)
{
    uint64_t w;
    if (strcmp(kind, "prefetch") == 0) return 1; /* a hint: never faults */
    if (strcmp(kind, "discard") == 0 || strcmp(kind, "applypriority") == 0) return 128;
    if (strcmp(kind, "mbarrier") == 0) return 8;
    if (strcmp(kind, "ldmatrix") == 0 || strcmp(kind, "stmatrix") == 0) return 16;
    if (strcmp(kind, "cp.async.bulk") == 0) return 16;
    if (strcmp(kind, "cp.async") == 0) {
        /* cp.async [dst], [src], cp-size[, src-size][, policy]: cp-size is 4, 8 or 16 */
        for (uint32_t k = 0; k < s->nopnd; k++) {
            const ptx_opnd *op = &r->m.opnds[s->opnd0 + k];
            int64_t v;
            if (agile_guard_tok_punct(&r->m, op->t0, '[')) continue;
            if (op->t1 != op->t0 + 1 || !tok_int(r, op->t0, &v) || (v != 4 && v != 8 && v != 16))
                return 0;
            return (uint64_t)v;
        }
        return 0;
    }
    w = op_width(o);
    return (w & (w - 1)) == 0 ? w : 0;
}

static bool opnd_is_bracket(const rw *r, const ptx_opnd *op)
{
    return agile_guard_tok_punct(&r->m, op->t0, '[');
}

/* Instructions that raise a fault (a sticky error for the whole shared context) by
 * design, or whose misuse does and that the guard cannot make safe: the reason, or NULL.
 * Texture/surface instructions (incl. the .trap clamp mode) are refused below as handles. */
static const char *faulting(const opparts *o)
{
    if (part_is(o, 0, "brkpt")) return "brkpt raises a fault outside a debugger";
    /* a bare "trap;" is replaced by a report before this; any other form would fault */
    if (part_is(o, 0, "trap")) return "trap with operands or suffixes raises a fault";
    if (part_is(o, 0, "setmaxnreg"))
        return "setmaxnreg faults unless every warp of the warpgroup agrees";
    if (part_is(o, 0, "alloca") || part_is(o, 0, "stackrestore") || part_is(o, 0, "stacksave"))
        return "dynamic stack allocation cannot be bounded by the guard";
    if (part_is(o, 0, "tcgen05"))
        return "tensor-memory (tcgen05) access cannot be bounded by the guard";
    return NULL;
}

static op_class classify(const rw *r, const ptx_stmt *s, const opparts *o, const char **kind,
                         const char **why)
{
    bool brackets = false;
    for (uint32_t i = 0; i < s->nopnd; i++)
        if (opnd_is_bracket(r, &r->m.opnds[s->opnd0 + i])) brackets = true;
    *kind = NULL;
    *why = NULL;
    if (part_is(o, 0, "call")) return CL_CALL;
    if ((*why = faulting(o)) != NULL) return CL_REJECT;
    if (!brackets) return CL_NONE;
    if (part_is(o, 0, "tensormap") || any_part(o, "tensormap") || any_part(o, "tensor")) {
        *why = "TMA / tensor-map access cannot be bounded by the guard";
        return CL_REJECT;
    }
    if (part_is(o, 0, "multimem")) {
        *why = "multimem access cannot be bounded by the guard";
        return CL_REJECT;
    }
    if (part_is(o, 0, "tex") || part_is(o, 0, "tld4") || part_is(o, 0, "suld") ||
        part_is(o, 0, "sust") || part_is(o, 0, "sured") || part_is(o, 0, "suq") ||
        part_is(o, 0, "txq")) {
        *why = "texture/surface access through a handle cannot be bounded by the guard";
        return CL_REJECT;
    }
    if (part_is(o, 0, "createpolicy"))
        return CL_IGNORE; /* builds a cache policy; the address is not accessed */
    if (part_is(o, 0, "ld") || part_is(o, 0, "st") || part_is(o, 0, "red")) {
        bool async = part_is(o, 1, "async");
        if (part_is(o, 0, "ld"))
            *kind = "ld";
        else if (part_is(o, 0, "st"))
            *kind = async ? "st.async" : "st";
        else
            *kind = async ? "red.async" : "red";
        return CL_ONE;
    }
    if (part_is(o, 0, "ldu") || part_is(o, 0, "atom") || part_is(o, 0, "discard") ||
        part_is(o, 0, "applypriority") || part_is(o, 0, "mbarrier") || part_is(o, 0, "ldmatrix") ||
        part_is(o, 0, "stmatrix")) {
        for (size_t k = 0; k < NKINDS; k++)
            if (part_is(o, 0, kinds[k])) *kind = kinds[k];
        return CL_ONE;
    }
    if (part_is(o, 0, "prefetch") || part_is(o, 0, "prefetchu")) {
        *kind = "prefetch";
        return CL_ONE;
    }
    if (part_is(o, 0, "cp") && part_is(o, 1, "async")) {
        if (part_is(o, 2, "bulk")) {
            *kind = "cp.async.bulk";
            return CL_BULK;
        }
        if (part_is(o, 2, "mbarrier")) {
            *kind = "mbarrier";
            return CL_ONE;
        }
        *kind = "cp.async";
        return CL_PER_OPND;
    }
    if (part_is(o, 0, "cp") && part_is(o, 1, "reduce") && part_is(o, 2, "async") &&
        part_is(o, 3, "bulk")) {
        *kind = "cp.async.bulk";
        return CL_BULK;
    }
    *why = "memory opcode not modelled by the guard";
    return CL_REJECT;
}

/* ---- addresses ------------------------------------------------------------------------- */

typedef enum { AD_REG, AD_VAR, AD_ABS } addr_kind;
typedef struct addr {
    addr_kind kind;
    uint32_t base; /* token */
    int64_t imm;
} addr;

static bool tok_int(const rw *r, uint32_t t, int64_t *v)
{
    uint64_t u;
    if (TOK(t).kind != PTK_NUM || !agile_guard_parse_int(TSTR(t), TOK(t).len, &u) ||
        u > (uint64_t)INT64_MAX)
        return false;
    *v = (int64_t)u;
    return true;
}

static int parse_addr(rw *r, const ptx_opnd *op, addr *a)
{
    uint32_t t = op->t0 + 1, e = op->t1 - 1;
    int64_t v;
    bool neg = false;
    uint32_t line = TOK(op->t0).line;

    if (!agile_guard_tok_punct(&r->m, e, ']') || t >= e)
        return reject(r, line, "unsupported address operand");
    a->imm = 0;
    a->base = t;
    if (TOK(t).kind == PTK_NUM) {
        if (!tok_int(r, t, &v)) return reject(r, line, "unsupported absolute address");
        a->kind = AD_ABS;
        a->imm = v;
    } else if (TOK(t).kind == PTK_IDENT && TSTR(t)[0] == '%') {
        a->kind = AD_REG;
    } else if (TOK(t).kind == PTK_IDENT && TSTR(t)[0] != '.') {
        a->kind = AD_VAR;
    } else {
        return reject(r, line, "unsupported address operand");
    }
    t++;
    if (t == e) return AGILE_OK;
    /* +imm, -imm, +-imm */
    if (agile_guard_tok_punct(&r->m, t, '+')) {
        t++;
        if (agile_guard_tok_punct(&r->m, t, '-')) {
            neg = true;
            t++;
        }
    } else if (agile_guard_tok_punct(&r->m, t, '-')) {
        neg = true;
        t++;
    } else {
        return reject(r, line, "unsupported address operand");
    }
    if (t + 1 != e || !tok_int(r, t, &v)) return reject(r, line, "unsupported address offset");
    if (a->kind == AD_ABS) {
        if ((neg && a->imm < v) || (!neg && v > INT64_MAX - a->imm))
            return reject(r, line, "absolute address out of range");
        a->imm = neg ? a->imm - v : a->imm + v;
    } else {
        a->imm = neg ? -v : v;
    }
    return AGILE_OK;
}

/* FNV-1a of a register name or prefix; ranges and single registers hash apart. */
static uint32_t reg_hash(const char *s, uint32_t n, bool range)
{
    uint32_t h = range ? 2166136261u ^ 0x9e3779b9u : 2166136261u;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Index the current function's declarations (after collect_regs): lookups are then
 * O(1 + duplicates) instead of a scan of every declaration (issue 12 item 6: a 2.6 MB
 * kernel with 32k registers took seconds). */
static int index_regs(rw *r)
{
    uint32_t cap = 64;
    while (cap < 2 * r->nregs)
        cap *= 2;
    if (cap > r->rtabcap) {
        uint32_t *nt = realloc(r->rtab, cap * sizeof(uint32_t));
        if (nt == NULL) return AGILE_ENOMEM;
        r->rtab = nt;
        r->rtabcap = cap;
    }
    cap = r->rtabcap;
    memset(r->rtab, 0, cap * sizeof(uint32_t));
    for (uint32_t i = 0; i < r->nregs; i++) {
        const regdecl *d = &r->regs[i];
        uint32_t h = reg_hash(r->m.src + d->off, d->len, d->count != 0) & (cap - 1);
        /* A later declaration of the same name (or of the same range, at least as large)
         * answers every lookup the earlier one did: it takes the slot, so that repeated
         * declarations (`{ .reg .pred p; ... }` per inline asm block) keep chains short. */
        for (uint32_t e; (e = r->rtab[h]) != 0; h = (h + 1) & (cap - 1)) {
            const regdecl *o = &r->regs[e - 1];
            if (o->len == d->len && (o->count != 0) == (d->count != 0) &&
                o->count <= d->count && memcmp(r->m.src + o->off, r->m.src + d->off, d->len) == 0)
                break;
        }
        r->rtab[h] = i + 1;
    }
    return AGILE_OK;
}

/* Does declaration d name register s[0..n)? (a %r<N> range: the prefix, then a decimal
 * index below N without leading zeros: %r01 is not %r<N>) */
static bool reg_matches(const rw *r, const regdecl *d, const char *s, uint32_t n)
{
    const char *dn = r->m.src + d->off;
    uint64_t k;
    if (d->count == 0) return d->len == n && memcmp(dn, s, n) == 0;
    if (n <= d->len || memcmp(dn, s, d->len) != 0) return false;
    for (uint32_t j = d->len; j < n; j++)
        if (s[j] < '0' || s[j] > '9') return false;
    return (n - d->len == 1 || s[d->len] != '0') &&
           agile_guard_parse_int(s + d->len, n - d->len, &k) && k < d->count;
}

/* The declaration of register token t; of several, the last one (as PTX scoping has it
 * for the innermost), or NULL. Candidates: the name itself, and each prefix of it that
 * leaves only digits (%r<N> for %r12 may be "%r" or "%r1"). */
static const regdecl *find_reg(const rw *r, uint32_t t)
{
    const char *s = TSTR(t);
    uint32_t n = TOK(t).len, best = 0, cap = r->rtabcap, p = n;
    if (r->nregs == 0 || cap == 0) return NULL;
    for (;;) {
        bool range = p < n;
        uint32_t h = reg_hash(s, p, range) & (cap - 1);
        for (uint32_t e; (e = r->rtab[h]) != 0; h = (h + 1) & (cap - 1)) {
            const regdecl *d = &r->regs[e - 1];
            if (e > best && d->len == p && (d->count != 0) == range && reg_matches(r, d, s, n))
                best = e;
        }
        if (p == 0 || s[p - 1] < '0' || s[p - 1] > '9') break;
        p--;
    }
    return best ? &r->regs[best - 1] : NULL;
}

static uint32_t var_hash(const rw *r, uint32_t name, uint32_t func)
{
    return (reg_hash(TSTR(name), TOK(name).len, false) ^ (func * 0x9e3779b1u)) & (r->vtabcap - 1);
}

static bool same_name(const rw *r, uint32_t a, uint32_t b)
{
    return TOK(a).len == TOK(b).len && memcmp(TSTR(a), TSTR(b), TOK(a).len) == 0;
}

/* Index the module's variables by (name, function), after parsing: one slot per key, the
 * declaration find_var must return for it (a function's first, the module's last). */
static int index_vars(rw *r)
{
    uint32_t cap = 64;
    while (cap < 2 * r->m.nvars)
        cap *= 2;
    r->vtab = calloc(cap, sizeof(uint32_t));
    if (r->vtab == NULL) return AGILE_ENOMEM;
    r->vtabcap = cap;
    for (uint32_t i = 0; i < r->m.nvars; i++) {
        const ptx_var *v = &r->m.vars[i];
        uint32_t h = var_hash(r, v->name, v->func), e;
        for (; (e = r->vtab[h]) != 0; h = (h + 1) & (cap - 1))
            if (r->m.vars[e - 1].func == v->func && same_name(r, r->m.vars[e - 1].name, v->name))
                break;
        if (e == 0 || v->func == PTX_NONE) r->vtab[h] = i + 1;
    }
    return AGILE_OK;
}

static const ptx_var *var_in(const rw *r, uint32_t name, uint32_t func)
{
    for (uint32_t h = var_hash(r, name, func), e; (e = r->vtab[h]) != 0;
         h = (h + 1) & (r->vtabcap - 1))
        if (r->m.vars[e - 1].func == func && same_name(r, r->m.vars[e - 1].name, name))
            return &r->m.vars[e - 1];
    return NULL;
}

/* The variable a name token refers to in function fidx: its own declaration shadows the
 * module's, or NULL. */
static const ptx_var *find_var(const rw *r, uint32_t name, uint32_t fidx)
{
    const ptx_var *v;
    if (r->vtabcap == 0) return NULL;
    v = var_in(r, name, fidx);
    return v ? v : var_in(r, name, PTX_NONE);
}

/* .reg declarations of the current function, for register widths. */
static int collect_regs(rw *r, const ptx_stmt *s)
{
    uint32_t t = s->op + 1;
    uint8_t size = 0;
    bool pred = false, vec = false;
    for (; t < s->t1 && TOK(t).kind == PTK_IDENT && TSTR(t)[0] == '.'; t++) {
        const char *x = TSTR(t);
        uint32_t n = TOK(t).len;
        if (n >= 2 && x[1] == 'v' && x[2] >= '0' && x[2] <= '9')
            vec = true;
        else if (agile_guard_tok_eq(&r->m, t, ".pred"))
            pred = true;
        else if (n >= 3 && (x[1] == 'b' || x[1] == 'u' || x[1] == 's' || x[1] == 'f')) {
            uint64_t bits;
            uint32_t k = 2;
            if (x[1] == 'b' && n > 3 && x[2] == 'f') k = 3; /* .bf16 */
            if (agile_guard_parse_int(x + k, n - k, &bits) && bits >= 8 && bits <= 128)
                size = (uint8_t)(bits / 8);
        }
    }
    while (t < s->t1) {
        regdecl d = {0, 0, 0, vec ? 0 : size, pred};
        if (TOK(t).kind != PTK_IDENT) break;
        d.off = TOK(t).off;
        d.len = TOK(t).len;
        t++;
        if (agile_guard_tok_punct(&r->m, t, '<')) {
            uint64_t c;
            if (t + 2 >= s->t1 || !agile_guard_parse_int(TSTR(t + 1), TOK(t + 1).len, &c) ||
                !agile_guard_tok_punct(&r->m, t + 2, '>') || c > UINT32_MAX)
                return reject(r, TOK(s->op).line, "bad .reg declaration");
            d.count = (uint32_t)c;
            t += 3;
        }
        if (r->nregs == r->capregs) {
            uint32_t nc = r->capregs ? r->capregs * 2 : 32;
            regdecl *nr = realloc(r->regs, nc * sizeof(regdecl));
            if (nr == NULL) return AGILE_ENOMEM;
            r->regs = nr;
            r->capregs = nc;
        }
        r->regs[r->nregs++] = d;
        if (!agile_guard_tok_punct(&r->m, t, ',')) break;
        t++;
    }
    return AGILE_OK;
}

/* ---- fencing --------------------------------------------------------------------------- */

static int count_site(rw *r, const char *kind, ptx_space sp, uint32_t line)
{
    for (size_t k = 0; k < NKINDS; k++)
        if (strcmp(kinds[k], kind) == 0) r->counts[k]++;
    agile_guard_sb_printf(&r->fsites,
                          "%s{\"id\": %u, \"line\": %u, \"kind\": \"%s\", \"space\": \"%s\"}",
                          r->fsites.n ? ", " : "", r->site, line, kind,
                          sp == PTX_SPACE_GLOBAL ? "global" : "generic");
    r->site++;
    return r->fsites.oom ? AGILE_ENOMEM : AGILE_OK;
}

/* Zero the destination registers of a skipped load/atomic (strict mode). */
static int zero_dsts(rw *r, const ptx_stmt *s, unsigned i, uint32_t at)
{
    const ptx_opnd *d = &r->m.opnds[s->opnd0];
    int rv = AGILE_OK;
    if (s->nopnd == 0 || opnd_is_bracket(r, d)) return AGILE_OK;
    for (uint32_t t = d->t0; t < d->t1; t++) {
        const regdecl *rd;
        if (TOK(t).kind != PTK_IDENT || TSTR(t)[0] == '.') continue;
        if (agile_guard_tok_eq(&r->m, t, "_")) continue;
        rd = find_reg(r, t);
        if (rd == NULL || (!rd->pred && rd->size == 0))
            return reject(r, TOK(t).line, "strict mode: cannot tell the width of '%.*s'", TLEN(t),
                          TSTR(t));
        if (rd->pred)
            AGILE_TRY(add_edit(r, at, 0, "\n\t@%%agile_v%u setp.ne.u32 %.*s, 0, 0;", i, TLEN(t),
                               TSTR(t)));
        else
            AGILE_TRY(add_edit(r, at, 0, "\n\t@%%agile_v%u mov.b%u %.*s, 0;", i, rd->size * 8u,
                               TLEN(t), TSTR(t)));
    }
out:
    return rv;
}

/* Does the module's .version allow %aggr_smem_size (PTX ISA 8.1)? */
static bool has_aggr_smem(const rw *r)
{
    uint32_t t = r->m.version_tok;
    uint64_t maj = 0, min = 0;
    const char *p, *dot;
    if (t == PTX_NONE) return false;
    p = TSTR(t);
    dot = memchr(p, '.', TOK(t).len);
    if (dot == NULL || !agile_guard_parse_int(p, (size_t)(dot - p), &maj) ||
        !agile_guard_parse_int(dot + 1, TOK(t).len - (size_t)(dot + 1 - p), &min))
        return false;
    return maj > 8 || (maj == 8 && min >= 1);
}

/* The clamp shared by confine_shared and confine_local: reg = min(src [+ imm], bound_W) & -W,
 * then the operand becomes [reg]. 32-bit for shared (%agile_uN, %agile_lW), 64-bit for local
 * (%agile_oN, %agile_hW). */
typedef struct {
    char reg, bound;              /* %agile_<reg>N, %agile_<bound>W */
    const char *add, *min, *and_; /* the instructions at that width */
} clamp_form;

static const clamp_form SHARED_CLAMP = {'u', 'l', "add.u32", "min.u32", "and.b32"};
static const clamp_form LOCAL_CLAMP = {'o', 'h', "add.s64", "min.u64", "and.b64"};

static int emit_clamp(rw *r, uint32_t at, const ptx_opnd *op, unsigned i, const char *src,
                      int64_t imm, uint64_t w, const clamp_form *f)
{
    int rv = AGILE_OK;
    char sum[48];
    if (imm != 0) {
        AGILE_TRY(add_edit(r, at, 0, "%s %%agile_%c%u, %s, %" PRId64 ";\n\t", f->add, f->reg, i,
                           src, imm));
        snprintf(sum, sizeof(sum), "%%agile_%c%u", f->reg, i);
        src = sum;
    }
    AGILE_TRY(add_edit(r, at, 0,
                       "%s %%agile_%c%u, %s, %%agile_%c%" PRIu64 ";\n\t"
                       "%s %%agile_%c%u, %%agile_%c%u, -%" PRIu64 ";\n\t",
                       f->min, f->reg, i, src, f->bound, w, f->and_, f->reg, i, f->reg, i, w));
    AGILE_TRY(add_edit(r, TOK(op->t0).off, TOK(op->t1 - 1).off + 1 - TOK(op->t0).off,
                       "[%%agile_%c%u]", f->reg, i));
out:
    return rv;
}

/* Confine one explicit .shared (CTA) address to the CTA's shared allocation, aligned to
 * the access width W: addresses past it fault. The allocation is [0, %aggr_smem_size)
 * (static + dynamic + reserved, read at entry into %agile_sh; %agile_lW = it - W):
 *     [cvt.u32.u64 u, a; | mov.u32 u, var;]  [add.u32 u, u, imm;]
 *     min.u32 u, u|a, %agile_lW;  and.b32 u, u, -W;  ... [u]
 * A sized shared variable named with an aligned offset inside it is left as it is. */
static int confine_shared(rw *r, const ptx_stmt *s, const ptx_opnd *op, const opparts *o,
                          const char *kind)
{
    addr a = {AD_REG, 0, 0};
    uint32_t line = TOK(op->t0).line, at = TOK(s->t0).off;
    uint64_t w = op_align(r, s, o, kind);
    char src[48];
    unsigned i;
    int rv = AGILE_OK;

    AGILE_TRY(parse_addr(r, op, &a));
    if (w == 0)
        return reject(r, line, "cannot tell the access width of '%.*s'", TLEN(s->op), TSTR(s->op));
    if (a.kind == AD_VAR) {
        const ptx_var *v = find_var(r, a.base, (uint32_t)(r->f - r->m.funcs));
        if (v == NULL || v->space != PTX_SPACE_SHARED)
            return reject(r, line, "shared access to '%.*s', which is not a .shared variable",
                          TLEN(a.base), TSTR(a.base));
        if (v->size > 0 && a.imm >= 0 && (uint64_t)a.imm % w == 0 && (uint64_t)a.imm <= v->size &&
            w <= v->size - (uint64_t)a.imm)
            return AGILE_OK; /* inside a sized variable */
    }
    if (a.imm < INT32_MIN || a.imm > INT32_MAX || (a.kind == AD_ABS && a.imm < 0))
        return reject(r, line, "shared address offset out of range");
    if (!has_aggr_smem(r))
        return reject(r, line, "shared accesses through addresses need .version 8.1 or later "
                               "(the guard bounds them by %%aggr_smem_size)");
    i = r->fsite++;
    if (a.kind == AD_REG) {
        const regdecl *d = find_reg(r, a.base);
        if (d == NULL || (d->size != 4 && d->size != 8))
            return reject(r, line, "shared address register '%.*s' is not a declared 32/64-bit "
                                   "register", TLEN(a.base), TSTR(a.base));
        if (d->size == 8)
            AGILE_TRY(add_edit(r, at, 0, "cvt.u32.u64 %%agile_u%u, %.*s;\n\t", i, TLEN(a.base),
                               TSTR(a.base)));
        if (d->size == 8)
            snprintf(src, sizeof(src), "%%agile_u%u", i);
        else
            snprintf(src, sizeof(src), "%.*s", TLEN(a.base), TSTR(a.base));
    } else if (a.kind == AD_VAR) {
        AGILE_TRY(add_edit(r, at, 0, "mov.u32 %%agile_u%u, %.*s;\n\t", i, TLEN(a.base),
                           TSTR(a.base)));
        snprintf(src, sizeof(src), "%%agile_u%u", i);
    } else {
        AGILE_TRY(add_edit(r, at, 0, "mov.u32 %%agile_u%u, %" PRId64 ";\n\t", i, a.imm));
        snprintf(src, sizeof(src), "%%agile_u%u", i);
        a.imm = 0;
    }
    AGILE_TRY(emit_clamp(r, at, op, i, src, a.imm, w, &SHARED_CLAMP));
    r->slims |= w;
out:
    return rv;
}

/* The .local frame of each function: its one sized .local variable (nvcc's depot). */
static int find_frames(rw *r)
{
    r->frame = malloc((size_t)AGILE_MAX(r->m.nfuncs, 1u) * sizeof(uint32_t));
    if (r->frame == NULL) return AGILE_ENOMEM;
    for (uint32_t i = 0; i < r->m.nfuncs; i++)
        r->frame[i] = PTX_NONE;
    for (uint32_t i = 0; i < r->m.nvars; i++) {
        const ptx_var *v = &r->m.vars[i];
        if (v->func == PTX_NONE || v->func >= r->m.nfuncs || v->space != PTX_SPACE_LOCAL) continue;
        r->frame[v->func] = r->frame[v->func] == PTX_NONE && v->size > 0 ? i : PTX_NONE - 1;
    }
    return AGILE_OK;
}

/* Where the frame's bounds can be set: just past its declaration, when that is at the
 * top level of the body ahead of any instruction or label (the verifier wants them set
 * once, in straight-line code from the entry; the shared-memory scrub follows them, still
 * ahead of any tenant instruction). */
static void frame_decl(rw *r, const ptx_func *f)
{
    uint32_t fv = r->frame[f - r->m.funcs];
    if (fv >= PTX_NONE - 1) return;
    for (uint32_t i = f->st0; i < f->st1; i++) {
        const ptx_stmt *s = &r->m.st[i];
        if (s->kind == PST_LABEL || s->kind == PST_INSTR) return;
        if (s->kind == PST_DIR && s->t0 <= r->m.vars[fv].name && r->m.vars[fv].name < s->t1) {
            uint64_t al = 1, size = r->m.vars[fv].size;
            if (s->depth != 1) return;
            r->frame_end = s->end;
            for (uint32_t t = s->op + 1; t + 1 < s->t1; t++)
                if (agile_guard_tok_eq(&r->m, t, ".align") &&
                    !agile_guard_parse_int(TSTR(t + 1), TOK(t + 1).len, &al))
                    al = 1;
            /* the widest store that keeps inside the frame when zeroing it */
            r->frame_w = 16;
            while (r->frame_w > 1 && (al % r->frame_w != 0 || size % r->frame_w != 0))
                r->frame_w >>= 1;
            return;
        }
    }
}

/* Zero the frame at function entry, before any tenant instruction (issue 12.8: local
 * memory holds what another tenant's kernel left there), with the widest aligned store,
 * through the same clamp as every local access. */
static int zero_frame(rw *r, const ptx_var *fv)
{
    const char *ty = r->frame_w == 16 ? "v4.b32"
                     : r->frame_w == 8 ? "b64"
                     : r->frame_w == 4 ? "b32"
                     : r->frame_w == 2 ? "b16"
                                       : "b8";
    const char *val = r->frame_w == 16 ? "{%agile_fv, %agile_fv, %agile_fv, %agile_fv}" : "0";
    return add_edit(r, r->frame_end, 0,
                    "\n\t// agile guard: zero the frame (another kernel's data)"
                    "\n\t.reg .b64 %%agile_fz, %%agile_fe, %%agile_fw;\n\t.reg .pred %%agile_fp;"
                    "%s\n\tmov.u64 %%agile_fz, %%agile_fr;"
                    "\n\tadd.u64 %%agile_fe, %%agile_fr, %" PRIu64 ";"
                    "\n__agile_fl:\n\tsetp.ge.u64 %%agile_fp, %%agile_fz, %%agile_fe;"
                    "\n\t@%%agile_fp bra __agile_fd;"
                    "\n\tmin.u64 %%agile_fw, %%agile_fz, %%agile_h%u;"
                    "\n\tand.b64 %%agile_fw, %%agile_fw, -%u;"
                    "\n\tst.local.%s [%%agile_fw], %s;"
                    "\n\tadd.u64 %%agile_fz, %%agile_fz, %u;\n\tbra __agile_fl;\n__agile_fd:",
                    r->frame_w == 16 ? "\n\t.reg .b32 %agile_fv;\n\tmov.b32 %agile_fv, 0;" : "",
                    fv->size, r->frame_w, r->frame_w, ty, val, r->frame_w);
}

/* Confine one explicit .local address below the end of the function's frame, aligned to
 * the access width W: past the thread's local allocation an access faults. The frame is
 * the function's one sized .local variable F (nvcc's __local_depot); below it lie the
 * thread's outer frames, inside its allocation. %agile_fr = F and %agile_hW = F + size - W
 * are set at entry:
 *     [cvt.u64.u32 o, a;]  [add.s64 o, o|a, imm;]  min.u64 o, o|a, %agile_hW;  and.b64 o, o, -W
 * A sized .local variable named with an aligned offset inside it is left as it is; a
 * function with no or several .local variables cannot bound an address: refused. */
static int confine_local(rw *r, const ptx_stmt *s, const ptx_opnd *op, const opparts *o,
                         const char *kind)
{
    addr a = {AD_REG, 0, 0};
    uint32_t line = TOK(op->t0).line, at = TOK(s->t0).off, fi = (uint32_t)(r->f - r->m.funcs);
    uint64_t w = op_align(r, s, o, kind);
    const ptx_var *fv;
    char src[48];
    unsigned i;
    int rv = AGILE_OK;

    AGILE_TRY(parse_addr(r, op, &a));
    if (w == 0)
        return reject(r, line, "cannot tell the access width of '%.*s'", TLEN(s->op), TSTR(s->op));
    if (a.kind == AD_VAR) {
        const ptx_var *v = find_var(r, a.base, fi);
        if (v != NULL && v->space == PTX_SPACE_LOCAL && v->size > 0 && a.imm >= 0 &&
            (uint64_t)a.imm % w == 0 && (uint64_t)a.imm <= v->size && w <= v->size - (uint64_t)a.imm)
            return AGILE_OK; /* inside a sized variable */
    }
    fv = r->frame[fi] < PTX_NONE - 1 && r->m.vars ? &r->m.vars[r->frame[fi]] : NULL;
    if (fv == NULL)
        return reject(r, line, "local access through an address in a function without exactly "
                               "one sized .local variable: cannot bound it");
    if (r->frame_end == 0 || TOK(s->t0).off < r->frame_end)
        return reject(r, line, "local access through an address, but the frame '%.*s' is not "
                               "declared at the top of the body ahead of any instruction",
                      TLEN(fv->name), TSTR(fv->name));
    if (a.kind == AD_ABS || (a.kind == AD_VAR && find_var(r, a.base, fi) != fv) ||
        fv->size < w || a.imm < INT32_MIN || a.imm > INT32_MAX)
        return reject(r, line, "local access outside the frame '%.*s'", TLEN(fv->name),
                      TSTR(fv->name));
    i = r->fsite++;
    if (a.kind == AD_VAR) {
        AGILE_TRY(add_edit(r, at, 0, "mov.u64 %%agile_o%u, %.*s;\n\t", i, TLEN(a.base),
                           TSTR(a.base)));
        snprintf(src, sizeof(src), "%%agile_o%u", i);
    } else {
        const regdecl *d = find_reg(r, a.base);
        if (d == NULL || (d->size != 4 && d->size != 8))
            return reject(r, line, "local address register '%.*s' is not a declared 32/64-bit "
                                   "register", TLEN(a.base), TSTR(a.base));
        if (d->size == 4) {
            AGILE_TRY(add_edit(r, at, 0, "cvt.u64.u32 %%agile_o%u, %.*s;\n\t", i, TLEN(a.base),
                               TSTR(a.base)));
            snprintf(src, sizeof(src), "%%agile_o%u", i);
        } else {
            snprintf(src, sizeof(src), "%.*s", TLEN(a.base), TSTR(a.base));
        }
    }
    AGILE_TRY(emit_clamp(r, at, op, i, src, a.imm, w, &LOCAL_CLAMP));
    r->llims |= w;
out:
    return rv;
}

/* An mbarrier object must be in shared memory and 8-byte aligned (else the access
 * faults). A generic address is aligned and the instruction runs only where it is shared:
 *     and.b64 g, a, -8;  isspacep.shared p, g;  [@!guard setp.ne.u32 p, 0, 0;]  @p ... [g]
 * Its results are undefined when skipped (as they are for such an address anyway). */
static int generic_mbarrier(rw *r, const ptx_stmt *s, const ptx_opnd *op, const addr *a,
                            ptx_space sp)
{
    uint32_t line = TOK(op->t0).line, at = TOK(s->t0).off;
    unsigned i;
    int rv = AGILE_OK;
    if (a->kind == AD_VAR) {
        const ptx_var *v = find_var(r, a->base, (uint32_t)(r->f - r->m.funcs));
        if (sp == PTX_SPACE_NONE && v != NULL && v->space == PTX_SPACE_SHARED && a->imm >= 0 &&
            a->imm % 8 == 0 && (v->size == 0 || (uint64_t)a->imm + 8 <= v->size))
            return AGILE_OK; /* a shared variable, named */
    }
    if (sp != PTX_SPACE_NONE || a->kind != AD_REG)
        return reject(r, line, "'%.*s': an mbarrier object outside .shared memory faults",
                      TLEN(s->op), TSTR(s->op));
    i = r->fsite++;
    if (a->imm != 0)
        AGILE_TRY(add_edit(r, at, 0, "add.s64 %%agile_x%u, %.*s, %" PRId64 ";\n\t"
                           "and.b64 %%agile_g%u, %%agile_x%u, -8;\n\t", i, TLEN(a->base),
                           TSTR(a->base), a->imm, i, i));
    else
        AGILE_TRY(add_edit(r, at, 0, "and.b64 %%agile_g%u, %.*s, -8;\n\t", i, TLEN(a->base),
                           TSTR(a->base)));
    AGILE_TRY(add_edit(r, at, 0, "isspacep.shared %%agile_p%u, %%agile_g%u;\n\t", i, i));
    if (s->pred != PTX_NONE) {
        AGILE_TRY(add_edit(r, at, 0, "@%s%.*s setp.ne.u32 %%agile_p%u, 0, 0;\n\t",
                           s->pred_neg ? "" : "!", TLEN(s->pred), TSTR(s->pred), i));
        AGILE_TRY(add_edit(r, TOK(s->t0).off, TOK(s->pred).off + TOK(s->pred).len - TOK(s->t0).off,
                           "@%%agile_p%u", i));
    } else {
        AGILE_TRY(add_edit(r, TOK(s->op).off, 0, "@%%agile_p%u ", i));
        r->ed[r->ned - 1].late = 1;
    }
    AGILE_TRY(add_edit(r, TOK(op->t0).off, TOK(op->t1 - 1).off + 1 - TOK(op->t0).off,
                       "[%%agile_g%u]", i));
out:
    return rv;
}

/* Fence one address operand of s. nfenced counts operands fenced so far in s. */
static int fence_opnd(rw *r, const ptx_stmt *s, const ptx_opnd *op, ptx_space sp, const char *kind,
                      const opparts *o, bool bulk, unsigned *nfenced)
{
    addr a = {AD_REG, 0, 0};
    int rv = AGILE_OK;
    uint32_t line = TOK(op->t0).line;
    uint32_t at = TOK(s->t0).off; /* insertion point: before the statement (after labels) */
    unsigned i;
    char x[48], m[48], g[48];
    int64_t keep = 0;
    bool strict = r->o->strict;
    uint64_t al;

    if (sp != PTX_SPACE_GLOBAL && sp != PTX_SPACE_NONE)
        return AGILE_OK; /* explicit .shared/.local/.param/.const: not global memory */
    AGILE_TRY(parse_addr(r, op, &a));
    if (strcmp(kind, "mbarrier") == 0) return generic_mbarrier(r, s, op, &a, sp);
    if (a.kind == AD_VAR) {
        const ptx_var *v = find_var(r, a.base, (uint32_t)(r->f - r->m.funcs));
        uint64_t w = op_width(o) ? op_width(o) : 16;
        if (v == NULL)
            return reject(r, line, "address names '%.*s', which is not a variable of the module",
                          TLEN(a.base), TSTR(a.base));
        if (v->ext)
            return reject(r, line, "address names '%.*s', which is not defined in the module",
                          TLEN(a.base), TSTR(a.base));
        if (sp == PTX_SPACE_GLOBAL ? v->space != PTX_SPACE_GLOBAL
                                   : (v->space == PTX_SPACE_PARAM || v->space == PTX_SPACE_OTHER))
            return reject(r, line, "global access to '%.*s', which is not a .global variable",
                          TLEN(a.base), TSTR(a.base));
        if (bulk || a.imm < 0 || v->size == 0 || (uint64_t)a.imm > v->size ||
            w > v->size - (uint64_t)a.imm)
            return reject(r, line, "access to '%.*s%+" PRId64 "' is outside the variable",
                          TLEN(a.base), TSTR(a.base), a.imm);
        return AGILE_OK; /* the module's own variable, in bounds */
    }
    if (a.kind == AD_REG) {
        const regdecl *d = find_reg(r, a.base);
        if (d == NULL || d->size != 8)
            return reject(r, line, "address register '%.*s' is not a declared 64-bit register",
                          TLEN(a.base), TSTR(a.base));
    }
    al = op_align(r, s, o, kind);
    if (al == 0)
        return reject(r, line, "cannot tell the access width of '%.*s'", TLEN(s->op), TSTR(s->op));
    if (strict && *nfenced > 0)
        return reject(r, line, "strict mode: more than one global operand in one instruction");
    (*nfenced)++;
    i = r->fsite++;
    /* The fence's mask also clears the low bits the access width needs aligned: W-1 with
     * them cleared, an immediate or a register computed once at entry (fence_masks). */
    if (r->o->window_bits)
        snprintf(m, sizeof(m), "0x%" PRIx64,
                 (((uint64_t)1 << r->o->window_bits) - 1) & ~(al - 1));
    else if (al == 1)
        snprintf(m, sizeof(m), "%%agile_mask");
    else {
        snprintf(m, sizeof(m), "%%agile_m%" PRIu64, al);
        r->aligns |= al;
    }
    /* X: the full address the access would use, unless a small offset can stay. */
    if (a.kind == AD_ABS) {
        AGILE_TRY(add_edit(r, at, 0, "mov.u64 %%agile_x%u, %" PRId64 ";\n\t", i, a.imm));
        snprintf(x, sizeof(x), "%%agile_x%u", i);
    } else if (!strict && !bulk && sp == PTX_SPACE_GLOBAL && a.imm >= 0 &&
               (uint64_t)a.imm % al == 0 && (uint64_t)a.imm + AGILE_GUARD_ACCESS_SLACK <= r->gap) {
        keep = a.imm;
        snprintf(x, sizeof(x), "%.*s", TLEN(a.base), TSTR(a.base));
    } else if (a.imm != 0) {
        AGILE_TRY(add_edit(r, at, 0, "add.s64 %%agile_x%u, %.*s, %" PRId64 ";\n\t", i, TLEN(a.base),
                           TSTR(a.base), a.imm));
        snprintf(x, sizeof(x), "%%agile_x%u", i);
    } else if (strict) {
        /* a copy: the access may overwrite its own address register, the record needs it */
        AGILE_TRY(
            add_edit(r, at, 0, "mov.b64 %%agile_x%u, %.*s;\n\t", i, TLEN(a.base), TSTR(a.base)));
        snprintf(x, sizeof(x), "%%agile_x%u", i);
    } else {
        snprintf(x, sizeof(x), "%.*s", TLEN(a.base), TSTR(a.base));
    }
    if (sp == PTX_SPACE_GLOBAL) {
        AGILE_TRY(add_edit(
            r, at, 0,
            "and.b64 %%agile_t%u, %s, %s;\n\tor.b64 %%agile_a%u, %%agile_t%u, %%agile_base;\n\t", i,
            x, m, i, i));
    } else {
        /* the non-global side is aligned too (shared/local accesses fault when misaligned) */
        /* A generic address in the shared window is clamped into the CTA's allocation
         * like an explicit shared one (past it, it faults); others are only aligned. */
        if (!has_aggr_smem(r))
            return reject(r, line, "generic accesses need .version 8.1 or later (the guard "
                                   "bounds their shared side by %%aggr_smem_size)");
        AGILE_TRY(add_edit(r, at, 0,
                           "isspacep.global %%agile_p%u, %s;\n\tisspacep.shared %%agile_q%u, %s;"
                           "\n\tcvta.to.shared.u64 %%agile_y%u, %s;\n\tcvt.u32.u64 %%agile_u%u, "
                           "%%agile_y%u;\n\tmin.u32 %%agile_u%u, %%agile_u%u, %%agile_l%" PRIu64
                           ";\n\tand.b32 %%agile_u%u, %%agile_u%u, -%" PRIu64 ";\n\t"
                           "cvt.u64.u32 %%agile_y%u, %%agile_u%u;\n\tcvta.shared.u64 %%agile_y%u, "
                           "%%agile_y%u;\n\t",
                           i, x, i, x, i, x, i, i, i, i, al, i, i, al, i, i, i, i));
        r->slims |= al;
        r->generic = true;
        if (al > 1)
            AGILE_TRY(add_edit(r, at, 0, "and.b64 %%agile_g%u, %s, -%" PRIu64 ";\n\t"
                                         "selp.b64 %%agile_g%u, %%agile_y%u, %%agile_g%u, %%agile_q%u;"
                                         "\n\t", i, x, al, i, i, i, i));
        else
            AGILE_TRY(add_edit(r, at, 0,
                               "selp.b64 %%agile_g%u, %%agile_y%u, %s, %%agile_q%u;\n\t", i, i,
                               x, i));
        snprintf(g, sizeof(g), "%%agile_g%u", i);
        AGILE_TRY(add_edit(r, at, 0,
                           "and.b64 %%agile_t%u, %s, %s;\n\t"
                           "or.b64 %%agile_t%u, %%agile_t%u, %%agile_base;\n\t"
                           "selp.b64 %%agile_a%u, %%agile_t%u, %s, %%agile_p%u;\n\t",
                           i, x, m, i, i, i, i, g, i));
    }
    if (keep > 0)
        AGILE_TRY(add_edit(r, TOK(op->t0).off, TOK(op->t1 - 1).off + 1 - TOK(op->t0).off,
                           "[%%agile_a%u+%" PRId64 "]", i, keep));
    else
        AGILE_TRY(add_edit(r, TOK(op->t0).off, TOK(op->t1 - 1).off + 1 - TOK(op->t0).off,
                           "[%%agile_a%u]", i));
    if (strict) {
        /* In the window iff fencing left the address unchanged; combine with the guard. */
        if (s->pred != PTX_NONE) {
            AGILE_TRY(add_edit(
                r, at, 0, "setp.eq.and.u64 %%agile_k%u|%%agile_v%u, %%agile_a%u, %s, %s%.*s;\n\t",
                i, i, i, x, s->pred_neg ? "!" : "", TLEN(s->pred), TSTR(s->pred)));
            AGILE_TRY(add_edit(r, TOK(s->t0).off,
                               TOK(s->pred).off + TOK(s->pred).len - TOK(s->t0).off, "@%%agile_k%u",
                               i));
        } else {
            AGILE_TRY(add_edit(
                r, at, 0, "setp.eq.u64 %%agile_k%u|%%agile_v%u, %%agile_a%u, %s;\n\t", i, i, i, x));
            AGILE_TRY(add_edit(r, TOK(s->op).off, 0, "@%%agile_k%u ", i));
            r->ed[r->ned - 1].late = 1;
        }
        if (strcmp(kind, "ld") == 0 || strcmp(kind, "ldu") == 0 || strcmp(kind, "atom") == 0 ||
            strcmp(kind, "mbarrier") == 0 || strcmp(kind, "ldmatrix") == 0)
            AGILE_TRY(zero_dsts(r, s, i, s->end));
        AGILE_TRY(add_edit(
            r, s->end, 0,
            "\n\t@%%agile_v%u atom.global.cas.b32 %%agile_c, [%%agile_viol], 0, %%agile_kid;"
            "\n\tsetp.eq.and.u32 %%agile_w, %%agile_c, 0, %%agile_v%u;"
            "\n\t@%%agile_w st.global.u32 [%%agile_viol+4], %u;"
            "\n\t@%%agile_w st.global.u64 [%%agile_viol+8], %s;",
            i, i, r->site, x));
    }
    AGILE_TRY(count_site(r, kind, sp, line));
out:
    return rv;
}

/* cp.async.bulk: the size operand bounds how far past the fenced address the copy goes. */
static int clamp_bulk_size(rw *r, const ptx_stmt *s, unsigned i)
{
    int rv;
    for (uint32_t k = 0; k < s->nopnd; k++) {
        const ptx_opnd *op = &r->m.opnds[s->opnd0 + k];
        int64_t v;
        if (opnd_is_bracket(r, op)) continue;
        if (op->t1 != op->t0 + 1)
            return reject(r, TOK(op->t0).line, "cp.async.bulk: unsupported size operand");
        if (TOK(op->t0).kind == PTK_NUM) {
            if (!tok_int(r, op->t0, &v) || (uint64_t)v > r->gap)
                return reject(r, TOK(op->t0).line, "cp.async.bulk: size larger than the guard gap");
            if (v % 16 != 0)
                return reject(r, TOK(op->t0).line,
                              "cp.async.bulk: size not a multiple of 16 (faults)");
            return AGILE_OK;
        }
        r->bulk = true;
        /* at most the gap, and a multiple of 16 as the hardware requires */
        rv = add_edit(r, TOK(s->t0).off, 0,
                      "min.u32 %%agile_s%u, %.*s, %" PRIu64 ";\n\t"
                      "and.b32 %%agile_s%u, %%agile_s%u, -16;\n\t",
                      i, TLEN(op->t0), TSTR(op->t0), r->gap & ~(uint64_t)15, i, i);
        if (rv == AGILE_OK) rv = add_edit(r, TOK(op->t0).off, TOK(op->t0).len, "%%agile_s%u", i);
        return rv;
    }
    return reject(r, TOK(s->op).line, "cp.async.bulk without a size operand");
}

/* Elements of the comma-separated list between tokens open and close (exclusive). */
static uint32_t list_len(rw *r, uint32_t open, uint32_t close)
{
    uint32_t n = close > open + 1;
    for (uint32_t t = open + 1; t < close; t++)
        n += agile_guard_tok_punct(&r->m, t, ',');
    return n;
}

static bool is_gate(const rw *r, uint32_t name)
{
    for (size_t g = 0; g < r->o->ngates; g++)
        if (strlen(r->o->gates[g]) == TOK(name).len &&
            memcmp(r->o->gates[g], TSTR(name), TOK(name).len) == 0)
            return true;
    return false;
}

/* call __assertfail (a failed device assert) or trap, both of which would fault and kill
 * the shared context: record (kernel, site, PTX line) in the violation record, first one
 * wins, and end the thread. The worker reports it at the tenant's next barrier. */
static int device_assert(rw *r, const ptx_stmt *s, unsigned site)
{
    char g[80] = "", at[84] = "";
    uint32_t line = TOK(s->op).line;
    if (s->pred != PTX_NONE) {
        snprintf(g, sizeof(g), "%s%.*s", s->pred_neg ? "!" : "", TLEN(s->pred), TSTR(s->pred));
        snprintf(at, sizeof(at), "@%s ", g);
    }
    return add_edit(r, TOK(s->t0).off, s->end - TOK(s->t0).off,
                    "%satom.global.cas.b32 %%agile_c, [%%agile_viol], 0, %%agile_kid;"
                    "\n\tsetp.eq%s.u32 %%agile_w, %%agile_c, 0%s%s;"
                    "\n\t@%%agile_w st.global.u32 [%%agile_viol+4], %u;"
                    "\n\t@%%agile_w st.global.u64 [%%agile_viol+8], %u;"
                    "\n\t%sexit;",
                    at, g[0] ? ".and" : "", g[0] ? ", " : "", g, site, line, at);
}

/* Can the module read shared memory: an explicit shared access, a generic one (which may
 * point into the shared window), or an opcode that reads it through descriptors? */
static bool reads_shared(const rw *r)
{
    for (uint32_t i = 0; i < r->m.nst; i++) {
        const ptx_stmt *s = &r->m.st[i];
        opparts o;
        bool br = false, space = false;
        if (s->kind != PST_INSTR) continue;
        split_op(TSTR(s->op), TOK(s->op).len, &o);
        if (part_is(&o, 0, "wgmma") || part_is(&o, 0, "call")) {
            if (part_is(&o, 0, "wgmma")) return true;
            continue;
        }
        for (uint32_t k = 0; k < s->nopnd; k++)
            br = br || opnd_is_bracket(r, &r->m.opnds[s->opnd0 + k]);
        for (unsigned k = 1; k < o.np; k++) {
            ptx_space sp = part_space(&o, k);
            if (sp == PTX_SPACE_SHARED) return true;
            space = space || sp != PTX_SPACE_NONE;
        }
        if (br && !space) return true; /* generic */
    }
    return false;
}

/* Zero the CTA's shared memory at entry, before any tenant instruction: it holds what
 * another tenant's kernel (or cuFFT) left there (issue 12.8). The allocation less the
 * reserved range ([0, begin) and [end, %aggr_smem_size)), 16 bytes per thread per step,
 * through the same clamp as every shared store, then bar.sync 0. */
static int scrub_shared(rw *r, uint32_t at)
{
    return add_edit(
        r, at, 0,
        "\n\t// agile guard: zero this CTA's shared memory (another kernel's data)"
        "\n\t.reg .b32 %%agile_zi, %%agile_zs, %%agile_zn, %%agile_ze, %%agile_zc, %%agile_zu,"
        " %%agile_zz;\n\t.reg .pred %%agile_zp;"
        "\n\tmov.u32 %%agile_zi, %%tid.z;\n\tmov.u32 %%agile_zn, %%ntid.y;"
        "\n\tmov.u32 %%agile_zs, %%tid.y;\n\tmad.lo.u32 %%agile_zi, %%agile_zi, %%agile_zn, %%agile_zs;"
        "\n\tmov.u32 %%agile_zn, %%ntid.x;\n\tmov.u32 %%agile_zs, %%tid.x;"
        "\n\tmad.lo.u32 %%agile_zi, %%agile_zi, %%agile_zn, %%agile_zs;"
        "\n\tshl.b32 %%agile_zi, %%agile_zi, 4;"
        "\n\tmov.u32 %%agile_zs, %%ntid.y;\n\tmul.lo.u32 %%agile_zs, %%agile_zs, %%agile_zn;"
        "\n\tmov.u32 %%agile_zn, %%ntid.z;\n\tmul.lo.u32 %%agile_zs, %%agile_zs, %%agile_zn;"
        "\n\tshl.b32 %%agile_zs, %%agile_zs, 4;\n\tmov.b32 %%agile_zz, 0;"
        "\n\tmov.u32 %%agile_ze, %%reserved_smem_offset_begin;"
        "\n\tand.b32 %%agile_ze, %%agile_ze, -16;\n\tmov.u32 %%agile_zc, %%agile_zi;"
        "\n__agile_za:\n\tsetp.ge.u32 %%agile_zp, %%agile_zc, %%agile_ze;"
        "\n\t@%%agile_zp bra __agile_zb0;"
        "\n\tmin.u32 %%agile_zu, %%agile_zc, %%agile_l16;\n\tand.b32 %%agile_zu, %%agile_zu, -16;"
        "\n\tst.shared.v4.b32 [%%agile_zu], {%%agile_zz, %%agile_zz, %%agile_zz, %%agile_zz};"
        "\n\tadd.u32 %%agile_zc, %%agile_zc, %%agile_zs;\n\tbra __agile_za;"
        "\n__agile_zb0:\n\tmov.u32 %%agile_zc, %%reserved_smem_offset_end;"
        "\n\tadd.u32 %%agile_zc, %%agile_zc, %%agile_zi;"
        "\n__agile_zb:\n\tsetp.ge.u32 %%agile_zp, %%agile_zc, %%agile_sh;"
        "\n\t@%%agile_zp bra __agile_zd;"
        "\n\tmin.u32 %%agile_zu, %%agile_zc, %%agile_l16;\n\tand.b32 %%agile_zu, %%agile_zu, -16;"
        "\n\tst.shared.v4.b32 [%%agile_zu], {%%agile_zz, %%agile_zz, %%agile_zz, %%agile_zz};"
        "\n\tadd.u32 %%agile_zc, %%agile_zc, %%agile_zs;\n\tbra __agile_zb;"
        "\n__agile_zd:\n\tbar.sync 0;");
}

/* Does the module trap or call __assertfail (not provided as a gate)? */
static bool calls_assert(const rw *r)
{
    for (uint32_t i = 0; i < r->m.nst; i++) {
        const ptx_stmt *s = &r->m.st[i];
        if (s->kind == PST_INSTR && agile_guard_tok_eq(&r->m, s->op, "trap")) return true;
        if (s->kind != PST_INSTR || !agile_guard_tok_prefix(&r->m, s->op, "call")) continue;
        for (uint32_t k = 0; k < s->nopnd; k++) {
            uint32_t t = r->m.opnds[s->opnd0 + k].t0;
            if (agile_guard_tok_eq(&r->m, t, "__assertfail") && !is_gate(r, t)) return true;
        }
    }
    return false;
}

static int do_call(rw *r, const ptx_stmt *s)
{
    uint32_t k = 0, line = TOK(s->op).line, callee;
    const ptx_opnd *ops = &r->m.opnds[s->opnd0];
    const ptx_opnd *args = NULL;
    bool defined = false, declared = false;
    const char *names =
        r->rec ? "__agile_cm, __agile_cb, __agile_cv, __agile_ck" : "__agile_cm, __agile_cb";
    int rv = AGILE_OK;

    if (k < s->nopnd && agile_guard_tok_punct(&r->m, ops[k].t0, '(')) k++; /* return parameters */
    if (k >= s->nopnd) return reject(r, line, "call without a callee");
    callee = ops[k].t0;
    if (ops[k].t1 != callee + 1 || TOK(callee).kind != PTK_IDENT || TSTR(callee)[0] == '%')
        return reject(r, line, "indirect call: the callee cannot be checked");
    k++;
    if (k < s->nopnd && agile_guard_tok_punct(&r->m, ops[k].t0, '(')) args = &ops[k++];
    if (k < s->nopnd) return reject(r, line, "indirect call (prototype or call targets)");
    /* The lists are whole operands "( ... )": the hidden arguments go before the ')'. */
    if ((args && !agile_guard_tok_punct(&r->m, args->t1 - 1, ')')) ||
        (agile_guard_tok_punct(&r->m, ops[0].t0, '(') &&
         !agile_guard_tok_punct(&r->m, ops[0].t1 - 1, ')')))
        return reject(r, line, "malformed call operand list");
    if (args) /* the hidden arguments are appended: every element must be there */
        for (uint32_t t = args->t0 + 1; t < args->t1; t++)
            if ((agile_guard_tok_punct(&r->m, t, ',') || t == args->t1 - 1) &&
                (agile_guard_tok_punct(&r->m, t - 1, ',') ||
                 (t - 1 == args->t0 && t != args->t1 - 1)))
                return reject(r, line, "call with an empty argument");
    for (uint32_t i = 0; i < r->m.nfuncs; i++) {
        const ptx_func *g = &r->m.funcs[i];
        if (TOK(g->name).len != TOK(callee).len ||
            memcmp(TSTR(g->name), TSTR(callee), TOK(callee).len) != 0)
            continue;
        if (g->entry) return reject(r, line, "call to a kernel entry");
        if (g->has_body) {
            defined = true;
            /* The hidden arguments go after the last one and the callee finds them by
             * position: the counts must agree (they must anyway, for ptxas). */
            uint32_t na = args ? list_len(r, args->t0, args->t1 - 1) : 0;
            uint32_t np =
                g->params_open == PTX_NONE ? 0 : list_len(r, g->params_open, g->params_close);
            if (na != np)
                return reject(r, line, "call passes %u argument(s) to '%.*s', which takes %u", na,
                              TLEN(callee), TSTR(callee), np);
        }
        declared = true;
    }
    if (!defined && !is_gate(r, callee) && agile_guard_tok_eq(&r->m, callee, "__assertfail"))
        return device_assert(r, s, AGILE_GUARD_SITE_ASSERT);
    if (!defined) {
        if (declared && is_gate(r, callee))
            return AGILE_OK; /* a gate: the worker's function, called as declared */
        return reject(r, line, "call to '%.*s', which is neither defined in the module nor a gate",
                      TLEN(callee), TSTR(callee));
    }
    AGILE_TRY(add_edit(r, TOK(s->t0).off, 0,
                       "{ .param .b64 __agile_cm; st.param.b64 [__agile_cm], %%agile_mask;"
                       " .param .b64 __agile_cb; st.param.b64 [__agile_cb], %%agile_base;%s\n\t",
                       r->rec
                           ? " .param .b64 __agile_cv; st.param.b64 [__agile_cv], %agile_viol;"
                             " .param .b32 __agile_ck; st.param.b32 [__agile_ck], %agile_kid;"
                           : ""));
    if (args == NULL)
        AGILE_TRY(add_edit(r, TOK(ops[k - 1].t1 - 1).off + TOK(ops[k - 1].t1 - 1).len, 0, ", (%s)",
                           names));
    else if (args->t1 == args->t0 + 2)
        AGILE_TRY(add_edit(r, TOK(args->t1 - 1).off, 0, "%s", names));
    else
        AGILE_TRY(add_edit(r, TOK(args->t1 - 1).off, 0, ", %s", names));
    AGILE_TRY(add_edit(r, s->end, 0, " }"));
out:
    return rv;
}

static int do_instr(rw *r, const ptx_stmt *s)
{
    opparts o;
    const char *kind, *why;
    op_class cl;
    ptx_space spaces[8];
    unsigned nsp = 0, nfenced = 0, nbr = 0, first_site = r->fsite;
    int rv = AGILE_OK;

    if (s->nopnd > AGILE_GUARD_MAX_OPERANDS)
        return reject(r, TOK(s->op).line, "'%.*s' with %u operands (at most %u)", TLEN(s->op),
                      TSTR(s->op), s->nopnd, AGILE_GUARD_MAX_OPERANDS);

    /* An address is a whole operand "[...]"; a '[' anywhere else is a form we do not
     * model (and would hide an access from the classification below). */
    for (uint32_t k = 0; k < s->nopnd; k++) {
        const ptx_opnd *op = &r->m.opnds[s->opnd0 + k];
        for (uint32_t t = op->t0 + 1; t < op->t1; t++)
            if (agile_guard_tok_punct(&r->m, t, '[') && !agile_guard_tok_punct(&r->m, op->t0, '['))
                return reject(r, TOK(t).line, "unsupported operand form in '%.*s'", TLEN(s->op),
                              TSTR(s->op));
    }
    split_op(TSTR(s->op), TOK(s->op).len, &o);
    if (o.np == 1 && part_is(&o, 0, "trap") && s->nopnd == 0)
        return device_assert(r, s, AGILE_GUARD_SITE_TRAP);
    cl = classify(r, s, &o, &kind, &why);
    switch (cl) {
    case CL_NONE:
    case CL_IGNORE:
        return AGILE_OK;
    case CL_CALL:
        return do_call(r, s);
    case CL_REJECT:
        return reject(r, TOK(s->op).line, "%s: '%.*s'", why, TLEN(s->op), TSTR(s->op));
    default:
        break;
    }
    for (unsigned i = 1; i < o.np; i++) {
        ptx_space sp = part_space(&o, i);
        if (sp != PTX_SPACE_NONE) {
            if (nsp == AGILE_ARRAY_LEN(spaces))
                return reject(r, TOK(s->op).line, "too many state spaces in '%.*s'", TLEN(s->op),
                              TSTR(s->op));
            spaces[nsp++] = sp;
        }
    }
    if (cl == CL_ONE && nsp > 1)
        return reject(r, TOK(s->op).line, "conflicting state spaces in '%.*s'", TLEN(s->op),
                      TSTR(s->op));
    for (uint32_t k = 0; k < s->nopnd; k++) {
        const ptx_opnd *op = &r->m.opnds[s->opnd0 + k];
        ptx_space sp;
        if (!opnd_is_bracket(r, op)) continue;
        if (cl == CL_ONE) {
            sp = nsp ? spaces[0] : PTX_SPACE_NONE;
        } else if (nbr < nsp) {
            sp = spaces[nbr];
        } else if (cl == CL_BULK && nbr == nsp && k + 1 == s->nopnd && nsp > 0) {
            bool mbar = false;
            for (unsigned i = 1; i < o.np; i++)
                if (part_has_prefix(&o, i, "mbarrier::")) mbar = true;
            if (!mbar)
                return reject(r, TOK(s->op).line, "unexpected address operand in '%.*s'",
                              TLEN(s->op), TSTR(s->op));
            sp = PTX_SPACE_SHARED; /* the completion mbarrier lives in shared memory */
        } else {
            return reject(r, TOK(s->op).line, "cannot tell the state space of an operand of '%.*s'",
                          TLEN(s->op), TSTR(s->op));
        }
        nbr++;
        if (sp == PTX_SPACE_SHARED && cl != CL_BULK && !any_part(&o, "shared::cluster") &&
            !(cl == CL_ONE && (part_is(&o, 1, "async"))))
            AGILE_TRY(confine_shared(r, s, op, &o, kind));
        else if (sp == PTX_SPACE_LOCAL)
            AGILE_TRY(confine_local(r, s, op, &o, kind));
        else
            AGILE_TRY(fence_opnd(r, s, op, sp, kind, &o, cl == CL_BULK, &nfenced));
    }
    if (cl == CL_PER_OPND && nbr != nsp)
        return reject(r, TOK(s->op).line, "cannot tell the state spaces of '%.*s'", TLEN(s->op),
                      TSTR(s->op));
    if (cl == CL_BULK && nfenced > 0) AGILE_TRY(clamp_bulk_size(r, s, first_site));
out:
    return rv;
}

/* ---- functions and module -------------------------------------------------------------- */

static bool func_defined(const rw *r, uint32_t name)
{
    for (uint32_t i = 0; i < r->m.nfuncs; i++) {
        const ptx_func *g = &r->m.funcs[i];
        if (g->has_body && TOK(g->name).len == TOK(name).len &&
            memcmp(TSTR(g->name), TSTR(name), TOK(name).len) == 0)
            return true;
    }
    return false;
}

/* Append the hidden parameters to a signature. */
/* Every element of the parameter list is a declaration (`.param ...` / `.reg ...`): the
 * hidden parameters are appended to it and the verifier finds them by position. */
static int params_ok(rw *r, const ptx_func *f)
{
    if (f->params_open == PTX_NONE || f->params_close == f->params_open + 1) return AGILE_OK;
    bool first = true;
    for (uint32_t t = f->params_open + 1; t <= f->params_close; t++) {
        if (first && !agile_guard_tok_eq(&r->m, t, ".param") &&
            !agile_guard_tok_eq(&r->m, t, ".reg"))
            return reject(r, TOK(t).line, "malformed parameter list of '%.*s'", TLEN(f->name),
                          TSTR(f->name));
        first = agile_guard_tok_punct(&r->m, t, ',');
    }
    return AGILE_OK;
}

static int add_params(rw *r, const ptx_func *f)
{
    const char *p;
    int rv = params_ok(r, f);
    if (rv != AGILE_OK) return rv;
    if (f->entry)
        p = r->rec
                ? ".param .u64 __agile_mask, .param .u64 __agile_base, .param .u64 __agile_viol"
                : ".param .u64 __agile_mask, .param .u64 __agile_base";
    else
        p = r->rec ? ".param .b64 __agile_fmask, .param .b64 __agile_fbase, .param .b64 "
                           "__agile_fviol, "
                           ".param .b32 __agile_fkid"
                         : ".param .b64 __agile_fmask, .param .b64 __agile_fbase";
    if (f->params_open == PTX_NONE)
        return add_edit(r, TOK(f->name).off + TOK(f->name).len, 0, "(%s)", p);
    if (f->params_close == f->params_open + 1)
        return add_edit(r, TOK(f->params_close).off, 0, "%s", p);
    return add_edit(r, TOK(f->params_close - 1).off + TOK(f->params_close - 1).len, 0, ",\n\t%s",
                    p);
}

static void report_func(rw *r, const ptx_func *f, unsigned first)
{
    agile_guard_sbuf *b = &r->rep;
    agile_guard_sb_printf(b, "%s\n    {\"name\": ", r->rep.n ? "," : "");
    agile_guard_sb_json(b, TSTR(f->name), TOK(f->name).len);
    agile_guard_sb_printf(b, ", \"kind\": \"%s\", \"line\": %u", f->entry ? "entry" : "func",
                          TOK(f->t0).line);
    if (f->entry) agile_guard_sb_printf(b, ", \"kernel_id\": %u", r->kidx);
    agile_guard_sb_str(b, ", \"hidden_params\": [");
    if (f->entry)
        agile_guard_sb_str(b, r->rec ? "\"__agile_mask\", \"__agile_base\", \"__agile_viol\""
                                           : "\"__agile_mask\", \"__agile_base\"");
    else
        agile_guard_sb_str(
            b, r->rec
                   ? "\"__agile_fmask\", \"__agile_fbase\", \"__agile_fviol\", \"__agile_fkid\""
                   : "\"__agile_fmask\", \"__agile_fbase\"");
    agile_guard_sb_printf(b, "], \"nsites\": %u, \"first_site\": %u, \"sites\": {", r->site - first,
                          first);
    for (size_t k = 0, n = 0; k < NKINDS; k++)
        if (r->counts[k])
            agile_guard_sb_printf(b, "%s\"%s\": %u", n++ ? ", " : "", kinds[k], r->counts[k]);
    agile_guard_sb_str(b, "}, \"site_list\": [");
    agile_guard_sb_add(b, r->fsites.p, r->fsites.n);
    agile_guard_sb_str(b, "]}");
}

static int do_func(rw *r, const ptx_func *f)
{
    int rv = AGILE_OK;
    unsigned first = r->site, n;
    uint32_t at;

    r->f = f;
    if (!f->has_body) {
        if (f->entry || func_defined(r, f->name)) AGILE_TRY(add_params(r, f));
        r->f = NULL;
        return AGILE_OK;
    }
    r->fsite = 0;
    r->nregs = 0;
    r->bulk = false;
    r->aligns = 0;
    r->slims = 0;
    r->generic = false;
    r->llims = 0;
    r->frame_end = 0;
    r->frame_w = 1;
    r->fsites.n = 0;
    memset(r->counts, 0, sizeof(r->counts));
    if (f->entry) r->kidx = r->nentry++;
    AGILE_TRY(add_params(r, f));
    for (uint32_t i = f->st0; i < f->st1; i++) {
        const ptx_stmt *s = &r->m.st[i];
        if (s->kind == PST_DIR && agile_guard_tok_eq(&r->m, s->op, ".reg"))
            AGILE_TRY(collect_regs(r, s));
    }
    frame_decl(r, f);
    if (r->frame_end) r->llims |= r->frame_w; /* the frame is zeroed through its clamp */
    AGILE_TRY(index_regs(r));
    for (uint32_t i = f->st0; i < f->st1; i++) {
        const ptx_stmt *s = &r->m.st[i];
        if (s->kind == PST_DIR) {
            static const char *const ok[] = {".reg",    ".local",         ".shared",       ".param",
                                             ".const",  ".global",        ".loc",          ".file",
                                             ".pragma", ".callprototype", ".branchtargets"};
            bool known = false;
            if (agile_guard_tok_eq(&r->m, s->op, ".calltargets"))
                return reject(r, TOK(s->op).line, "indirect call targets (.calltargets)");
            for (size_t k = 0; k < AGILE_ARRAY_LEN(ok); k++)
                known = known || agile_guard_tok_eq(&r->m, s->op, ok[k]);
            if (!known)
                return reject(r, TOK(s->op).line,
                              "directive '%.*s' not supported in a function body", TLEN(s->op),
                              TSTR(s->op));
            /* No body directive has a ':' (the verifier would read one as a label and the
             * rest as another directive). */
            for (uint32_t t = s->op + 1; t < s->t1; t++)
                if (agile_guard_tok_punct(&r->m, t, ':'))
                    return reject(r, TOK(s->op).line, "malformed '%.*s' declaration", TLEN(s->op),
                                  TSTR(s->op));
        }
        if (s->kind == PST_INSTR) AGILE_TRY(do_instr(r, s));
    }
    /* Registers and the entry loads, right after the body's '{'. */
    n = AGILE_MAX(r->fsite, 1u);
    at = TOK(f->body_open).off + 1;
    if (f->entry && r->scrub) {
        if (!has_aggr_smem(r))
            return reject(r, TOK(f->name).line,
                          "'%.*s' may read shared memory: the guard zeroes it at entry, which "
                          "needs .version 8.1 or later (%%aggr_smem_size)",
                          TLEN(f->name), TSTR(f->name));
        r->slims |= 16;
    }
    AGILE_TRY(
        add_edit(r, at, 0,
                 "\n\t// agile guard: window fence registers, loaded before any tenant instruction"
                 "\n\t.reg .b64 %%agile_mask, %%agile_base;"
                 "\n\t.reg .b64 %%agile_a<%u>, %%agile_t<%u>, %%agile_x<%u>, %%agile_g<%u>;"
                 "\n\t.reg .pred %%agile_p<%u>;",
                 n, n, n, n, n));
    for (uint64_t al = 2; al <= r->aligns; al <<= 1)
        if (r->aligns & al) AGILE_TRY(add_edit(r, at, 0, "\n\t.reg .b64 %%agile_m%" PRIu64 ";", al));
    if (r->slims) {
        AGILE_TRY(add_edit(r, at, 0, "\n\t.reg .b32 %%agile_u<%u>, %%agile_sh;", n));
        if (r->generic)
            AGILE_TRY(add_edit(r, at, 0, "\n\t.reg .b64 %%agile_y<%u>;\n\t.reg .pred %%agile_q<%u>;",
                               n, n));
        for (uint64_t w = 1; w <= r->slims; w <<= 1)
            if (r->slims & w)
                AGILE_TRY(add_edit(r, at, 0, "\n\t.reg .b32 %%agile_l%" PRIu64 ";", w));
    }
    if (r->llims) {
        AGILE_TRY(add_edit(r, at, 0, "\n\t.reg .b64 %%agile_o<%u>, %%agile_fr;", n));
        for (uint64_t w = 1; w <= r->llims; w <<= 1)
            if (r->llims & w)
                AGILE_TRY(add_edit(r, at, 0, "\n\t.reg .b64 %%agile_h%" PRIu64 ";", w));
    }
    if (r->bulk) AGILE_TRY(add_edit(r, at, 0, "\n\t.reg .b32 %%agile_s<%u>;", n));
    if (r->rec)
        AGILE_TRY(add_edit(r, at, 0,
                           "\n\t.reg .b64 %%agile_viol;\n\t.reg .b32 %%agile_kid, %%agile_c;"
                           "\n\t.reg .pred %%agile_w, %%agile_k<%u>, %%agile_v<%u>;",
                           n, n));
    AGILE_TRY(add_edit(
        r, at, 0, "\n\tld.param.u64 %%agile_mask, [%s];\n\tld.param.u64 %%agile_base, [%s];",
        f->entry ? "__agile_mask" : "__agile_fmask", f->entry ? "__agile_base" : "__agile_fbase"));
    for (uint64_t al = 2; al <= r->aligns; al <<= 1)
        if (r->aligns & al)
            AGILE_TRY(add_edit(r, at, 0, "\n\tand.b64 %%agile_m%" PRIu64 ", %%agile_mask, -%" PRIu64 ";",
                               al, al));
    if (r->slims) {
        AGILE_TRY(add_edit(r, at, 0, "\n\tmov.u32 %%agile_sh, %%aggr_smem_size;"));
        for (uint64_t w = 1; w <= r->slims; w <<= 1)
            if (r->slims & w)
                AGILE_TRY(add_edit(r, at, 0, "\n\tsub.u32 %%agile_l%" PRIu64 ", %%agile_sh, %" PRIu64 ";",
                                   w, w));
    }
    if (r->llims) { /* after the frame's declaration (frame_decl) */
        const ptx_var *fv = &r->m.vars[r->frame[f - r->m.funcs]];
        AGILE_TRY(add_edit(r, r->frame_end, 0, "\n\tmov.u64 %%agile_fr, %.*s;", TLEN(fv->name),
                           TSTR(fv->name)));
        for (uint64_t w = 1; w <= r->llims; w <<= 1)
            if (r->llims & w)
                AGILE_TRY(add_edit(r, r->frame_end, 0,
                                   "\n\tadd.u64 %%agile_h%" PRIu64 ", %%agile_fr, %" PRIu64 ";", w,
                                   fv->size - w));
        AGILE_TRY(zero_frame(r, fv));
    }
    if (r->rec) {
        if (f->entry)
            AGILE_TRY(add_edit(
                r, at, 0,
                "\n\tld.param.u64 %%agile_viol, [__agile_viol];\n\tmov.u32 %%agile_kid, %u;",
                r->kidx + 1));
        else
            AGILE_TRY(add_edit(r, at, 0,
                               "\n\tld.param.u64 %%agile_viol, [__agile_fviol];\n\tld.param.u32 "
                               "%%agile_kid, [__agile_fkid];"));
    }
    if (f->entry && r->scrub) AGILE_TRY(scrub_shared(r, r->llims ? r->frame_end : at));
    AGILE_TRY(add_edit(r, at, 0, "\n"));
    report_func(r, f, first);
out:
    return rv;
}

static int cmp_edit(const void *a, const void *b)
{
    const edit *x = a, *y = b;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    if (x->late != y->late) return x->late < y->late ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

static int apply_edits(rw *r, agile_guard_sbuf *out)
{
    uint32_t cur = 0;
    if (r->ned > 0) qsort(r->ed, r->ned, sizeof(edit), cmp_edit);
    for (uint32_t i = 0; i < r->ned; i++) {
        const edit *e = &r->ed[i];
        if (e->pos < cur)
            return AGILE_EINTERNAL; /* overlapping edits: a rewriter bug, never output */
        agile_guard_sb_add(out, r->m.src + cur, e->pos - cur);
        agile_guard_sb_add(out, r->arena.p + e->txt, e->txtlen);
        cur = e->pos + e->del;
    }
    agile_guard_sb_add(out, r->m.src + cur, r->m.len - cur);
    return out->oom ? AGILE_ENOMEM : AGILE_OK;
}

/* Does s[0..n) contain "%agile" or "__agile"? (one pass: runs on every token) */
static bool has_reserved(const char *s, size_t n)
{
    const char *p = s, *e = s + n;
    while ((p = memchr(p, 'a', (size_t)(e - p))) != NULL) {
        if (e - p >= 5 && memcmp(p, "agile", 5) == 0 &&
            ((p - s >= 1 && p[-1] == '%') || (p - s >= 2 && p[-1] == '_' && p[-2] == '_')))
            return true;
        p++;
    }
    return false;
}

static int check_names(rw *r)
{
    for (uint32_t t = 0; t < r->m.ntoks; t++) {
        const char *s = TSTR(t);
        uint32_t n = TOK(t).len;
        /* any token, not only names: "1__agile_x" lexes as a number, a string may name it */
        if (TOK(t).kind == PTK_PUNCT || n < 6) continue;
        if (has_reserved(s, n))
            return reject(r, TOK(t).line, "name '%.*s' is reserved for the guard",
                          (int)AGILE_MIN(n, 64u), s);
    }
    return AGILE_OK;
}

void agile_guard_opts_init(agile_guard_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->guard_gap = AGILE_GUARD_DEFAULT_GAP;
}

static void write_report(rw *r, agile_guard_result *res, int rv)
{
    agile_guard_sbuf b = {0};
    agile_guard_sb_str(&b, "{\n  \"file\": ");
    agile_guard_sb_json(&b, r->file, strlen(r->file));
    agile_guard_sb_printf(
        &b,
        ",\n  \"mode\": \"%s\",\n  \"window_bits\": %u,\n  \"guard_gap\": %" PRIu64
        ",\n  \"nsites\": %u,\n  \"accepted\": %s,\n  \"rejected\": ",
        r->o->strict ? "strict" : "mask", r->o->window_bits, r->gap, r->site,
        rv == AGILE_OK ? "true" : "false");
    if (rv == AGILE_EREJECT) {
        agile_guard_sb_printf(&b, "{\"line\": %u, \"reason\": ", r->err_line);
        agile_guard_sb_json(&b, r->err, strlen(r->err));
        agile_guard_sb_str(&b, "}");
    } else {
        agile_guard_sb_str(&b, "null");
    }
    agile_guard_sb_str(&b, ",\n  \"violation_record\": ");
    agile_guard_sb_str(
        &b, r->rec ? "{\"size\": 16, \"kernel\": [0, 4], \"site\": [4, 4], \"addr\": [8, 8]}"
                         : "null");
    agile_guard_sb_str(&b, ",\n  \"functions\": [");
    if (r->rep.n) agile_guard_sb_add(&b, r->rep.p, r->rep.n);
    agile_guard_sb_str(&b, "\n  ]\n}\n");
    res->report = agile_guard_sb_take(&b, &res->report_len);
}

int agile_guard_ptx(const char *src, size_t len, const agile_guard_opts *o, agile_guard_result *res)
{
    rw r;
    agile_guard_sbuf out = {0};
    int rv = AGILE_OK;

    memset(res, 0, sizeof(*res));
    memset(&r, 0, sizeof(r));
    if (src == NULL || o == NULL ||
        (o->window_bits != 0 && (o->window_bits < 12 || o->window_bits > 62)))
        return AGILE_EINVAL;
    r.o = o;
    r.file = o->filename ? o->filename : "<ptx>";
    r.gap = o->guard_gap ? o->guard_gap : AGILE_GUARD_DEFAULT_GAP;
    if (r.gap < AGILE_GUARD_ACCESS_SLACK) return AGILE_EINVAL;
    rv = agile_guard_ptx_parse(&r.m, src, len);
    if (rv == AGILE_EREJECT) reject(&r, r.m.err_line, "%s", r.m.err);
    if (rv != AGILE_OK) goto out;
    if (r.m.address_size != 64) {
        rv = reject(&r, 1,
                    r.m.address_size ? "32-bit addressing (.address_size %u) is not supported"
                                     : "missing .address_size 64 (32-bit addressing)%.0u",
                    r.m.address_size);
        goto out;
    }
    AGILE_TRY(check_names(&r));
    AGILE_TRY(index_vars(&r));
    r.rec = o->strict || calls_assert(&r);
    r.scrub = reads_shared(&r);
    AGILE_TRY(find_frames(&r));
    for (uint32_t i = 0; i < r.m.nfuncs; i++)
        AGILE_TRY(do_func(&r, &r.m.funcs[i]));
    if (r.rep.oom || r.fsites.oom) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    AGILE_TRY(apply_edits(&r, &out));
    res->ptx = agile_guard_sb_take(&out, &res->ptx_len);
    if (res->ptx == NULL) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    res->nsites = r.site;
    res->record = r.rec;
    if (!o->skip_verify) {
        agile_guard_vopts vo = {o->window_bits, r.gap, o->gates, o->ngates};
        char verr[256];
        rv = agile_guard_verify(res->ptx, res->ptx_len, &vo, verr, sizeof(verr));
        if (rv != AGILE_OK) {
            snprintf(res->err, sizeof(res->err), "%s: the verifier refuses the guarded output: %s",
                     r.file, verr);
            free(res->ptx);
            res->ptx = NULL;
            res->ptx_len = 0;
        }
    }
out:
    if (rv == AGILE_EREJECT) {
        res->err_line = r.err_line;
        if (r.err_func != PTX_NONE) /* name the kernel or function the refusal is in */
            snprintf(res->err, sizeof(res->err), "%s:%u: %s (in '%.*s')", r.file, r.err_line,
                     r.err, (int)AGILE_MIN(r.m.toks[r.err_func].len, 64u),
                     r.m.src + r.m.toks[r.err_func].off);
        else
            snprintf(res->err, sizeof(res->err), "%s:%u: %s", r.file, r.err_line, r.err);
    }
    if (rv == AGILE_OK || rv == AGILE_EREJECT) write_report(&r, res, rv);
    agile_guard_sb_fini(&out);
    agile_guard_sb_fini(&r.arena);
    agile_guard_sb_fini(&r.rep);
    agile_guard_sb_fini(&r.fsites);
    free(r.ed);
    free(r.frame);
    free(r.regs);
    free(r.rtab);
    free(r.vtab);
    agile_guard_ptx_fini(&r.m);
    return rv;
}

void agile_guard_result_fini(agile_guard_result *res)
{
    free(res->ptx);
    free(res->report);
    res->ptx = NULL;
    res->report = NULL;
}

int agile_guard_roundtrip(const char *src, size_t len, char **out, size_t *out_len, char *err,
                          size_t errcap)
{
    ptx_module m;
    agile_guard_sbuf b = {0};
    int rv = agile_guard_ptx_parse(&m, src, len);
    if (rv == AGILE_OK) {
        /* Structure check: inside every body, statements are ordered, do not overlap and
         * leave out nothing but empty statements; then print back token by token with
         * the gaps (whitespace, comments) in between. */
        uint32_t cur = 0;
        for (uint32_t f = 0; f < m.nfuncs && rv == AGILE_OK; f++) {
            const ptx_func *fn = &m.funcs[f];
            uint32_t t = fn->body_open + 1;
            if (!fn->has_body) continue;
            for (uint32_t i = fn->st0; i < fn->st1; i++) {
                const ptx_stmt *s = &m.st[i];
                while (t < s->t0 && agile_guard_tok_punct(&m, t, ';'))
                    t++;
                if (s->t0 != t) {
                    rv = AGILE_EINTERNAL;
                    break;
                }
                t = s->t1 + (s->kind == PST_INSTR || s->kind == PST_LABEL ||
                             (s->kind == PST_DIR && agile_guard_tok_punct(&m, s->t1, ';')));
            }
            while (t < fn->body_close && agile_guard_tok_punct(&m, t, ';'))
                t++;
            if (rv == AGILE_OK && t != fn->body_close) rv = AGILE_EINTERNAL;
        }
        for (uint32_t t = 0; t < m.ntoks; t++) {
            agile_guard_sb_add(&b, src + cur, m.toks[t].off - cur);
            agile_guard_sb_add(&b, src + m.toks[t].off, m.toks[t].len);
            cur = m.toks[t].off + m.toks[t].len;
        }
        agile_guard_sb_add(&b, src + cur, len - cur);
        if (rv == AGILE_OK) {
            *out = agile_guard_sb_take(&b, out_len);
            if (*out == NULL) rv = AGILE_ENOMEM;
        }
    } else if (err && errcap) {
        snprintf(err, errcap, "%u: %s", m.err_line, m.err);
    }
    agile_guard_sb_fini(&b);
    agile_guard_ptx_fini(&m);
    return rv;
}
