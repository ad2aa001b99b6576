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
 *
 *   [tenant 1000]             # by uid
 *   [tenant alice]            # or by user name (resolved at load time)
 *
 * The parser takes untrusted bytes (it is fuzzed): every error names the line.
 */
#ifndef AGILE_WORKER_CONFIG_H
#define AGILE_WORKER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define AGILE_MAX_TENANT_RULES 256
#define AGILE_MODULE_ALL 0xffffffffu

typedef struct agile__policy {
    uint64_t quota;      /* bytes per GPU */
    uint32_t modules;    /* bit i: module i allowed (AGILE_MODULE_ALL) */
    uint32_t priority;   /* 1..16 */
    uint32_t time_limit_ms;
    uint64_t lease_step;
} agile__policy;

typedef struct agile__config {
    agile__policy dflt;
    uint32_t nrules;
    struct {
        uint32_t uid;
        agile__policy pol;
    } rules[AGILE_MAX_TENANT_RULES];
} agile__config;

/* Known module names, bit = index. */
#define AGILE_MODULE_LIST(X) X(fft, 0) X(guard, 1)

void agile__config_defaults(agile__config *c);
/* Parse text (len bytes, need not be NUL-terminated). On error returns AGILE_ECONFIG and
 * writes "line N: reason" into err. */
int agile__config_parse(agile__config *c, const char *text, size_t len, char *err, size_t errcap);
int agile__config_load(agile__config *c, const char *path, char *err, size_t errcap);
const agile__policy *agile__config_policy(const agile__config *c, uint32_t uid);
/* Parse "64MiB", "8G", "1000": AGILE_EINVAL on junk or overflow. */
int agile__parse_size(const char *s, uint64_t *out);

#endif
