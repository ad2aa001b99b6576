/* twin.c — tenant windows (see twin.h). */
#include "twin.h"

#include <stdlib.h>

struct agile__twin {
    pthread_mutex_t mu; /* serialises the tenant's window and lease operations */
    agile__dwin dw[AGILE_MAX_DEV];
};

static agile__twin *twin_of(agile__worker *w, agile__tenant *t)
{
    agile__twin *tw;
    pthread_mutex_lock(&w->mu);
    if (!t->twin && (t->twin = calloc(1, sizeof *t->twin))) pthread_mutex_init(&t->twin->mu, NULL);
    tw = t->twin;
    pthread_mutex_unlock(&w->mu);
    return tw;
}

/* ---- offsets: a bump pointer and a sorted, coalesced list of released ranges ------------- */

static void range_free(agile__dwin *dw, uint64_t off, uint64_t size)
{
    agile__range **pp = &dw->free, *r, *n;
    while ((r = *pp) && r->off < off)
        pp = &r->next;
    n = malloc(sizeof *n);
    if (!n) return; /* the range is lost to this tenant, not to anyone else */
    n->off = off;
    n->size = size;
    n->next = r;
    *pp = n;
    /* coalesce with the next and the previous */
    if (r && n->off + n->size == r->off) {
        n->size += r->size;
        n->next = r->next;
        free(r);
    }
    for (agile__range *p = dw->free; p && p != n; p = p->next) {
        if (p->next == n && p->off + p->size == n->off) {
            p->size += n->size;
            p->next = n->next;
            free(n);
            n = p;
            break;
        }
    }
    /* give the top back to the bump pointer */
    if (n->off + n->size == dw->top) {
        for (pp = &dw->free; *pp != n; pp = &(*pp)->next)
            ;
        *pp = n->next;
        dw->top = n->off;
        free(n);
    }
}

static int range_alloc(agile__dwin *dw, uint64_t size, uint64_t *off)
{
    for (agile__range **pp = &dw->free, *r; (r = *pp); pp = &r->next) {
        if (r->size >= size) {
            *off = r->off;
            r->off += size;
            r->size -= size;
            if (!r->size) {
                *pp = r->next;
                free(r);
            }
            return AGILE_OK;
        }
    }
    if (dw->size - dw->top < size) return AGILE_ENOMEM;
    *off = dw->top;
    dw->top += size;
    return AGILE_OK;
}

static void dwin_clear(agile__dwin *dw)
{
    while (dw->free) {
        agile__range *n = dw->free->next;
        free(dw->free);
        dw->free = n;
    }
    if (dw->win) agile__window_destroy(dw->win);
    dw->win = NULL;
    dw->size = dw->top = 0;
    dw->users = 0;
}

/* ---- API ------------------------------------------------------------------------------------ */

/* With tw->mu held: the tenant's window on dev, created with its sinks counted in the quota. */
static int window_get(agile__worker *w, agile__tenant *t, agile__dwin *dw, int dev, uint64_t W,
                      uint64_t quota)
{
    int rv = AGILE_OK;
    if (dw->win) return AGILE_OK;
    AGILE_TRY(agile__window_create(w->be, dev, W, AGILE_GUARD_GAP, &dw->win));
    uint64_t sink = agile__window_sink_bytes(dw->win);
    pthread_mutex_lock(&w->mu);
    if (t->leased[dev] + sink > quota) {
        t->quota_refusals++;
        rv = AGILE_EQUOTA;
    } else {
        t->sink[dev] = sink;
    }
    pthread_mutex_unlock(&w->mu);
    if (rv != AGILE_OK) {
        agile__window_destroy(dw->win);
        dw->win = NULL;
        goto out;
    }
    dw->size = W;
out:
    return rv;
}

int agile__twin_lease(agile__worker *w, agile__session *s, int dev, uint64_t W, uint64_t size,
                      uint64_t quota, agile__lease **l, uint64_t *off, int *fd)
{
    agile__twin *tw = twin_of(w, s->tenant);
    agile__dwin *dw;
    int rv = AGILE_OK;
    if (!tw) return AGILE_ENOMEM;
    dw = &tw->dw[dev];
    pthread_mutex_lock(&tw->mu);
    AGILE_TRY(window_get(w, s->tenant, dw, dev, W, quota));
    if (!s->win[dev]) { /* joins: published once the window is complete */
        dw->users++;
        __atomic_store_n(&s->win[dev], dw, __ATOMIC_RELEASE);
    }
    AGILE_TRY(range_alloc(dw, size, off));
    rv = agile__lease_create(dw->win, *off, size, l, fd);
    if (rv != AGILE_OK) range_free(dw, *off, size);
out:
    pthread_mutex_unlock(&tw->mu);
    return rv;
}

void agile__twin_unlease(agile__session *s, int dev, agile__lease *l, uint64_t off, uint64_t size)
{
    agile__twin *tw = s->tenant->twin; /* made by the lease's agile__twin_lease */
    pthread_mutex_lock(&tw->mu);
    agile__lease_destroy(l);
    range_free(s->win[dev], off, size);
    pthread_mutex_unlock(&tw->mu);
}

agile__window *agile__twin_window(const agile__session *s, int dev)
{
    agile__dwin *dw = __atomic_load_n(&s->win[dev], __ATOMIC_ACQUIRE);
    return dw ? dw->win : NULL; /* set before the session joined; stays while it is joined */
}

void agile__twin_session_end(agile__session *s)
{
    agile__tenant *t = s->tenant;
    for (int d = 0; d < AGILE_MAX_DEV; d++) {
        agile__dwin *dw = s->win[d];
        if (!dw) continue;
        s->win[d] = NULL;
        pthread_mutex_lock(&t->twin->mu);
        if (--dw->users == 0) {
            dwin_clear(dw);
            pthread_mutex_lock(&s->w->mu);
            t->sink[d] = 0;
            pthread_mutex_unlock(&s->w->mu);
        }
        pthread_mutex_unlock(&t->twin->mu);
    }
}

void agile__twin_tenant_fini(agile__tenant *t)
{
    if (!t->twin) return;
    for (int d = 0; d < AGILE_MAX_DEV; d++)
        dwin_clear(&t->twin->dw[d]);
    pthread_mutex_destroy(&t->twin->mu);
    free(t->twin);
    t->twin = NULL;
}
