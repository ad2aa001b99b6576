/* handle.h — 64-bit object ids and the table that issues them.
 *
 * Layout of a handle: [63:56] type, [55:32] generation (never 0), [31:0] slot index.
 * A handle is only ever resolved through a table, together with the owner that asks:
 * a stale generation, a wrong type, a free slot or another owner's object is AGILE_EHANDLE.
 * Lookups take a reference under the table lock (hold/rele); removing a handle makes it
 * stale at once, and the object's fini runs when the last reference is released.
 *
 * Each owner's live handles are kept in per-type lists, so that releasing an owner's objects
 * costs O(its objects), in pieces (agile__htab_remove_owner_n) that let a caller interleave
 * several owners, and counting them costs O(types). Owners can be charged to an account
 * (a tenant) that limits how many objects all of them hold together.
 */
#ifndef AGILE_HANDLE_H
#define AGILE_HANDLE_H

#include <pthread.h>
#include <stdint.h>

/* X(name, value): the only list of object types. */
#define AGILE_OBJ_LIST(X)                                                                          \
    X(SESSION, 1)                                                                                  \
    X(LEASE, 2)                                                                                    \
    X(STREAM, 3)                                                                                   \
    X(EVENT, 4)                                                                                    \
    X(MODULE, 5)                                                                                   \
    X(FUNCTION, 6)                                                                                 \
    X(PLAN, 7)                                                                                     \
    X(RING, 8)

enum {
#define X(name, value) AGILE_OBJ_##name = value,
    AGILE_OBJ_LIST(X)
#undef X
    AGILE_OBJ_MAX_
};

const char *agile__obj_name(unsigned type);

#define AGILE_HANDLE_GEN_BITS 24u
#define AGILE_HANDLE_GEN_MASK ((1u << AGILE_HANDLE_GEN_BITS) - 1u)

static inline uint64_t agile__handle_make(unsigned type, uint32_t gen, uint32_t index)
{
    return ((uint64_t)(type & 0xffu) << 56) | ((uint64_t)(gen & AGILE_HANDLE_GEN_MASK) << 32) |
           index;
}
static inline unsigned agile__handle_type(uint64_t h) { return (unsigned)(h >> 56); }
static inline uint32_t agile__handle_gen(uint64_t h)
{
    return (uint32_t)(h >> 32) & AGILE_HANDLE_GEN_MASK;
}
static inline uint32_t agile__handle_index(uint64_t h) { return (uint32_t)h; }

typedef void (*agile__obj_fini_fn)(void *obj);

struct agile__hslot {
    void *obj;
    agile__obj_fini_fn fini;
    uint32_t gen;
    uint32_t refs; /* the table's own reference while live + holders */
    uint32_t owner;
    uint32_t next_free;
    uint32_t onext, oprev; /* the owner's list of live handles of this type */
    uint8_t type;
    uint8_t live;
};

/* What a group of owners (a tenant's sessions) holds together, under the table lock. */
typedef struct agile__hacct {
    uint32_t live;     /* live handles of every owner charged to it */
    uint32_t limit;    /* adds past it are refused with AGILE_ELIMIT (0: no limit);
                          SESSION handles are counted but never refused */
    uint64_t refusals; /* adds refused by the limit */
} agile__hacct;

struct agile__howner;

typedef struct agile__htab {
    pthread_mutex_t mu;
    struct agile__hslot *slots;
    uint32_t n;   /* slots in use or on the free list */
    uint32_t cap; /* allocated */
    uint32_t max; /* hard limit */
    uint32_t free_head;
    uint32_t live;
    struct agile__howner **owners; /* hash chains by owner id */
} agile__htab;

int agile__htab_init(agile__htab *t, uint32_t max_objects);
/* Frees the table; objects still in it are finalised (a shutdown path). */
void agile__htab_fini(agile__htab *t);
/* Charge owner's handles (present and future) to acct, which must outlive them. */
int agile__htab_set_account(agile__htab *t, uint32_t owner, agile__hacct *acct);
/* Insert obj: the table holds one reference; *h gets the new handle. AGILE_ENOMEM at max,
 * AGILE_ELIMIT past the owner's account limit. */
int agile__htab_add(agile__htab *t, unsigned type, uint32_t owner, void *obj,
                    agile__obj_fini_fn fini, uint64_t *h);
/* Resolve h for owner with the expected type and take a reference. */
int agile__htab_hold(agile__htab *t, uint64_t h, unsigned type, uint32_t owner, void **obj);
void agile__htab_rele(agile__htab *t, uint64_t h);
/* Make h stale and drop the table's reference. */
int agile__htab_remove(agile__htab *t, uint64_t h, unsigned type, uint32_t owner);
/* Remove every handle of owner, children (higher types) first; returns how many. */
uint32_t agile__htab_remove_owner(agile__htab *t, uint32_t owner);
/* Remove at most max handles of owner, children first; *left gets how many it still has. */
uint32_t agile__htab_remove_owner_n(agile__htab *t, uint32_t owner, uint32_t max,
                                    uint32_t *left);
/* Add owner's live handles by type: counts[type] += n (counts has AGILE_OBJ_MAX_ slots). */
void agile__htab_count_owner(agile__htab *t, uint32_t owner, uint32_t *counts);

#endif
