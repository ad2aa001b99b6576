/* dp.h — what the files of the data plane share (internal to worker/dataplane/):
 *   guarded.c   the guarded-module service: MODULE_LOAD/UNLOAD/FUNCTION, kernels reloaded
 *               after a context reset
 *   ring.c      ring objects: RING_ATTACH, teardown, the dispatcher's list of rings
 *   exec.c      command execution: on the backend's queues, or on the dispatcher's thread
 *               (host), completions in command order
 *   dispatch.c  the dispatcher thread: tenants in deficit-round-robin order, waits on rings
 *   fault.c     fault containment: suspects, recovery after a lost context
 * dataplane.h is the interface to the rest of the worker. Locking: dataplane.h "Threads";
 * fields marked "dispatcher only" are touched by the dispatcher thread alone.
 */
#ifndef AGILE_WORKER_DP_H
#define AGILE_WORKER_DP_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "backend.h"
#include "dataplane.h"
#include "guard.h"
#include "ring/ring.h"
#include "ring/sched.h"
#include "worker.h"

#define DP_SLOT_SIZE 512u /* launch params up to ~420 bytes fit one slot */
#define DP_MAX_RINGS_PER_SESSION 8u
#define DP_MAX_STREAMS 1024u /* worker streams per ring */
#define DP_BUDGET 1024u      /* cost units per scheduling pass */
/* Cost units (what the scheduler shares by weight): one unit is about what the dispatcher
 * spends on a NOP. Host: bytes set or copied, measured by benchmarks/fairness_host.py; cuda:
 * an estimate of GPU time (~1 TB/s copies; a launch or module op as 16 units). */
#define DP_HOST_UNIT_BYTES 4096u
#define DP_GPU_UNIT_BYTES (256u << 10)
#define DP_GPU_OP_COST 16u
/* A host memcpy/memset above DP_HOST_PIECE_MIN runs in pieces of at most DP_HOST_PIECE_MAX
 * bytes (one turn's worth), each in steps of DP_HOST_STEP bytes or more; after each step
 * the other tenants' rings are looked at, and a tenant that just got work is served first. */
#define DP_HOST_PIECE_MIN (16u << 10)
#define DP_HOST_PIECE_MAX (1u << 20)
#define DP_HOST_STEP 4096u
#define DP_IDLE_WAIT_NS 10000000 /* re-read the ring list at least this often */
#define DP_GPU_SPIN_NS 1000000u  /* spin this long after progress while GPU work is out */
#define DP_GPU_NAP_NS 100000     /* then poll GPU completions this often */
#define DP_HOST_WAIT_NS (10ull * 1000000000ull) /* a host WAIT gives up (no time limit set) */
#define DP_QUEUED (-1)                          /* exec_*: the completion was queued, not due now */
#define DP_GPU_OP_NS (60ull * 1000000000ull)    /* non-launch GPU ops: then AGILE_ETIMEDOUT */
#define DP_DRAIN_NS (5ull * 1000000000ull)      /* ring teardown waits this long for the GPU */

/* Fill err with the message, return rv. */
static inline int agile__dp_efail(char *err, size_t cap, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int agile__dp_efail(char *err, size_t cap, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return rv;
}

/* What the backend's queues can do (backend.h): queued (commands run on streams, complete by
 * events), or the dispatcher does in-window work itself. */
static inline agile__queue_caps agile__dp_caps(const agile__worker *w)
{
    agile__queue_caps c;
    agile__backend_queue_caps(w->be, &c);
    return c;
}

/* ---- guarded modules and their kernels (guarded.c) ---- */

typedef struct dp_module {
    _Atomic int refs; /* the handle's + one per function */
    agile__worker *w;
    int dev;
    bool strict;
    agile__kmodule *kmod; /* NULL where the backend runs no kernels */
    char *ptx;            /* the tenant's PTX, for the entries' parameters */
    size_t ptx_len;
    /* the compiled image, loaded again after a context reset (mu: kmod, gen) */
    void *image;
    pthread_mutex_t mu;
    unsigned gen; /* the backend generation kmod was loaded in */
    /* bit (kernel_id - 1) % 64: a launch of that kernel completed without error */
    _Atomic uint64_t ok_kernels;
} dp_module;

typedef struct dp_function {
    dp_module *mod;
    agile__kfunc *kfn;         /* NULL: cannot launch (no kernels on this backend) */
    agile_guard_entry p;       /* its parameters' layout in LAUNCH's args, its kernel id */
    _Atomic uint32_t dyn_smem; /* the largest dynamic shared memory allowed so far */
    unsigned gen;              /* dispatcher: the generation of kfn */
    char name[128];
} dp_function;

/* Drop a reference; the last one unloads the module (where its context still exists). */
void agile__dp_module_rele(dp_module *m);
/* The function's kernel in the current backend generation: after a context reset its module
 * is loaded again from its image (once, by whoever needs it first). Context entered. */
int agile__dp_function_current(agile__worker *w, dp_function *f);

/* ---- rings (ring.c) ---- */

enum { P_DONE, P_EVENT, P_HOSTWAIT, P_BARRIER };

typedef struct dp_pend {
    uint64_t seq, tag, result;
    uint64_t addr;    /* host WAIT, cuda SIGNAL: worker address of the counter */
    uint64_t head_ns; /* when it reached the head of the queue (0: not yet) */
    agile__event *ev;
    int32_t status;
    uint32_t val, cond;
    uint16_t opcode;
    uint8_t kind, launch;
    /* launches: the module (a reference), the kernel, whether it had never completed before
     * (the first suspect of a fault); launches and module ops: what ran, for a fault report */
    bool fresh;
    uint32_t kernel_id;
    dp_module *mod;
    char what[64];
} dp_pend;

/* A large host memcpy/memset in progress on a ring: it runs in pieces, other tenants are
 * served between them, the ring's later commands wait (they are ordered after it) and it
 * completes as one command. Its arguments were validated when it started. */
typedef struct dp_hostop {
    uint64_t seq, tag;
    uint64_t dst, src, n, done; /* worker addresses, bytes, bytes done */
    uint32_t value, es;
    uint16_t opcode;
    bool active;
    bool backward; /* memmove onto an overlapping source below it: from the end */
} dp_hostop;

typedef struct dp_stream {
    uint64_t tag;
    agile__stream *st;
} dp_stream;

typedef struct dp_ring {
    agile__worker *w;
    agile__session *s;
    uint32_t uid;
    int dev;
    agile__ring_worker rw;
    /* dispatcher bookkeeping, under dp->mu */
    bool busy, gone;
    struct dp_ring *next;
    /* dispatcher-only from here */
    bool dead, closed;
    dp_pend *pend; /* completions not yet posted, in order (at most slots) */
    uint32_t pcap, phead, pcount;
    dp_stream *streams;
    uint32_t nstreams;
    agile__event **evpool;
    uint32_t nev;
    agile__pmem *viol;
    uint64_t viol_addr;
    bool viol_armed; /* a strict kernel ran since the last barrier */
    uint64_t limit_ns;
    agile__window *win; /* its tenant's window on dev, once the session joined it */
    dp_hostop op;
    uint32_t busy_pull; /* dispatcher: its tenant was already waiting during this pull */
    unsigned gen;       /* the backend generation its streams and events were made in */
} dp_ring;

typedef struct agile__dp {
    agile__worker *w;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a ring was added; a pass over the rings finished */
    dp_ring *rings;
    uint32_t nrings;
    agile__sched sched;
    pthread_t thread;
    atomic_int stop;
    /* dispatcher only */
    dp_ring **snap;
    agile__ring_worker **rws;
    int32_t *st;
    uint32_t nsnap, capsnap, rr, npull;
    uint32_t nops; /* snapshotted rings with a host op in progress */
    uint64_t last_progress_ns;
    /* a sticky error seen in this pass (dispatcher only): recovered after it */
    bool fault;
    int fault_dev;
    int32_t fault_err;
    uint32_t fault_uid;
    char fault_what[64];
    agile__dp_faults rec[AGILE_MAX_DEV]; /* under mu */
} agile__dp;

/* The tenant's window on the ring's device, once the session joined it (NULL before). */
agile__window *agile__dp_ring_window(dp_ring *r);
/* Worker address of the client range [client, +n) in the ring's window, or AGILE_EBOUNDS. */
int agile__dp_xlate(dp_ring *r, uint64_t client, uint64_t n, uint64_t *out);
/* A completion leaves the queue: drop the module reference a launch took. */
void agile__dp_pend_retire(dp_pend *p);

/* ---- execution (exec.c) ---- */

/* Execute one command; returns its cost in scheduling units. */
uint32_t agile__dp_exec(dp_ring *r, const agile__ring_cmd *cmd);
/* Post every completion whose work is done, in order. Returns whether any was posted.
 * Context entered. */
bool agile__dp_drain(dp_ring *r, uint64_t now);
/* Post one completion to the client's ring. */
void agile__dp_post(dp_ring *r, const dp_pend *p);
/* Up to `piece` bytes of the ring's host op in steps, asking agile__dp_interrupt after each
 * (*why); completes the op after its last byte. Returns the bytes done. */
uint64_t agile__dp_hostop_step(agile__dp *dp, dp_ring *r, uint64_t piece, int *why);

/* ---- the dispatcher (dispatch.c) ---- */

enum { DP_GO_ON, DP_NEXT_RING, DP_YIELD };
void *agile__dp_main(void *arg);
/* Whether a host op in progress on ring `self` should pause: DP_GO_ON, DP_NEXT_RING (another
 * ring of its tenant has commands), DP_YIELD (another tenant just got work). */
int agile__dp_interrupt(agile__dp *dp, const dp_ring *self);

/* ---- faults (fault.c) ---- */

/* A lost context seen on ring r while running `what`: recovered after this pass. */
void agile__dp_fault_note(dp_ring *r, int32_t err, const char *what);
/* The driver wrapper saw a lost context off the data plane: find the device. */
void agile__dp_fault_probe(agile__dp *dp);
/* Recover from the fault noted in this pass (between passes: no ring is being served). */
void agile__dp_recover(agile__dp *dp);

#endif
