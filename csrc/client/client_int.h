/* client_int.h — libagile internals shared by the client's source files. */
#ifndef AGILE_CLIENT_INT_H
#define AGILE_CLIENT_INT_H

#include <limits.h>
#include <pthread.h>

#include <nng/nng.h>

#include "agile/agile.h"
#include "alloc.h"
#include "core.h"
#include "cwin.h"
#include "evpool.h"
#include "objtab.h"

/* fd records that arrived before the caller that waits for them asked. */
typedef struct agile__fdstash {
    uint64_t seq;
    uint16_t kind;
    uint64_t handle, a, b;
    int fd;
    struct agile__fdstash *next;
} agile__fdstash;

typedef struct agile__cl_lease agile__cl_lease;

/* One device of a client (memory.c): its window, the sub-allocator arena in it, the leases
 * mapped there and the CUevent pool of the arena's stream-aware reuse. */
typedef struct agile__cl_dev {
    pthread_mutex_t mu; /* setup and the lease list; the arena has its own locks */
    int ready;          /* set (release) once window and arena are up */
    int dev;
    agile_client *c; /* the owner, for the arena's callbacks */
    agile__cwin *cw;
    uint64_t base, size, quota;
    agile__arena arena;
    agile__cl_lease *leases;
    agile__evpool evpool;
} agile__cl_dev;

/* A client: its connection to the worker and everything its session made in this process.
 * agile_disconnect frees all of it (session.c). */
struct agile_client {
    /* connection (client.c) */
    nng_socket sock;
    int fd;
    char dir[PATH_MAX / 2];
    agile_session_info info;
    int timeout_ms;
    pthread_mutex_t fd_mu;
    agile__fdstash *stash;
    uint64_t next_req;
    pid_t worker_pid;
    unsigned fork_gen; /* agile__fork_gen() when connected */
    /* memory (memory.c) */
    agile__cl_dev dev[AGILE_MAX_DEV];
    /* data plane (ring_client.c) */
    pthread_mutex_t ring_mu;                      /* attaching rings */
    struct agile__cring *ring[AGILE_MAX_DEV]; /* command ring per device, NULL until first use */
    /* modules, functions (ring_client.c) and fft plans (fft.c) the worker made for us */
    agile__objtab objs;
};

/* One request/reply round trip on its own nng context (callers may be concurrent).
 * m->h.type and the request record are filled by the caller; on success *rep holds the
 * decoded reply whose blobs point into *buf (free(*buf) when done). A reply with a
 * non-zero status returns that status and sets agile_last_error(). */
int agile__call(agile_client *c, agile__msg *m, agile__msg *rep, uint8_t **buf);
/* Wait for the fd record `seq` (from a LEASE_GROW/RING_ATTACH reply). *fd is owned by the
 * caller on success. */
int agile__recv_fd(agile_client *c, uint64_t seq, uint64_t *handle, uint64_t *a, uint64_t *b,
                   int *fd);
/* Counts the forks this process has gone through (a pthread_atfork child handler). A client
 * or ring made before the last fork belongs to the parent: its threads and nng's are not in
 * this process, and nng panics if it is used here. */
unsigned agile__fork_gen(void);
/* The default client if it is connected, else NULL; never connects. */
agile_client *agile__default_peek(void);
/* agile_disconnect forgets c as the default client if it is that (a later implicit call
 * connects a new one). */
void agile__default_forget(agile_client *c);

/* Teardown of what each part made, in the order agile_disconnect (session.c) calls them:
 * rings (ring_client.c: reapers joined, streams released), the object table, the connection
 * (client.c: BYE, sockets), memory (memory.c: arenas, windows, event pools). In a forked
 * child the driver is not touched: the window copies are the parent's. */
void agile__rings_close(agile_client *c);
void agile__conn_close(agile_client *c);
void agile__mem_close(agile_client *c);

/* Memory of client c (memory.c), for its own rings: like agile_malloc / agile_free. */
void *agile__malloc(agile_client *c, size_t size, int device, void *stream);
void agile__free(agile_client *c, void *ptr, size_t size, int device, void *stream);
void agile__set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
