/* sbuf.c — see sbuf.h. */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(agile_guard_sbuf *b, size_t extra)
{
    size_t nc;
    char *np;
    if (b->oom) return false;
    if (b->n + extra + 1 <= b->cap) return true;
    nc = b->cap ? b->cap : 256;
    while (nc < b->n + extra + 1) {
        if (nc > ((size_t)1 << 40)) {
            b->oom = true;
            return false;
        }
        nc *= 2;
    }
    np = realloc(b->p, nc);
    if (np == NULL) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = nc;
    return true;
}

void agile_guard_sb_add(agile_guard_sbuf *b, const char *s, size_t n)
{
    if (n == 0 || !reserve(b, n)) return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

void agile_guard_sb_str(agile_guard_sbuf *b, const char *s)
{
    agile_guard_sb_add(b, s, strlen(s));
}

void agile_guard_sb_printf(agile_guard_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int k;
    char small[256];
    va_start(ap, fmt);
    k = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (k < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)k < sizeof(small)) {
        agile_guard_sb_add(b, small, (size_t)k);
        return;
    }
    if (!reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

void agile_guard_sb_json(agile_guard_sbuf *b, const char *s, size_t n)
{
    agile_guard_sb_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            agile_guard_sb_add(b, e, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            agile_guard_sb_printf(b, "\\u%04x", c);
        } else {
            agile_guard_sb_add(b, (const char *)&s[i], 1);
        }
    }
    agile_guard_sb_add(b, "\"", 1);
}

char *agile_guard_sb_take(agile_guard_sbuf *b, size_t *len)
{
    char *p;
    if (!reserve(b, 0)) {
        agile_guard_sb_fini(b);
        return NULL;
    }
    b->p[b->n] = '\0';
    p = b->p;
    if (len) *len = b->n;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

void agile_guard_sb_fini(agile_guard_sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}
