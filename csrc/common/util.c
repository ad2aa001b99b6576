#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

uint64_t agile__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int agile__runtime_dir(char *buf, size_t cap)
{
    const char *e = getenv("AGILE_RUNTIME_DIR");
    int n;
    if (e && *e)
        n = snprintf(buf, cap, "%s", e);
    else if ((e = getenv("XDG_RUNTIME_DIR")) && *e)
        n = snprintf(buf, cap, "%s/agile", e);
    else
        n = snprintf(buf, cap, "/tmp/agile-%u", (unsigned)getuid());
    return (n < 0 || (size_t)n >= cap) ? AGILE_ETOOBIG : AGILE_OK;
}

int agile__random(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return agile_err_sys(errno);
        }
        p += r;
        n -= (size_t)r;
    }
    return AGILE_OK;
}
