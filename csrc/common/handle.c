#include "core.h"

#include <stdlib.h>
#include <string.h>

#define NO_SLOT UINT32_MAX

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
    t->max = max_objects;
    t->free_head = NO_SLOT;
    pthread_mutex_init(&t->mu, NULL);
    return AGILE_OK;
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
    pthread_mutex_destroy(&t->mu);
    memset(t, 0, sizeof *t);
}

int agile__htab_add(agile__htab *t, unsigned type, uint32_t owner, void *obj,
                    agile__obj_fini_fn fini, uint64_t *h)
{
    uint32_t i;
    int rv = AGILE_OK;
    if (type == 0 || type >= AGILE_OBJ_MAX_ || !h)
        return AGILE_EINVAL;
    pthread_mutex_lock(&t->mu);
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
    *h = agile__handle_make(type, s->gen, i);
out:
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

uint32_t agile__htab_remove_owner(agile__htab *t, uint32_t owner)
{
    uint32_t count = 0;
    /* Children before parents: functions before modules, plans/leases before the session. */
    for (unsigned type = AGILE_OBJ_MAX_ - 1; type >= 1; type--) {
        for (;;) {
            void *obj = NULL;
            agile__obj_fini_fn fini = NULL;
            int found = 0;
            pthread_mutex_lock(&t->mu);
            for (uint32_t i = 0; i < t->n; i++) {
                struct agile__hslot *s = &t->slots[i];
                if (s->live && s->owner == owner && s->type == type) {
                    remove_locked(t, i, &obj, &fini);
                    found = 1;
                    break;
                }
            }
            pthread_mutex_unlock(&t->mu);
            if (!found)
                break;
            count++;
            if (fini)
                fini(obj);
        }
    }
    return count;
}

void agile__htab_count_owner(agile__htab *t, uint32_t owner, uint32_t *counts)
{
    pthread_mutex_lock(&t->mu);
    for (uint32_t i = 0; i < t->n; i++) {
        struct agile__hslot *s = &t->slots[i];
        if (s->live && s->owner == owner && s->type < AGILE_OBJ_MAX_)
            counts[s->type]++;
    }
    pthread_mutex_unlock(&t->mu);
}
