/* config.h — worker policy: per-tenant quota, allowed modules, priority, launch time limit.
 *
 * File format (documented in README "Configuration"); '#' starts a comment:
 *
 *   [default]                 # applies to every tenant without a section of its own
 *   quota = 8GiB              # bytes per GPU; suffixes K/M/G/T(iB), KB/MB/GB/TB (powers of 10)
 *   modules = fft             # comma-separated list, or "all" / "none"
 *   priority = 1              # 1..16: weight in the data-plane scheduler
 *   time_limit_ms = 10000     # per guarded launch; 0 = none
 *   lease_step = 64MiB        # growth step of leases
 *   max_sessions = 128        # sessions of one uid at a time (pending ones included)
 *   max_pending = 64          # connections of one uid not past HELLO yet
 *   max_objects = 65536       # handles of one uid (streams, events, leases, modules, ...)
 *   max_requests = 16         # slow control requests of one uid in flight at once (those
 *                             # that call the backend, the guard or a module)
 *   max_module_loads = 4      # MODULE_LOADs of one uid in flight at once
 *   max_module_bytes = 4MiB   # PTX bytes per MODULE_LOAD
 *
 *   [tenant 1000]             # by uid
 *   [tenant alice]            # or by user name (resolved at load time)
 *
 *   [worker]                  # the worker itself, not a tenant
 *   metrics_listen = http://127.0.0.1:9464   # Prometheus metrics at /metrics; off without
 *
 * SIGHUP reloads the file (worker/main.c): the new policies apply to every tenant's next
 * lease, session and request; a file that does not parse is refused and the old one kept.
 *
 * The parser takes untrusted bytes (it is fuzzed): every error names the line.
 */
#ifndef AGILE_WORKER_CONFIG_H
#define AGILE_WORKER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "agile/defs.h" /* AGILE_MODULE_ID_LIST, AGILE_MODULE_BIT */

#define AGILE_MAX_TENANT_RULES 256
/* Bounds of the per-uid limits: the worker's request contexts (AGILE_NCTX) and what one
 * message can carry (AGILE_WIRE_MAX_BODY, less room for the other fields). */
#define AGILE_CONFIG_MAX_REQUESTS 32u
#define AGILE_CONFIG_MAX_MODULE (15ull << 20)
#define AGILE_MODULE_ALL 0xffffffffu

typedef struct agile__policy {
    uint64_t quota;      /* bytes per GPU */
    uint32_t modules;    /* AGILE_MODULE_BIT(id): module id allowed (AGILE_MODULE_ALL) */
    uint32_t priority;   /* 1..16 */
    uint32_t time_limit_ms;
    uint64_t lease_step;
    /* Per-uid limits: no tenant can take what the worker shares among all of them. */
    uint32_t max_sessions, max_pending, max_objects, max_requests, max_module_loads;
    uint64_t max_module_bytes;
} agile__policy;

#define AGILE_METRICS_URL_MAX 128

typedef struct agile__config {
    agile__policy dflt;
    /* [worker] metrics_listen: "http://HOST:PORT" (checked by the parser), "" = off */
    char metrics_listen[AGILE_METRICS_URL_MAX];
    uint32_t nrules;
    struct {
        uint32_t uid;
        agile__policy pol;
    } rules[AGILE_MAX_TENANT_RULES];
} agile__config;

/* Modules whose ops are counted per tenant (metrics): all of AGILE_MODULE_ID_LIST. */
#define AGILE_MODULE_COUNTED AGILE_MODULE_ID_COUNT

void agile__config_defaults(agile__config *c);
/* Parse text (len bytes, need not be NUL-terminated). On error returns AGILE_ECONFIG and
 * writes "line N: reason" into err. */
int agile__config_parse(agile__config *c, const char *text, size_t len, char *err, size_t errcap);
int agile__config_load(agile__config *c, const char *path, char *err, size_t errcap);
const agile__policy *agile__config_policy(const agile__config *c, uint32_t uid);
/* "http://HOST:PORT": HOST a name, an IPv4 address or [IPv6], PORT 0..65535 (0: the kernel
 * picks one, see agilectl status --json "metrics_url"), nothing after. */
int agile__config_check_listen(const char *url);
/* Parse "64MiB", "8G", "1000": AGILE_EINVAL on junk or overflow. */
int agile__parse_size(const char *s, uint64_t *out);

#endif
