/* sbuf.h — a growable byte buffer for the guard's output, report and edit texts
 * (internal). Allocation failure is sticky: appends after it do nothing and `oom` says so,
 * so callers check once at the end instead of after every append. */
#ifndef AGILE_GUARD_SBUF_H
#define AGILE_GUARD_SBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct agile_guard_sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} agile_guard_sbuf;

void agile_guard_sb_add(agile_guard_sbuf *b, const char *s, size_t n);
void agile_guard_sb_str(agile_guard_sbuf *b, const char *s);
void agile_guard_sb_printf(agile_guard_sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* agile_guard_sb_json: s[0..n) as a JSON string literal, quotes included. */
void agile_guard_sb_json(agile_guard_sbuf *b, const char *s, size_t n);
/* agile_guard_sb_take: NUL-terminate and hand the bytes to the caller (NULL after oom). */
char *agile_guard_sb_take(agile_guard_sbuf *b, size_t *len);
void agile_guard_sb_fini(agile_guard_sbuf *b);

#endif
