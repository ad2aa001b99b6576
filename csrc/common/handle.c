#include "core.h"

#include <stdlib.h>
#include <string.h>

#define NO_SLOT UINT32_MAX
#define OWNER_BUCKETS 1024u /* owners are sessions: a few thousand at most */

/* An owner's live handles: one list per type (children are released before parents). */
struct agile__howner {
    uint32_t owner;
    uint32_t total;
    uint32_t count[AGILE_OBJ_MAX_];
    uint32_t head[AGILE_OBJ_MAX_];
    agile__hacct *acct;
    struct agile__howner *next;
};

const char *agile__obj_name(unsigned type)
{
    switch (type) {
#define X(name, value)                                                                             \
    case value:                                                                                    \
        return #name;
        AGILE_OBJ_LIST(X)
#undef X
    default:
        return "?";
    }
}

int agile__htab_init(agile__htab *t, uint32_t max_objects)
{
    memset(t, 0, sizeof *t);
    if (max_objects == 0 || max_objects > (1u << 30))
        return AGILE_EINVAL;
    t->owners = calloc(OWNER_BUCKETS, sizeof(struct agile__howner *));
    if (!t->owners)
        return AGILE_ENOMEM;
    t->max = max_objects;
    t->free_head = NO_SLOT;
    pthread_mutex_init(&t->mu, NULL);
    return AGILE_OK;
}

/* Lock held. The owner's entry, created when asked to (NULL: none, or no memory). */
static struct agile__howner *owner_get(agile__htab *t, uint32_t owner, int create)
{
    struct agile__howner **pp = &t->owners[owner % OWNER_BUCKETS], *o;
    for (o = *pp; o; o = o->next)
        if (o->owner == owner)
            return o;
    if (!create || !(o = calloc(1, sizeof *o)))
        return NULL;
    o->owner = owner;
    for (unsigned ty = 0; ty < AGILE_OBJ_MAX_; ty++)
        o->head[ty] = NO_SLOT;
    o->next = *pp;
    *pp = o;
    return o;
}

/* Lock held: an owner without handles is forgotten (its account goes with it). */
static void owner_drop_if_empty(agile__htab *t, struct agile__howner *o)
{
    if (o->total)
        return;
    for (struct agile__howner **pp = &t->owners[o->owner % OWNER_BUCKETS]; *pp; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            free(o);
            return;
        }
    }
}

int agile__htab_set_account(agile__htab *t, uint32_t owner, agile__hacct *acct)
{
    struct agile__howner *o;
    pthread_mutex_lock(&t->mu);
    o = owner_get(t, owner, 1);
    if (o && o->acct != acct) {
        if (o->acct)
            o->acct->live -= o->total;
        o->acct = acct;
        if (acct)
            acct->live += o->total;
    }
    pthread_mutex_unlock(&t->mu);
    return o ? AGILE_OK : AGILE_ENOMEM;
}

/* Lock held: link slot i (live, owner and type set) into its owner's list. */
static void owner_link(struct agile__htab *t, struct agile__howner *o, uint32_t i)
{
    struct agile__hslot *s = &t->slots[i];
    s->oprev = NO_SLOT;
    s->onext = o->head[s->type];
    if (s->onext != NO_SLOT)
        t->slots[s->onext].oprev = i;
    o->head[s->type] = i;
    o->count[s->type]++;
    o->total++;
    if (o->acct)
        o->acct->live++;
}

static void owner_unlink(struct agile__htab *t, uint32_t i)
{
    struct agile__hslot *s = &t->slots[i];
    struct agile__howner *o = owner_get(t, s->owner, 0);
    if (!o)
        return; /* cannot happen: a live handle's owner has an entry */
    if (s->oprev != NO_SLOT)
        t->slots[s->oprev].onext = s->onext;
    else
        o->head[s->type] = s->onext;
    if (s->onext != NO_SLOT)
        t->slots[s->onext].oprev = s->oprev;
    s->onext = s->oprev = NO_SLOT;
    o->count[s->type]--;
    o->total--;
    if (o->acct)
        o->acct->live--;
    owner_drop_if_empty(t, o);
}

/* Called with the lock held; returns the fini to run after unlocking. */
static void slot_put(agile__htab *t, uint32_t i, void **obj, agile__obj_fini_fn *fini)
{
    struct agile__hslot *s = &t->slots[i];
    *obj = NULL;
    *fini = NULL;
    if (--s->refs)
        return;
    *obj = s->obj;
    *fini = s->fini;
    s->obj = NULL;
    s->fini = NULL;
    s->next_free = t->free_head;
    t->free_head = i;
}

void agile__htab_fini(agile__htab *t)
{
    for (uint32_t i = 0; i < t->n; i++) {
        struct agile__hslot *s = &t->slots[i];
        if (s->obj && s->fini)
            s->fini(s->obj);
    }
    free(t->slots);
    for (uint32_t b = 0; t->owners && b < OWNER_BUCKETS; b++) {
        for (struct agile__howner *o = t->owners[b], *n; o; o = n) {
            n = o->next;
            free(o);
        }
    }
    free(t->owners);
    pthread_mutex_destroy(&t->mu);
    memset(t, 0, sizeof *t);
}

int agile__htab_add(agile__htab *t, unsigned type, uint32_t owner, void *obj,
                    agile__obj_fini_fn fini, uint64_t *h)
{
    uint32_t i;
    int rv = AGILE_OK;
    struct agile__howner *o;
    if (type == 0 || type >= AGILE_OBJ_MAX_ || !h)
        return AGILE_EINVAL;
    pthread_mutex_lock(&t->mu);
    if (!(o = owner_get(t, owner, 1))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    if (o->acct && o->acct->limit && type != AGILE_OBJ_SESSION &&
        o->acct->live >= o->acct->limit) {
        o->acct->refusals++;
        rv = AGILE_ELIMIT;
        goto out;
    }
    if (t->free_head != NO_SLOT) {
        i = t->free_head;
        t->free_head = t->slots[i].next_free;
    } else {
        if (t->n == t->cap) {
            uint32_t ncap = t->cap ? t->cap * 2 : 64;
            struct agile__hslot *ns;
            if (ncap > t->max)
                ncap = t->max;
            if (ncap <= t->cap) {
                rv = AGILE_ENOMEM;
                goto out;
            }
            ns = realloc(t->slots, (size_t)ncap * sizeof *ns);
            if (!ns) {
                rv = AGILE_ENOMEM;
                goto out;
            }
            memset(ns + t->cap, 0, (size_t)(ncap - t->cap) * sizeof *ns);
            t->slots = ns;
            t->cap = ncap;
        }
        i = t->n++;
    }
    struct agile__hslot *s = &t->slots[i];
    s->gen = (s->gen + 1) & AGILE_HANDLE_GEN_MASK;
    if (s->gen == 0)
        s->gen = 1;
    s->obj = obj;
    s->fini = fini;
    s->refs = 1;
    s->owner = owner;
    s->type = (uint8_t)type;
    s->live = 1;
    t->live++;
    owner_link(t, o, i);
    *h = agile__handle_make(type, s->gen, i);
out:
    if (rv != AGILE_OK && o)
        owner_drop_if_empty(t, o);
    pthread_mutex_unlock(&t->mu);
    return rv;
}

/* Lock held. */
static struct agile__hslot *lookup(agile__htab *t, uint64_t h, unsigned type, uint32_t owner)
{
    uint32_t i = agile__handle_index(h);
    struct agile__hslot *s;
    if (i >= t->n || agile__handle_type(h) != type)
        return NULL;
    s = &t->slots[i];
    if (!s->live || s->gen != agile__handle_gen(h) || s->type != type || s->owner != owner)
        return NULL;
    return s;
}

int agile__htab_hold(agile__htab *t, uint64_t h, unsigned type, uint32_t owner, void **obj)
{
    struct agile__hslot *s;
    pthread_mutex_lock(&t->mu);
    s = lookup(t, h, type, owner);
    if (s) {
        s->refs++;
        *obj = s->obj;
    }
    pthread_mutex_unlock(&t->mu);
    return s ? AGILE_OK : AGILE_EHANDLE;
}

void agile__htab_rele(agile__htab *t, uint64_t h)
{
    void *obj;
    agile__obj_fini_fn fini;
    uint32_t i = agile__handle_index(h);
    pthread_mutex_lock(&t->mu);
    if (i >= t->n || t->slots[i].refs == 0) {
        pthread_mutex_unlock(&t->mu);
        return;
    }
    slot_put(t, i, &obj, &fini);
    pthread_mutex_unlock(&t->mu);
    if (fini)
        fini(obj);
}

static void remove_locked(agile__htab *t, uint32_t i, void **obj, agile__obj_fini_fn *fini)
{
    owner_unlink(t, i);
    t->slots[i].live = 0;
    t->live--;
    slot_put(t, i, obj, fini);
}

int agile__htab_remove(agile__htab *t, uint64_t h, unsigned type, uint32_t owner)
{
    void *obj = NULL;
    agile__obj_fini_fn fini = NULL;
    struct agile__hslot *s;
    pthread_mutex_lock(&t->mu);
    s = lookup(t, h, type, owner);
    if (s)
        remove_locked(t, agile__handle_index(h), &obj, &fini);
    pthread_mutex_unlock(&t->mu);
    if (fini)
        fini(obj);
    return s ? AGILE_OK : AGILE_EHANDLE;
}

uint32_t agile__htab_remove_owner_n(agile__htab *t, uint32_t owner, uint32_t max,
                                    uint32_t *left)
{
    enum { BATCH = 64 }; /* finis run outside the lock, a batch at a time */
    struct {
        void *obj;
        agile__obj_fini_fn fini;
    } batch[BATCH];
    uint32_t count = 0, rest = 0;
    for (;;) {
        uint32_t nb = 0;
        pthread_mutex_lock(&t->mu);
        struct agile__howner *o = owner_get(t, owner, 0);
        /* Children before parents: functions before modules, plans/leases before the
         * session. Unlinking may free the entry: its total is read first. */
        while (o && nb < BATCH && count + nb < max) {
            uint32_t total = o->total, i = NO_SLOT;
            for (unsigned type = AGILE_OBJ_MAX_ - 1; type >= 1 && i == NO_SLOT; type--)
                i = o->head[type];
            if (i == NO_SLOT)
                break;
            remove_locked(t, i, &batch[nb].obj, &batch[nb].fini);
            nb++;
            if (total == 1)
                o = NULL; /* that was its last handle: the entry is gone */
        }
        rest = o ? o->total : 0;
        pthread_mutex_unlock(&t->mu);
        for (uint32_t k = 0; k < nb; k++)
            if (batch[k].fini)
                batch[k].fini(batch[k].obj);
        count += nb;
        if (nb == 0 || rest == 0 || count >= max)
            break;
    }
    if (left)
        *left = rest;
    return count;
}

uint32_t agile__htab_remove_owner(agile__htab *t, uint32_t owner)
{
    return agile__htab_remove_owner_n(t, owner, UINT32_MAX, NULL);
}

void agile__htab_count_owner(agile__htab *t, uint32_t owner, uint32_t *counts)
{
    pthread_mutex_lock(&t->mu);
    struct agile__howner *o = owner_get(t, owner, 0);
    for (unsigned ty = 0; o && ty < AGILE_OBJ_MAX_; ty++)
        counts[ty] += o->count[ty];
    pthread_mutex_unlock(&t->mu);
}
