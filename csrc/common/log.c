#include "core.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_level = -1;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_init(void)
{
    const char *e = getenv("AGILE_LOG");
    if (log_level >= 0)
        return;
    log_level = AGILE_LOG_INFO;
    if (!e)
        return;
    if (!strcmp(e, "debug"))
        log_level = AGILE_LOG_DEBUG;
    else if (!strcmp(e, "warn"))
        log_level = AGILE_LOG_WARN;
    else if (!strcmp(e, "error"))
        log_level = AGILE_LOG_ERROR;
}

void agile__log_set_level(agile__log_level lvl)
{
    pthread_once(&log_once, log_init);
    __atomic_store_n(&log_level, (int)lvl, __ATOMIC_RELAXED);
}

int agile__log_enabled(agile__log_level lvl)
{
    pthread_once(&log_once, log_init);
    return (int)lvl >= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

static void log_v(agile__log_level lvl, long tenant, uint64_t suppressed, const char *fmt,
                  va_list ap) __attribute__((format(printf, 4, 0)));

void agile__log(agile__log_level lvl, long tenant, const char *fmt, ...)
{
    va_list ap;
    if (!agile__log_enabled(lvl))
        return;
    va_start(ap, fmt);
    log_v(lvl, tenant, 0, fmt, ap);
    va_end(ap);
}

static pthread_mutex_t rl_mu = PTHREAD_MUTEX_INITIALIZER;

int agile__ratelimit_take(agile__ratelimit *rl, uint64_t now_ns, uint64_t *suppressed)
{
    int ok = 0;
    const uint64_t iv = rl->interval_ns ? rl->interval_ns : 1;
    const uint64_t full = (uint64_t)(rl->burst ? rl->burst : 1) * iv;
    pthread_mutex_lock(&rl_mu);
    if (!rl->started) {
        rl->started = 1;
        rl->tokens_x = full;
    } else if (now_ns > rl->last_ns) {
        uint64_t add = now_ns - rl->last_ns;
        rl->tokens_x = add >= full - rl->tokens_x ? full : rl->tokens_x + add;
    }
    rl->last_ns = now_ns > rl->last_ns ? now_ns : rl->last_ns;
    if (rl->tokens_x >= iv) {
        rl->tokens_x -= iv;
        *suppressed = rl->suppressed;
        rl->suppressed = 0;
        ok = 1;
    } else {
        rl->suppressed++;
    }
    pthread_mutex_unlock(&rl_mu);
    return ok;
}

void agile__log_rl(agile__ratelimit *rl, agile__log_level lvl, long tenant, const char *fmt, ...)
{
    uint64_t suppressed = 0;
    va_list ap;
    if (!agile__log_enabled(lvl) || !agile__ratelimit_take(rl, agile__now_ns(), &suppressed))
        return;
    va_start(ap, fmt);
    log_v(lvl, tenant, suppressed, fmt, ap);
    va_end(ap);
}

static void log_v(agile__log_level lvl, long tenant, uint64_t suppressed, const char *fmt,
                  va_list ap)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ agile[%d] %-5s ",
                          ts.tv_nsec / 1000000, (int)getpid(), names[lvl]);
    if (tenant != AGILE_NO_TENANT && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n, "[tenant %ld] ", tenant);
    if (n < sizeof line)
        n += (size_t)vsnprintf(line + n, sizeof line - n, fmt, ap);
    if (suppressed && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n, " (%llu similar lines suppressed)",
                              (unsigned long long)suppressed);
    if (n >= sizeof line - 1)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line so lines of concurrent threads never interleave. */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}
