/* worker.h — the agile worker's internal state. One worker per runtime directory.
 *
 * Threads: NCTX request threads, each owning one nng rep context (a slow request holds
 * only its own context); one fd-socket thread (accept, SO_PEERCRED, token hand-out, hang-up
 * detection); one reaper thread that tears down dead sessions off the request path.
 * Locks: w->mu guards the session and tenant lists and tenant counters, and is never held
 * across a backend (GPU) call; a tenant's window lock (twin.c) serialises its window/lease
 * operations.
 */
#ifndef AGILE_WORKER_H
#define AGILE_WORKER_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include <nng/nng.h>

#include "agile/defs.h" /* AGILE_MAX_DEV */
#include "backend/backend.h"
#include "config.h"
#include "core.h"

#define AGILE_NCTX 32
#define AGILE_TOKEN_TTL_NS (10ull * 1000000000ull)
/* Trailing guard gap after each window: covers the widest fenced [reg+imm] access. */
#define AGILE_GUARD_GAP (2ull << 20)

typedef struct agile__tenant {
    uint32_t uid;
    agile__policy pol;
    uint64_t leased[AGILE_MAX_DEV];
    uint32_t sessions;
    uint64_t proto_errors;
    uint64_t quota_refusals;
    uint64_t timelimit_exceeded; /* data-plane ops past policy time_limit_ms (dataplane/) */
    /* Times one of its large host ops paused between pieces so that other work (another
     * tenant's, or its own other ring's) went first (dataplane/): dispatch fairness, seen. */
    _Atomic uint64_t host_op_pauses;
    uint64_t protected_bytes; /* module work areas etc. (worker/modules.c), all devices */
    uint64_t sink[AGILE_MAX_DEV]; /* its windows' sinks (twin.c), counted in the quota */
    struct agile__twin *twin;     /* its windows, one per device, shared by its sessions */
    /* Per-uid limits (policy max_*) and what they refused; under w->mu, except objs (the
     * object table's lock) and the in-flight counts (atomic). */
    uint32_t pending;           /* sessions not past HELLO */
    uint32_t pipes;             /* nng connections: at most max_sessions + max_pending */
    uint64_t pipe_refusals;     /* nng connections closed at once by that limit */
    uint64_t session_refusals;  /* connections refused: max_sessions */
    uint64_t pending_refusals;  /* connections refused: max_pending */
    agile__hacct objs;          /* handles of all its sessions; limit = max_objects */
    atomic_uint requests_inflight, loads_inflight;
    atomic_uint_fast64_t request_refusals; /* max_requests / max_module_loads */
    atomic_uint_fast64_t module_size_refusals; /* max_module_bytes */
    /* Counted for the metrics endpoint only (metrics.c): ring commands executed
     * (dataplane.c), MODULE_LOADs that succeeded and the access sites their guard fenced,
     * module ops that succeeded by module (modules.c; fft = 0). */
    atomic_uint_fast64_t ring_cmds, module_loads, guard_sites;
    atomic_uint_fast64_t module_ops[AGILE_MODULE_COUNTED];
    struct agile__tenant *next;
} agile__tenant;

typedef struct agile__twin agile__twin;

/* A free range in a window (offsets), for reusing released lease ranges. */
typedef struct agile__range {
    uint64_t off, size;
    struct agile__range *next;
} agile__range;

typedef struct agile__dwin {
    agile__window *win;
    uint64_t size;
    uint64_t top;         /* bump pointer */
    agile__range *free;   /* released ranges, sorted, coalesced */
    uint32_t users;       /* sessions that joined it (twin.c) */
} agile__dwin;

enum { SESS_PENDING = 1, SESS_ACTIVE = 2, SESS_DEAD = 3 };

typedef struct agile__session {
    uint32_t id;          /* owner id in the object table */
    uint64_t handle;      /* its SESSION handle */
    agile__tenant *tenant;
    uint32_t uid;
    pid_t pid;
    int fd;               /* the fd socket connection */
    uint64_t token[2];
    uint64_t token_expiry_ns;
    uint32_t pipe_id;     /* nng pipe, 0 until HELLO */
    int state;
    int refs;             /* under w->mu */
    int pending;          /* counted in its tenant's pending (under w->mu) */
    uint64_t created_ns;
    pthread_mutex_t mu;
    pthread_mutex_t fd_mu;
    uint64_t fd_seq;
    agile__dwin *win[AGILE_MAX_DEV]; /* its tenant's window per device, once joined (twin.h) */
    struct agile__worker *w;
    struct agile__session *next;
} agile__session;

typedef struct agile__worker {
    agile__backend *be;
    char backend_why[256];
    int ndev;
    agile__devinfo dev[AGILE_MAX_DEV];
    char dir[PATH_MAX / 2];
    char url[PATH_MAX];
    char fd_path[PATH_MAX];
    char lock_path[PATH_MAX];
    int lock_fd;
    int fd_listen;
    int wake[2];
    nng_socket sock;
    int sock_open;
    agile__htab objs;
    struct agile__dp *dp; /* data plane: rings and their dispatcher (worker/dataplane/) */
    struct agile__modules *mods; /* worker/modules.c */
    agile__config cfg;    /* replaced whole by a reload (SIGHUP), under mu */
    char config_path[PATH_MAX]; /* --config, absolute; "" without one */
    atomic_uint_fast64_t reloads, reload_failures;
    struct agile__metrics *metrics; /* the metrics endpoint (metrics.c), NULL when off */
    int shared;           /* --shared: status shows a uid its own tenant only */
    pthread_mutex_t mu;
    pthread_cond_t reap_cv;
    agile__session *sessions;
    agile__tenant *tenants;
    uint32_t next_session_id;
    uint64_t started_ns;
    atomic_uint_fast64_t proto_errors;
    atomic_uint_fast64_t requests;
    atomic_int stop;
    int nthreads;
    pthread_t ctx_threads[AGILE_NCTX];
    /* Each control thread's nng context and aio: owned here, not by the thread, so that
     * shutdown can cancel a thread's wait and close the socket only after every thread is
     * gone (a send on a context of a closed socket crashes nng 1.5). */
    struct agile__ctxslot {
        struct agile__worker *w;
        nng_ctx ctx;
        nng_aio *aio;
    } ctx_slots[AGILE_NCTX];
    atomic_int ctx_done; /* control threads that have left their loop */
    /* The nng connections counted in their tenant's `pipes` (admitted at ADD_PRE), under mu:
     * only these are uncounted at REM_POST, whatever events nng sends for refused ones. */
    uint32_t *admitted;
    size_t nadmitted, capadmitted;
    pthread_t fd_thread, reap_thread;
} agile__worker;

typedef struct agile__worker_opts {
    int backend;            /* 0 = auto, else AGILE_BACKEND_KIND_* */
    const char *runtime_dir; /* NULL: agile__runtime_dir() */
    const char *config;     /* NULL: defaults */
    int shared;             /* --shared: dir 0755, sockets 0666, every local uid may connect */
} agile__worker_opts;

/* Lifecycle (worker.c). init_core: config, backend, devices, object table; no listeners and
 * no threads, on a worker set up by agile__worker_zero (the fuzzer and unit tests drive agile__worker_handle on it). start: lock the runtime dir, open the backend, listen. */
void agile__worker_zero(agile__worker *w);
int agile__worker_init_core(agile__worker *w, int backend, const char *config, char *err,
                            size_t errcap);
int agile__worker_start(agile__worker *w, const agile__worker_opts *o, char *err, size_t errcap);
void agile__worker_request_stop(agile__worker *w);
/* Blocks until stop is requested, then releases everything and removes the socket files. */
void agile__worker_run_until_stopped(agile__worker *w);
void agile__worker_fini(agile__worker *w);

/* Sessions (session.c). A connection past its uid's max_sessions or max_pending is
 * AGILE_ELIMIT (*what: 1 sessions, 2 pending; *limit: the limit), past the worker's
 * AGILE_MAX_SESSIONS AGILE_EBUSY. */
#define AGILE_MAX_SESSIONS 4096
/* The tenant of uid, made (with the config's policy) on first use; w->mu held. NULL: no
 * memory. */
agile__tenant *agile__tenant_get_locked(agile__worker *w, uint32_t uid);
int agile__session_new(agile__worker *w, int fd, uint32_t uid, pid_t pid, agile__session **out);
int agile__session_new_limited(agile__worker *w, int fd, uint32_t uid, pid_t pid,
                               agile__session **out, uint32_t *what, uint32_t *limit);
agile__session *agile__session_by_pipe(agile__worker *w, uint32_t pipe_id); /* +ref */
agile__session *agile__session_bind(agile__worker *w, uint64_t tok_lo, uint64_t tok_hi,
                                    uint32_t pipe_id, uint32_t pipe_uid); /* +ref */
void agile__session_rele(agile__session *s);
/* Mark dead (idempotent) and wake the reaper; the teardown happens there. */
void agile__session_kill(agile__session *s, const char *why);
void agile__session_kill_pipe(agile__worker *w, uint32_t pipe_id);
/* Reaper body: tear down every dead session now. */
void agile__sessions_reap(agile__worker *w);
int agile__session_send_fd(agile__session *s, uint16_t kind, uint64_t handle, uint64_t a,
                           uint64_t b, int fd, uint64_t *seq);

/* The message handler (handlers.c): one request in, one reply out, whatever the bytes (a
 * malformed request gets an error reply). Never crashes on input. `pipe_id`/`pipe_uid`
 * identify the nng connection. The reply is written into *rep (a malloc()ed buffer the
 * caller frees) and its length into *replen; an error return (out of memory only) leaves
 * the answer to agile__worker_error_reply. */
int agile__worker_handle(agile__worker *w, uint32_t pipe_id, uint32_t pipe_uid,
                         const uint8_t *req, size_t reqlen, uint8_t **rep, size_t *replen);
/* A short error reply (status's message) to req, encoded into buf without allocating. */
int agile__worker_error_reply(const uint8_t *req, size_t reqlen, int status, uint8_t *buf,
                              size_t cap, size_t *len);

/* agile__worker_reload: read the --config file again (SIGHUP). A file that does not parse,
 * or a metrics address that cannot be listened on, is refused (the message in err) and the
 * running config kept; otherwise every tenant takes its new policy at once (its next lease,
 * session and request see it; what it holds stays). */
int agile__worker_reload(agile__worker *w, char *err, size_t errcap);

/* The metrics endpoint (metrics.c): Prometheus text format at URL/metrics, served by nng's
 * HTTP server. agile__metrics_listen moves it to url ("": off); on failure the old one goes
 * on. agile__metrics_url: where it listens (the port the kernel chose for port 0), "" when
 * off. agile__metrics_text: the page, malloc()ed. */
int agile__metrics_listen(agile__worker *w, const char *url, char *err, size_t errcap);
void agile__metrics_url(agile__worker *w, char *buf, size_t cap);
void agile__metrics_stop(agile__worker *w);
char *agile__metrics_text(agile__worker *w);

/* A copy of one tenant's counters (status.c), taken under w->mu. */
typedef struct agile__tenant_snap {
    uint32_t uid, sessions, priority;
    uint64_t quota, leased[AGILE_MAX_DEV], proto_errors, quota_refusals;
    uint64_t sink[AGILE_MAX_DEV]; /* its windows' sinks, counted in the quota (twin.h) */
    uint64_t protected_bytes;
    uint64_t timelimit_exceeded, host_op_pauses;
    uint32_t objs[AGILE_OBJ_MAX_];
    /* per-uid limits: the policy's, what is in use, what they refused */
    uint32_t pending, requests, loads, pipes;
    uint64_t pipe_refusals, session_refusals, pending_refusals, object_refusals, request_refusals,
        module_size_refusals;
    uint64_t ring_cmds, module_loads, guard_sites, module_ops[AGILE_MODULE_COUNTED];
    agile__policy pol;
} agile__tenant_snap;
/* The tenants viewer may see (AGILE_STATUS_ALL: all), calloc()ed into *out; their number. */
size_t agile__worker_snapshot(agile__worker *w, uint32_t viewer, agile__tenant_snap **out);

/* Status as JSON or text (status.c); malloc()ed, NUL-terminated. viewer: the uid asking;
 * on a --shared worker a uid other than root and the worker's sees its own tenant only
 * (AGILE_STATUS_ALL: every tenant). */
#define AGILE_STATUS_ALL UINT32_MAX
char *agile__worker_status(agile__worker *w, int json, uint32_t viewer);

#endif
