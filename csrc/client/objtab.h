/* objtab.h — what a client knows about the objects the worker made for it (modules,
 * functions, fft plans), keyed by the worker's handle. Internal to libagile.
 *
 * A worker handle carries its object's type and generation (common/handle.h), so an entry
 * matches only the exact handle it was made for: a stale handle (a slot reused since) or one
 * of another type finds nothing. Records are copied out under the table's lock, so a
 * concurrent removal never leaves a caller with freed memory; agile__objtab_fini frees
 * whatever is left (agile_disconnect). */
#ifndef AGILE_OBJTAB_H
#define AGILE_OBJTAB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct agile__objent agile__objent;

typedef struct agile__objtab {
    pthread_mutex_t mu;
    agile__objent **b; /* hash chains */
    uint32_t nb, n;    /* buckets (a power of two or 0), entries */
} agile__objtab;

/* Frees what a record owns besides itself (NULL: nothing). */
typedef void (*agile__objtab_fini_fn)(void *rec);

void agile__objtab_init(agile__objtab *t);
/* Frees every record left (their fini first) and the table. */
void agile__objtab_fini(agile__objtab *t);
/* Add rec (malloc()ed, the table takes it) for handle h of `type` (AGILE_OBJ_*); a record
 * for h already there is stale (the worker issues a handle once) and is replaced.
 * AGILE_ENOMEM: rec was not taken. */
int agile__objtab_add(agile__objtab *t, uint64_t h, unsigned type, void *rec,
                      agile__objtab_fini_fn fini);
/* Copy the first n bytes of h's record into out: 1 if found, 0 if not. */
int agile__objtab_get(agile__objtab *t, uint64_t h, unsigned type, void *out, size_t n);
/* Take h's record out of the table: the caller owns it (NULL: not found). */
void *agile__objtab_take(agile__objtab *t, uint64_t h, unsigned type);

#endif
