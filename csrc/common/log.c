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

void agile__log(agile__log_level lvl, long tenant, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    if (!agile__log_enabled(lvl))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ agile[%d] %-5s ",
                          ts.tv_nsec / 1000000, (int)getpid(), names[lvl]);
    if (tenant != AGILE_NO_TENANT && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n, "[tenant %ld] ", tenant);
    if (n < sizeof line) {
        va_start(ap, fmt);
        n += (size_t)vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
    }
    if (n >= sizeof line - 1)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line so lines of concurrent threads never interleave. */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}
