#ifndef AGILE_LOG_H
#define AGILE_LOG_H

#include <stdint.h>

/* Levels: messages at or above the level set by $AGILE_LOG (debug|info|warn|error; default
 * info) are written to stderr with a timestamp, the level and a tenant tag. */
typedef enum { AGILE_LOG_DEBUG, AGILE_LOG_INFO, AGILE_LOG_WARN, AGILE_LOG_ERROR } agile__log_level;

/* No tenant: the tag is left out. */
#define AGILE_NO_TENANT (-1L)

void agile__log(agile__log_level lvl, long tenant, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int agile__log_enabled(agile__log_level lvl);
/* agile__log_set_level: override $AGILE_LOG (tests, --verbose). */
void agile__log_set_level(agile__log_level lvl);

/* A token bucket for one kind of log line (one per call site: agile__log_limited): up to
 * `burst` lines at once, then one per `interval_ns`; lines over the limit are dropped and
 * counted, and the next line written says how many were. Refusals an attacker can provoke
 * at will must go through one, or they fill the disk. */
typedef struct agile__ratelimit {
    uint32_t burst;
    uint64_t interval_ns;
    uint64_t tokens_x, last_ns; /* tokens in units of interval_ns; 0 last_ns: full bucket */
    uint64_t suppressed;
    int started;
} agile__ratelimit;

#define AGILE_RATELIMIT_INIT(burst_, interval_ns_) {(burst_), (interval_ns_), 0, 0, 0, 0}

/* Take a token at time now_ns: 1 (write the line; *suppressed gets the lines dropped since
 * the last one written) or 0 (drop it, counted). Thread-safe. */
int agile__ratelimit_take(agile__ratelimit *rl, uint64_t now_ns, uint64_t *suppressed);

void agile__log_rl(agile__ratelimit *rl, agile__log_level lvl, long tenant, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* agile__log_limited(lvl, tenant, fmt, ...): agile__log with a bucket of its own for this
 * call site (10 lines, then 1 per second). */
#define agile__log_limited(lvl, tenant, ...)                                                       \
    do {                                                                                           \
        static agile__ratelimit agile__rl_ = AGILE_RATELIMIT_INIT(10, 1000000000ull);             \
        agile__log_rl(&agile__rl_, (lvl), (tenant), __VA_ARGS__);                                 \
    } while (0)

#define agile__debug(...) agile__log(AGILE_LOG_DEBUG, AGILE_NO_TENANT, __VA_ARGS__)
#define agile__info(...) agile__log(AGILE_LOG_INFO, AGILE_NO_TENANT, __VA_ARGS__)
#define agile__warn(...) agile__log(AGILE_LOG_WARN, AGILE_NO_TENANT, __VA_ARGS__)
#define agile__error(...) agile__log(AGILE_LOG_ERROR, AGILE_NO_TENANT, __VA_ARGS__)

#endif
