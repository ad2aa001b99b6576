/* guard.h — the PTX guard: confine every global/generic memory access of untrusted PTX
 * to the tenant's window (see docs/design.md, "Guard", and guard/README.md). Worker-internal API.
 *
 * Contract of a guarded module
 * ----------------------------
 * Every .entry gets hidden trailing parameters, in this order:
 *     .param .u64 __agile_mask   W - 1 (the window is W = 2^k bytes)
 *     .param .u64 __agile_base   the window base, W-aligned
 *     .param .u64 __agile_viol   (strict mode, or a module with device asserts or traps)
 *                                pointer to the violation record (agile_guard_result.record)
 * The launcher appends their values after the tenant's arguments. The kernel loads them
 * into registers once, at entry, before any tenant instruction runs: registers cannot be
 * addressed, so nothing the tenant writes later can change them.
 *
 * .func device functions defined in the module get trailing parameters too (__agile_fmask,
 * __agile_fbase, and in strict mode __agile_fviol and __agile_fkid) and every call site in
 * the module passes the caller's registers: the values flow through the call graph the
 * same way as at entry. Calls to gates (functions the worker provides, named by the
 * caller) are left alone; calls to anything else are rejected.
 *
 * Each global-space access [a+imm] of width W becomes
 *     and.b64 t, a, mask & -W;  or.b64 f, t, base;  ...  [f+imm]
 * (the mask clears the low bits a W-byte access needs aligned: a misaligned access faults)
 * keeping imm only when 0 <= imm, imm % W == 0 and imm + 256 <= guard_gap (the worker maps
 * guard_gap bytes past the window, so a fenced address plus a small offset stays mapped);
 * other offsets are added to the address before the fence. Generic accesses first test
 * isspacep.global, so shared and local memory reached through generic pointers keep
 * working (aligned):
 *     isspacep.global p, a;  and.b64 g, a, -W;  and/or as above into f;  selp.b64 h, f, g, p
 * Explicit .shared accesses are clamped below %aggr_smem_size - W, explicit .local ones
 * below the end of the function's frame; .param/.const accesses are not changed. No
 * guarded kernel can fault: trap and call __assertfail become a report in the violation
 * record and exit; brkpt, setmaxnreg and others are refused (guard/README.md has the
 * table). Entries that can read shared memory zero it first.
 *
 * Strict mode additionally compares: an access is in the window iff fencing does not
 * change its address. Out-of-window accesses are skipped (loads and atomics yield 0) and
 * the first one is recorded in the violation record:
 *     struct { uint32_t kernel;  // 0: none, else index of the launched .entry + 1
 *              uint32_t site;    // site id, numbered per module (see the report)
 *              uint64_t addr; }  // the address the tenant tried
 * claimed with atom.global.cas on `kernel`, so only the first violation is kept. A device
 * assert or trap writes site AGILE_GUARD_SITE_ASSERT / AGILE_GUARD_SITE_TRAP and, as addr,
 * the PTX line of the call.
 *
 * Module-level .global variables named directly ([var], [var+imm]) are the module's own
 * data, compiled in and placed by the driver: such accesses are allowed when the offset
 * stays inside the declared size; an unknown name or an offset out of bounds rejects.
 * The address of such a variable taken into a register is an ordinary pointer and is
 * fenced like any other (accesses through it land in the window).
 */
#ifndef AGILE_GUARD_H
#define AGILE_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agile/ring.h" /* AGILE_SITE_ASSERT, AGILE_SITE_TRAP */

#define AGILE_GUARD_DEFAULT_GAP (1u << 20)
/* Bytes past [fenced+imm] that one access may touch (vector and bulk-less accesses). */
#define AGILE_GUARD_ACCESS_SLACK 256u
#define AGILE_GUARD_VIOL_SIZE 16u
/* Sites of a device assert and a trap in the violation record: `call __assertfail` and
 * `trap` (which would fault the shared context) are replaced by writing (kernel, site,
 * PTX line) to the record (first one wins) and `exit`. */
#define AGILE_GUARD_SITE_ASSERT AGILE_SITE_ASSERT
#define AGILE_GUARD_SITE_TRAP AGILE_SITE_TRAP
/* Operands of one instruction (a {vector} or [address] counts as one): more is not PTX that
 * compilers emit, and both the rewriter and the verifier refuse it. */
#define AGILE_GUARD_MAX_OPERANDS 12u

typedef struct agile_guard_opts {
    bool strict;
    /* 0: the mask comes from __agile_mask at run time. k (12..62): the fence uses the
     * immediate 2^k - 1 (the parameter is still appended, so the launch ABI is the same). */
    unsigned window_bits;
    uint64_t guard_gap;       /* 0 means AGILE_GUARD_DEFAULT_GAP */
    const char *const *gates; /* functions the worker provides, callable by name */
    size_t ngates;
    const char *filename; /* for "file:line: reason"; NULL: "<ptx>" */
    /* agile_guard_ptx runs the independent verifier on its own output and fails with
     * AGILE_EGUARD if it refuses it (defence in depth). Benchmarks and the fuzzer, which
     * call the verifier themselves, may skip it. */
    bool skip_verify;
} agile_guard_opts;

/* Result of agile_guard_ptx. Owned by the caller after the call; free with
 * agile_guard_result_fini. ptx is NUL-terminated. report is JSON, also on rejection. */
typedef struct agile_guard_result {
    char *ptx;
    size_t ptx_len;
    char *report;
    size_t report_len;
    unsigned nsites;
    /* The entries take __agile_viol (strict mode, or device asserts): the launcher must
     * pass a violation record and read it at the barrier. */
    bool record;
    unsigned err_line; /* on AGILE_EREJECT */
    char err[320];     /* "file:line: reason" on AGILE_EREJECT */
} agile_guard_result;

/* agile_guard_opts_init: defaults (mask mode, 1 MiB gap, no gates). */
void agile_guard_opts_init(agile_guard_opts *o);

/* agile_guard_ptx: guard src[0..len). AGILE_OK with res->ptx set; AGILE_EREJECT with
 * res->err; AGILE_EGUARD (the verifier refused the output: a guard bug, res->err says
 * where); AGILE_EINVAL, AGILE_ENOMEM. res is caller storage, always initialised here
 * and must be finalised with agile_guard_result_fini. Does not block; thread-safe. */
int agile_guard_ptx(const char *src, size_t len, const agile_guard_opts *o,
                    agile_guard_result *res);
void agile_guard_result_fini(agile_guard_result *res);

/* agile_guard_roundtrip: parse and print back unchanged (tests): *out is malloc()ed. */
int agile_guard_roundtrip(const char *src, size_t len, char **out, size_t *out_len, char *err,
                          size_t errcap);

/* agile_guard_verify: the independent verifier. Re-reads guarded PTX with its own scanner
 * and checks that every global/generic access uses a fenced address in the same basic
 * block (see verify.c). AGILE_OK, or AGILE_EGUARD with "line N: reason" in err. */
typedef struct agile_guard_vopts {
    unsigned window_bits;     /* as agile_guard_opts; 0 = mask must come from __agile_mask */
    uint64_t guard_gap;       /* 0 = default */
    const char *const *gates; /* declared functions a call may name */
    size_t ngates;
} agile_guard_vopts;
int agile_guard_verify(const char *ptx, size_t len, const agile_guard_vopts *o, char *err,
                       size_t errcap);

/* agile_guard_entry_params: the parameters of kernel `name` (an .entry with a body) of the
 * tenant's PTX src[0..len) as the launcher lays them out in CUDA's parameter buffer: per
 * parameter its size (element size times array count) and its offset (aligned to its
 * .align, else to its element size); argsize is the buffer's length. The hidden parameters
 * the guard appends come after these and are not counted. kernel_id: the entry's place
 * among the module's defined entries, from 1, as guarded code reports it in a violation
 * record. AGILE_EREJECT (the text does not parse), AGILE_ENOENT (no such kernel),
 * AGILE_EINVAL (a parameter declaration it does not understand), AGILE_ETOOBIG (more than
 * AGILE_GUARD_MAX_PARAMS), AGILE_ENOMEM; err (may be NULL) says which for a person. Does
 * not block; thread-safe. */
#define AGILE_GUARD_MAX_PARAMS 256u
typedef struct agile_guard_entry {
    uint32_t kernel_id;
    uint32_t nparams;
    uint32_t argsize;
    uint32_t size[AGILE_GUARD_MAX_PARAMS];
    uint32_t offset[AGILE_GUARD_MAX_PARAMS];
} agile_guard_entry;
int agile_guard_entry_params(const char *src, size_t len, const char *name,
                             agile_guard_entry *out, char *err, size_t errcap);

/* agile_guard_sha256: SHA-256 of several buffers, one after another. */
void agile_guard_sha256(const void *const *bufs, const size_t *lens, size_t n, uint8_t out[32]);

/* agile_guard_compile: guarded PTX -> cubin for arch ("sm_90"), through nvJitLink
 * (dlopen()ed: binaries start without it). With cache_dir, images are cached on disk under
 * the SHA-256 of (ptx, arch, options); the directory is kept under cache_max bytes by
 * evicting the least recently used. *image is malloc()ed; *hit says whether it came from
 * the cache. log (may be NULL) receives the JIT error log. Blocks (compilation). */
typedef struct agile_guard_compile_opts {
    const char *arch;
    const char *const *options; /* extra nvJitLink options, e.g. "-O3" */
    size_t noptions;
    const char *cache_dir; /* NULL: no cache */
    uint64_t cache_max;    /* 0: 256 MiB */
} agile_guard_compile_opts;
int agile_guard_compile(const char *ptx, size_t len, const agile_guard_compile_opts *o,
                        void **image, size_t *image_len, bool *hit, char *log, size_t logcap);

#endif
