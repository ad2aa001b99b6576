/* core.h — agile's internal umbrella header (nng's nng_impl.h in spirit).
 * Internal non-static symbols are agile__*; nothing here is part of the public ABI. */
#ifndef AGILE_CORE_H
#define AGILE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agile/err.h"
#include "log.h"
#include "handle.h"
#include "wire.h"

/* AGILE_TRY: evaluate expr (an agile_err_t); on error store it in `rv` and jump to `out`.
 * Every function using it declares `int rv = AGILE_OK;` and has one `out:` cleanup label. */
#define AGILE_TRY(expr)                                                                            \
    do {                                                                                           \
        rv = (expr);                                                                               \
        if (rv != AGILE_OK)                                                                        \
            goto out;                                                                              \
    } while (0)

#define AGILE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define AGILE_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AGILE_MAX(a, b) ((a) > (b) ? (a) : (b))
#define AGILE_ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))

/* Monotonic clock in nanoseconds. */
uint64_t agile__now_ns(void);

/* Runtime directory: $AGILE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/agile, else /tmp/agile-$UID.
 * Writes at most cap bytes into buf; returns AGILE_ETOOBIG when it does not fit. */
int agile__runtime_dir(char *buf, size_t cap);

/* Fill buf with n bytes from the kernel's CSPRNG (getrandom). */
int agile__random(void *buf, size_t n);

#endif
