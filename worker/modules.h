/* modules.h — the worker's registry of trusted modules (modules/module.h ABI): init at
 * worker start, MOD_CTL on the control plane, data-plane ops (also reached from the ring
 * dispatcher), per-session teardown, fini at shutdown.
 *
 * Identity: a module sees the session id as its "tenant" (agile__module_caller.tenant), so
 * everything it owns is per session and goes away with the session; protected memory it
 * allocates is counted in the session's tenant (agile__tenant.protected_bytes, status JSON
 * "protected_bytes"). Handles a module issues live in w->objs (owner = session id).
 *
 * Policy: a session may use module id only if its tenant's policy has AGILE_MODULE_BIT(id)
 * (AGILE_MODULE_ID_LIST, agile/defs.h); otherwise AGILE_EPERM, on the control and the data plane.
 *
 * Threads: ctl and exec run on any request or dispatcher thread. Teardown of a session
 * (agile__worker_modules_session_gone) waits for every module call in flight, so a module's
 * tenant_gone never races an exec of that session on the control plane; data-plane callers
 * must synchronise the session's worker streams before the reaper gets to it.
 */
#ifndef AGILE_WORKER_MODULES_H
#define AGILE_WORKER_MODULES_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

struct agile__worker;
struct agile__session;

/* Data-plane op numbers for agile__worker_mod_exec: the module's op in bits 0..15, the device
 * the op's addresses belong to in bits 16..23 (the ring knows it from its attach flags). */
#define AGILE_MOD_EXEC_OP(op, dev) (((uint32_t)(op)&0xffffu) | (((uint32_t)(dev)&0xffu) << 16))

/* agile__worker_modules_init: init every module the worker knows. A module whose init
 * fails (no cuFFT on a cuda machine) is logged and reported as unavailable to its callers;
 * only an out-of-memory error fails the worker. */
int agile__worker_modules_init(struct agile__worker *w);
/* agile__worker_modules_fini: after every session is reaped and w->objs is finalised. */
void agile__worker_modules_fini(struct agile__worker *w);
/* agile__worker_modules_session_gone: s is dead and its objects are removed: drop what the
 * modules hold for it (work areas), after waiting for its module calls in flight. */
void agile__worker_modules_session_gone(struct agile__worker *w, struct agile__session *s);

/* agile__worker_mod_ctl: the MOD_CTL handler. Fills rep->u.mod_ctl_rep; its payload blob
 * stays valid until this thread's next call. On error returns it with a message in err.
 * Blocks (plan creation; with AGILE_MODULE_CTL_EXEC until the op has completed). */
int agile__worker_mod_ctl(struct agile__worker *w, struct agile__session *s, const agile__msg *req,
                          agile__msg *rep, char *err, size_t errcap);

/* agile__worker_mod_exec: run data-plane op `op` (AGILE_MOD_EXEC_OP) of `module` for s with
 * args[0..len) (untrusted) on the worker stream `stream` (a CUstream; NULL on host, and the
 * legacy stream on cuda). Asynchronous on cuda: errors found before enqueueing are returned.
 * Client addresses in args are translated into and bounds-checked against s's window on
 * that device by the module. AGILE_EPERM (policy), AGILE_ENODEV (module unavailable),
 * AGILE_EBOUNDS (no window on the device yet), AGILE_ECLOSED (session dying), or the
 * module's error. */
int agile__worker_mod_exec(struct agile__worker *w, struct agile__session *s, uint32_t module,
                           uint32_t op, const void *args, size_t len, void *stream);

#endif
