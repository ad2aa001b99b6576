/* module.h — the worker <-> module operations table (adopted from the fft module's proposal;
 * the worker's registry is worker/modules.c). The worker registers a module by its
 * `const agile__module_ops` and calls it only through it; a module never calls back into
 * the worker except through the function pointers it is given in agile__module_env.
 *
 * Versioning: abi is AGILE_MODULE_ABI (the layout of this table and of the structs below);
 * the worker refuses a module with another abi. version is the module's own version, reported
 * to clients. New members are appended; a module's abi_size lets the worker know which
 * members exist.
 *
 * Threads: ctl and exec may be called concurrently from several worker threads, for
 * different tenants and for the same tenant; a module synchronises its own state.
 * Contexts: on the cuda backend the worker makes the caller's device context current
 * (agile__backend_enter) around init/ctl/exec/tenant_gone/fini.
 */
#ifndef AGILE_MODULE_H
#define AGILE_MODULE_H

#include <stddef.h>
#include <stdint.h>

#define AGILE_MODULE_ABI 1u

struct agile__htab;

/* A tenant's window on one device, as the worker knows it. size is W = 2^k; a client
 * address translates as worker_addr = (client_addr & (size - 1)) | worker_base, and the
 * module checks every extent against [worker_base, worker_base + size). */
typedef struct agile__module_window {
    uint64_t worker_base;
    uint64_t size;
} agile__module_window;

/* Who is calling: identity from the worker (SO_PEERCRED), never from the message. */
typedef struct agile__module_caller {
    uint32_t tenant;
    int device;
    agile__module_window win;
    void *stream; /* worker stream paired with the client's stream (data plane); NULL on ctl */
} agile__module_caller;

/* What the worker gives a module at init. */
typedef struct agile__module_env {
    uint32_t abi;
    int backend; /* 1: host, 2: cuda (worker/backend's AGILE_BACKEND_* values) */
    /* Protected memory: outside every window, never exported, accounted to tenant. */
    int (*alloc_protected)(void *ctx, uint32_t tenant, int device, uint64_t size, uint64_t *addr,
                           void **handle);
    void (*free_protected)(void *ctx, uint32_t tenant, int device, void *handle, uint64_t addr,
                           uint64_t size);
    void *ctx;
    const char *config; /* module section of the worker config (may be NULL) */
    /* Appended in abi 1 by the worker: its object table. A module that issues handles to
     * clients issues them here (owner = who->tenant, the worker's session id), so that a
     * stale, forged or foreign handle is AGILE_EHANDLE everywhere, status counts them, and
     * the worker's per-session teardown frees them (the objects' fini must then only touch
     * module state, which outlives every tenant: fini comes after all tenants are gone).
     * NULL: the module keeps a table of its own (tests). */
    struct agile__htab *objs;
} agile__module_env;

/* A ctl reply: handle (0 if none) and a payload the module writes into the worker's buffer. */
typedef struct agile__module_reply {
    uint64_t handle;
    uint8_t *payload;
    size_t cap, len;
} agile__module_reply;

typedef struct agile__module_ops {
    const char *name;  /* "fft" */
    uint32_t abi;      /* AGILE_MODULE_ABI */
    uint32_t abi_size; /* sizeof(agile__module_ops) the module was built with */
    uint32_t version;
    /* init: one instance per worker; *state is passed to every other op. */
    int (*init)(const agile__module_env *env, void **state);
    /* fini: after every tenant is gone; frees everything. */
    void (*fini)(void *state);
    /* ctl: a control-plane request (mod_ctl_req: op + payload, untrusted). */
    int (*ctl)(void *state, const agile__module_caller *who, uint32_t op, const uint8_t *payload,
               size_t len, agile__module_reply *rep);
    /* exec: a data-plane op from the tenant's ring (args untrusted). Asynchronous on
     * who->stream; errors found before enqueueing are returned here. */
    int (*exec)(void *state, const agile__module_caller *who, uint32_t op, const uint8_t *args,
                size_t len);
    /* tenant_gone: the tenant disconnected and its streams are synchronised: drop all its
     * objects and protected memory. */
    void (*tenant_gone)(void *state, uint32_t tenant);
} agile__module_ops;

#endif
