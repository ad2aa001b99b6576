/* objtab.c — a client's table of worker objects (objtab.h): chained hashing on the handle. */
#include "objtab.h"

#include <stdlib.h>
#include <string.h>

#include "core.h"

struct agile__objent {
    uint64_t h;
    unsigned type;
    void *rec;
    agile__objtab_fini_fn fini;
    agile__objent *next;
};

static uint32_t slot(const agile__objtab *t, uint64_t h)
{
    return (uint32_t)((h ^ (h >> 29)) * 0x9e3779b97f4a7c15ull >> 32) & (t->nb - 1);
}

static void ent_free(agile__objent *e)
{
    if (e->fini) e->fini(e->rec);
    free(e->rec);
    free(e);
}

void agile__objtab_init(agile__objtab *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
}

void agile__objtab_fini(agile__objtab *t)
{
    for (uint32_t i = 0; i < t->nb; i++) {
        while (t->b[i]) {
            agile__objent *e = t->b[i];
            t->b[i] = e->next;
            ent_free(e);
        }
    }
    free(t->b);
    pthread_mutex_destroy(&t->mu);
    memset(t, 0, sizeof *t);
}

/* Double the buckets once entries outnumber them twice over; under t->mu. */
static int grow(agile__objtab *t)
{
    uint32_t nb = t->nb ? t->nb * 2 : 64, old = t->nb;
    agile__objent **ob = t->b, **b = calloc(nb, sizeof(agile__objent *));
    if (!b) return AGILE_ENOMEM;
    t->b = b;
    t->nb = nb;
    for (uint32_t i = 0; i < old; i++) {
        while (ob[i]) {
            agile__objent *e = ob[i];
            ob[i] = e->next;
            e->next = b[slot(t, e->h)];
            b[slot(t, e->h)] = e;
        }
    }
    free(ob);
    return AGILE_OK;
}

/* The link that points at h's entry (or at the chain's end); under t->mu, t->nb > 0. */
static agile__objent **find(agile__objtab *t, uint64_t h, unsigned type)
{
    agile__objent **pp = &t->b[slot(t, h)];
    while (*pp && ((*pp)->h != h || (*pp)->type != type))
        pp = &(*pp)->next;
    return pp;
}

int agile__objtab_add(agile__objtab *t, uint64_t h, unsigned type, void *rec,
                      agile__objtab_fini_fn fini)
{
    int rv = AGILE_OK;
    agile__objent *e = calloc(1, sizeof *e), **pp;
    if (!e) return AGILE_ENOMEM;
    e->h = h;
    e->type = type;
    e->rec = rec;
    e->fini = fini;
    pthread_mutex_lock(&t->mu);
    if (t->n >= 2 * t->nb && (rv = grow(t)) != AGILE_OK && !t->nb) {
        pthread_mutex_unlock(&t->mu);
        free(e);
        return rv;
    }
    pp = find(t, h, type);
    if (*pp) { /* stale: replaced */
        agile__objent *old = *pp;
        *pp = old->next;
        ent_free(old);
        t->n--;
    }
    e->next = t->b[slot(t, h)];
    t->b[slot(t, h)] = e;
    t->n++;
    pthread_mutex_unlock(&t->mu);
    return AGILE_OK;
}

int agile__objtab_get(agile__objtab *t, uint64_t h, unsigned type, void *out, size_t n)
{
    int found = 0;
    pthread_mutex_lock(&t->mu);
    if (t->nb) {
        agile__objent *e = *find(t, h, type);
        if (e) {
            memcpy(out, e->rec, n);
            found = 1;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

void *agile__objtab_take(agile__objtab *t, uint64_t h, unsigned type)
{
    void *rec = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->nb) {
        agile__objent **pp = find(t, h, type), *e = *pp;
        if (e) {
            *pp = e->next;
            rec = e->rec;
            free(e);
            t->n--;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rec;
}
