/* ptx.h — the guard's PTX front end: a tokenizer and a statement parser (internal).
 *
 * The parser never copies or normalises the source: every token, statement and function
 * is a span of the caller's buffer, so the rewriter can print back everything it does not
 * change byte for byte, and insert or replace text at exact offsets. The module owns its
 * arrays (ptx_module_fini frees them); the source buffer stays the caller's and must
 * outlive the module.
 */
#ifndef AGILE_GUARD_PTX_H
#define AGILE_GUARD_PTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PTX_NONE UINT32_MAX

typedef enum { PTK_IDENT, PTK_NUM, PTK_STR, PTK_PUNCT } ptx_tok_kind;

/* One token: [off, off+len) of the source; line is 1-based. Identifiers include the
 * dotted/`::` suffixes of opcodes and directives ("ld.global.v4.f32", ".shared::cta"). */
typedef struct ptx_tok {
    uint32_t off, len, line;
    uint8_t kind;
} ptx_tok;

/* An operand: tokens [t0, t1), split at top-level commas. */
typedef struct ptx_opnd {
    uint32_t t0, t1;
} ptx_opnd;

typedef enum { PST_INSTR, PST_LABEL, PST_DIR, PST_OPEN, PST_CLOSE } ptx_stmt_kind;

/* A statement of a function body. t0..t1 are its tokens (t1 exclusive, `;` excluded);
 * end is the byte offset just past it (past the `;` where there is one). */
typedef struct ptx_stmt {
    uint8_t kind;
    uint8_t pred_neg; /* `@!%p` */
    uint32_t t0, t1;
    uint32_t end;
    uint32_t pred;  /* token of the guard predicate register, or PTX_NONE */
    uint32_t op;    /* opcode token (instructions) or the directive token */
    uint32_t opnd0; /* first operand in ptx_module.opnds */
    uint32_t nopnd;
    uint32_t depth; /* brace depth inside the function body (1 = top level of the body) */
} ptx_stmt;

/* An .entry or .func, defined (body) or only declared. Token indices or PTX_NONE. */
typedef struct ptx_func {
    bool entry, has_body;
    uint32_t t0;                        /* first token of the declaration (linkage etc.) */
    uint32_t name;                      /* name token */
    uint32_t ret_open, ret_close;       /* `(` `)` of the return parameter list (.func) */
    uint32_t params_open, params_close; /* `(` `)` of the parameter list */
    uint32_t body_open, body_close;     /* `{` `}` */
    uint32_t st0, st1;                  /* statements [st0, st1) of the body */
} ptx_func;

typedef enum {
    PTX_SPACE_NONE,
    PTX_SPACE_GLOBAL,
    PTX_SPACE_SHARED,
    PTX_SPACE_LOCAL,
    PTX_SPACE_CONST,
    PTX_SPACE_PARAM,
    PTX_SPACE_OTHER /* .texref, .surfref, ... */
} ptx_space;

/* A variable declaration, module level (func == PTX_NONE) or in a function body. */
typedef struct ptx_var {
    uint32_t name; /* token */
    uint32_t func; /* index into funcs or PTX_NONE */
    uint8_t space;
    bool ext;      /* .extern: not defined in this module */
    uint64_t size; /* bytes; 0 when unknown (unsized array) */
} ptx_var;

typedef struct ptx_module {
    const char *src;
    size_t len;
    ptx_tok *toks;
    uint32_t ntoks, captoks;
    ptx_stmt *st;
    uint32_t nst, capst;
    ptx_opnd *opnds;
    uint32_t nopnds, capopnds;
    ptx_func *funcs;
    uint32_t nfuncs, capfuncs;
    ptx_var *vars;
    uint32_t nvars, capvars;
    uint32_t address_size; /* 0 when absent */
    uint32_t target_tok;   /* first token after .target, or PTX_NONE */
    uint32_t version_tok;  /* token after .version, or PTX_NONE */
    /* First construct the guard refuses at parse time: line and reason. */
    uint32_t err_line;
    char err[200];
    bool oom;
} ptx_module;

/* agile_guard_ptx_parse: tokenize and parse src[0..len) into m (caller storage, zeroed
 * here). AGILE_EREJECT with m->err/err_line set when the text is not PTX the guard can
 * parse; AGILE_ENOMEM. m must be finalised with agile_guard_ptx_fini in every case. */
int agile_guard_ptx_parse(ptx_module *m, const char *src, size_t len);
void agile_guard_ptx_fini(ptx_module *m);

/* Token helpers. */
static inline const char *ptx_tok_str(const ptx_module *m, uint32_t t)
{
    return m->src + m->toks[t].off;
}
/* Inline so that strlen() of a literal folds to a constant: these run per token. */
static inline bool agile_guard_tok_eq(const ptx_module *m, uint32_t t, const char *s)
{
    size_t n = __builtin_strlen(s);
    return t < m->ntoks && m->toks[t].len == n &&
           __builtin_memcmp(m->src + m->toks[t].off, s, n) == 0;
}
static inline bool agile_guard_tok_prefix(const ptx_module *m, uint32_t t, const char *s)
{
    size_t n = __builtin_strlen(s);
    return t < m->ntoks && m->toks[t].len >= n &&
           __builtin_memcmp(m->src + m->toks[t].off, s, n) == 0;
}
static inline bool agile_guard_tok_punct(const ptx_module *m, uint32_t t, char c)
{
    return t < m->ntoks && m->toks[t].kind == PTK_PUNCT && m->src[m->toks[t].off] == c;
}
/* agile_guard_parse_int: a PTX integer literal (decimal, 0x, 0b, octal, U suffix). */
bool agile_guard_parse_int(const char *s, size_t n, uint64_t *out);

/* X(name, bytes, data): the PTX fundamental types and their sizes, the one table of the
 * parser (variable layout), the rewriter (access widths) and kernel parameter layouts
 * (agile_guard_entry_params). data = 1: a type of memory accesses and kernel parameters; 0: one that only a
 * declaration carries (.pred, the fp8 and tf32 formats). The verifier keeps its own table
 * on purpose (verify.c: it shares nothing with the rewriter). */
#define AGILE_PTX_TYPE_LIST(X)                                                                     \
    X(b8, 1, 1) X(u8, 1, 1) X(s8, 1, 1) X(b16, 2, 1) X(u16, 2, 1) X(s16, 2, 1) X(f16, 2, 1)   \
    X(bf16, 2, 1) X(b32, 4, 1) X(u32, 4, 1) X(s32, 4, 1) X(f32, 4, 1) X(f16x2, 4, 1)          \
    X(bf16x2, 4, 1) X(b64, 8, 1) X(u64, 8, 1) X(s64, 8, 1) X(f64, 8, 1) X(b128, 16, 1)        \
    X(pred, 1, 0) X(e4m3, 1, 0) X(e5m2, 1, 0) X(tf32, 4, 0)

/* agile_guard_type_size: the size in bytes of the type named s[0..n) ("u32" or ".u32"), 0 if
 * it is none of AGILE_PTX_TYPE_LIST (or, with data_only, not a data type). */
uint32_t agile_guard_type_size(const char *s, size_t n, bool data_only);

#endif
