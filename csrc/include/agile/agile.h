/* agile/agile.h — libagile, the client C ABI of agile.
 *
 * A client process talks to the agile worker of its runtime directory: a control plane
 * (nng, DIR/agile.sock) and an fd socket (DIR/agile.fd.sock) through which the worker
 * learns the client's uid from the kernel and passes memory as file descriptors.
 * Every function returns agile_err_t (agile/err.h) unless it says otherwise; none aborts
 * the host process; all are thread-safe. When a call fails because the worker refused,
 * agile_last_error() gives the worker's message ("tenant 1000: lease ... exceeds quota").
 */
#ifndef AGILE_AGILE_H
#define AGILE_AGILE_H

#include <stddef.h>
#include <stdint.h>

#include "agile/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct agile_client agile_client;
typedef uint64_t agile_handle_t;

typedef struct agile_connect_opts {
    const char *runtime_dir; /* NULL: $AGILE_RUNTIME_DIR, $XDG_RUNTIME_DIR/agile, /tmp/agile-$UID */
    int timeout_ms;          /* 0: 10000. Covers starting a worker. */
    int no_autostart;        /* 1: fail with AGILE_ENOWORKER instead of starting a worker */
    const char *worker_path; /* NULL: $AGILE_WORKER, beside libagile, then $PATH */
    const char *backend;     /* for an autostarted worker: "auto" (NULL), "cuda", "host" */
} agile_connect_opts;

enum { AGILE_BACKEND_KIND_HOST = 1, AGILE_BACKEND_KIND_CUDA = 2 };

typedef struct agile_session_info {
    uint64_t session;   /* the session's handle */
    uint32_t tenant;    /* our uid, as the worker's kernel saw it */
    uint32_t backend;   /* AGILE_BACKEND_KIND_* */
    uint32_t ndev;
    uint32_t priority;
    uint64_t quota;     /* bytes per GPU */
    uint32_t worker_major, worker_minor;
} agile_session_info;

/* agile_connect: connect to (or start, then connect to) the worker and say HELLO.
 * Blocks up to opts->timeout_ms. On success *out is a new client the caller owns. */
AGILE_API int agile_connect(const agile_connect_opts *opts, agile_client **out);
/* agile_disconnect: say BYE, close both sockets and free c. Everything the session holds
 * in the worker is released (as it is when the process dies). */
AGILE_API void agile_disconnect(agile_client *c);
AGILE_API int agile_session_info_get(agile_client *c, agile_session_info *out);
/* agile_ping: one control-plane round trip. */
AGILE_API int agile_ping(agile_client *c);
/* agile_status: the worker's status (json=1: JSON, 0: a table). *text is malloc()ed: free
 * it with agile_free_string. */
AGILE_API int agile_status(agile_client *c, int json, char **text);
AGILE_API void agile_free_string(char *s);
/* agile_object_create / agile_object_destroy: streams and events in the worker's object
 * table (type: 3 = stream, 4 = event). Handles are checked by type, owner and generation. */
AGILE_API int agile_object_create(agile_client *c, unsigned type, int device, agile_handle_t *h);
AGILE_API int agile_object_destroy(agile_client *c, agile_handle_t h);
/* agile_last_error: the worker's message for this thread's last failed call ("" if none). */
AGILE_API const char *agile_last_error(void);

/* ---- raw protocol access (tests, agilectl, fuzzers): send one encoded request, get the
 * reply bytes (malloc()ed, free with agile_free_string). */
AGILE_API int agile_raw_request(agile_client *c, const void *req, size_t len, void **rep,
                                size_t *replen);

#ifdef __cplusplus
}
#endif
#endif
