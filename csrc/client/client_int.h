/* client_int.h — libagile internals shared by the client's source files. */
#ifndef AGILE_CLIENT_INT_H
#define AGILE_CLIENT_INT_H

#include <limits.h>
#include <pthread.h>

#include <nng/nng.h>

#include "agile/agile.h"
#include "core.h"

/* fd records that arrived before the caller that waits for them asked. */
typedef struct agile__fdstash {
    uint64_t seq;
    uint16_t kind;
    uint64_t handle, a, b;
    int fd;
    struct agile__fdstash *next;
} agile__fdstash;

struct agile_client {
    nng_socket sock;
    int fd;
    char dir[PATH_MAX / 2];
    agile_session_info info;
    int timeout_ms;
    pthread_mutex_t fd_mu;
    agile__fdstash *stash;
    uint64_t next_req;
    pid_t worker_pid;
    unsigned fork_gen;            /* agile__fork_gen() when connected */
    pthread_mutex_t ring_mu;      /* attaching rings (ring_client.c) */
    struct agile__cring *ring[16]; /* command ring per device, NULL until first use */
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
/* Detach and free c's rings (ring_client.c); agile_disconnect calls it. */
void agile__rings_close(agile_client *c);
void agile__set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
