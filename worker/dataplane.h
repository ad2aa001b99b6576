/* dataplane.h — the worker's data plane: per-session command rings (csrc/ring), the
 * dispatcher thread that serves them in deficit-round-robin order over tenants, and the
 * control-plane handlers that feed it (RING_ATTACH, MODULE_LOAD/UNLOAD/FUNCTION).
 * Implemented in dataplane/, one file per job (dataplane/dp.h lists them).
 *
 * Threads: the handlers run on the nng request threads; one dispatcher thread per worker
 * (started with the first ring) polls every ring (adaptive spin, then futex_waitv sleep),
 * executes commands and posts completions; ring objects are finalised on the reaper thread
 * (or the request thread of an explicit destroy) and wait only for the dispatcher's short,
 * bounded pass over that ring, never the other way round.
 *
 * Ring attach flags: bits 0..7 the device the ring's commands address; bit 8..31 must be 0.
 * Completions: in command order. Host backend: every command runs synchronously on the
 * dispatcher. CUDA backend: commands are enqueued on a worker stream per (ring, client
 * stream) and complete when their event has fired; a tenant's asynchronous errors, guard
 * violations (strict mode) and time-limit overruns surface at its next BARRIER only.
 *
 * MODULE_FUNCTION reply: param_sizes holds, per parameter, u32 size and u32 offset in the
 * args buffer of LAUNCH (CUDA's parameter layout, from the PTX's types and .align).
 * MOD_OP: agile__worker_mod_exec (modules.h) with the ring's device in the op.
 *
 * MODULE_LOAD flags: bit 0 = strict guard mode, bit 1 = no guard (TEST ONLY, see below). On the host backend a module is guarded and
 * verified but not compiled (there is no GPU to run it): its functions report their
 * parameters, and launching them gives AGILE_ENOTSUP.
 */
#ifndef AGILE_WORKER_DATAPLANE_H
#define AGILE_WORKER_DATAPLANE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

struct agile__worker;
struct agile__session;

#define AGILE_RING_ATTACH_DEV_MASK 0xffu
#define AGILE_MODULE_LOAD_STRICT 0x1u
/* TEST ONLY: no guard, for the fault-containment tests; refused (AGILE_EPERM) unless the
 * worker's environment has AGILE_TEST_UNGUARDED_UID equal to the caller's uid. */
#define AGILE_MODULE_LOAD_TEST_UNGUARDED 0x2u
/* SIGNAL/WAIT: 32-bit counters in the tenant's window (the cross-process stream order
 * counters); WAIT's cond: */
enum { AGILE_WAIT_GEQ = 0, AGILE_WAIT_EQ = 1 };

/* Control-plane handlers: fill rep's reply record; on error return it with a message in err.
 * Blobs in rep stay valid until the calling thread's next call of the same handler. */
int agile__dp_ring_attach(struct agile__worker *w, struct agile__session *s, const agile__msg *req,
                          agile__msg *rep, char *err, size_t errcap);
int agile__dp_module_load(struct agile__worker *w, struct agile__session *s, const agile__msg *req,
                          agile__msg *rep, char *err, size_t errcap);
int agile__dp_module_unload(struct agile__worker *w, struct agile__session *s,
                            const agile__msg *req, agile__msg *rep, char *err, size_t errcap);
int agile__dp_module_function(struct agile__worker *w, struct agile__session *s,
                              const agile__msg *req, agile__msg *rep, char *err, size_t errcap);

/* agile__dataplane_fini: stop the dispatcher. Every ring must be gone (sessions reaped). */
void agile__dataplane_fini(struct agile__worker *w);

/* Fault containment (cuda): an error of a lost context (a sticky error,
 * agile__backend_err_lost) seen at a completion, at a module op or by any backend call
 * (agile__backend_fault_take) ends the pass; the dispatcher then names the suspect
 * (the tenants with launches in flight whose kernel never completed before; else every
 * tenant with launches or module ops in flight), posts AGILE_EFAULT on the suspects' rings
 * and AGILE_ERESET on everyone else's in-flight commands on that device (writing their
 * stream-order SIGNAL counters so the clients' streams go on), ends the suspects' sessions,
 * resets the context (agile__backend_reset: windows, leases and their data kept) and gives
 * the other rings new streams; modules and cuFFT plans are made again on first use. Where the
 * driver keeps the process's CUDA state lost after the fault (H200, driver 580: retain and
 * create fail with the fault's error), the worker ends itself the way SIGTERM does. */
typedef struct agile__dp_faults {
    uint64_t faults;       /* sticky errors seen (whether or not the reset then succeeded) */
    uint64_t resets;       /* context resets that succeeded */
    uint64_t recovery_ns;  /* the last recovery, fault seen to rings served again */
    uint64_t at_unix_ms;   /* when the last fault was seen */
    uint32_t uid;          /* the suspect of the last fault (UINT32_MAX: none in flight) */
    uint32_t victims;      /* other tenants whose in-flight work was lost */
    int32_t err;           /* the CUDA error (agile_err_cuda) */
    char kernel[64];       /* what the suspect ran: kernel name, "module op N", "unknown" */
} agile__dp_faults;

/* agile__dp_faults_get: device dev's record (zeroes when there was none). */
void agile__dp_faults_get(struct agile__worker *w, int dev, agile__dp_faults *out);

#endif
