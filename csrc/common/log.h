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

#define agile__debug(...) agile__log(AGILE_LOG_DEBUG, AGILE_NO_TENANT, __VA_ARGS__)
#define agile__info(...) agile__log(AGILE_LOG_INFO, AGILE_NO_TENANT, __VA_ARGS__)
#define agile__warn(...) agile__log(AGILE_LOG_WARN, AGILE_NO_TENANT, __VA_ARGS__)
#define agile__error(...) agile__log(AGILE_LOG_ERROR, AGILE_NO_TENANT, __VA_ARGS__)

#endif
