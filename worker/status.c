/* `agilectl status`: the worker's state as JSON or as a table for people. */
#include "worker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* Device names come from the driver; escape them anyway. */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            sb_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            sb_printf(b, "\\u%04x", ch);
        else
            sb_printf(b, "%c", ch);
    }
    sb_printf(b, "\"");
}

typedef struct {
    uint32_t uid, sessions, priority;
    uint64_t quota, leased[AGILE_MAX_DEV], proto_errors, quota_refusals;
    uint64_t protected_bytes;
    uint64_t timelimit_exceeded;
    uint32_t objs[AGILE_OBJ_MAX_];
} tsnap;

static size_t snapshot(agile__worker *w, tsnap **out)
{
    size_t n = 0, i = 0;
    tsnap *v;
    pthread_mutex_lock(&w->mu);
    for (agile__tenant *t = w->tenants; t; t = t->next)
        n++;
    v = calloc(n ? n : 1, sizeof *v);
    if (v) {
        for (agile__tenant *t = w->tenants; t; t = t->next, i++) {
            v[i].uid = t->uid;
            v[i].sessions = t->sessions;
            v[i].priority = t->pol.priority;
            v[i].quota = t->pol.quota;
            memcpy(v[i].leased, t->leased, sizeof t->leased);
            v[i].proto_errors = t->proto_errors;
            v[i].quota_refusals = t->quota_refusals;
            v[i].protected_bytes = t->protected_bytes;
            v[i].timelimit_exceeded = t->timelimit_exceeded;
        }
        /* object counts: by session, summed per tenant */
        for (agile__session *s = w->sessions; s; s = s->next)
            for (i = 0; i < n; i++)
                if (v[i].uid == s->uid)
                    agile__htab_count_owner(&w->objs, s->id, v[i].objs);
    }
    pthread_mutex_unlock(&w->mu);
    *out = v;
    return v ? n : 0;
}

char *agile__worker_status(agile__worker *w, int json)
{
    sbuf b = {0};
    tsnap *t = NULL;
    size_t nt = snapshot(w, &t);
    double up = (double)(agile__now_ns() - w->started_ns) / 1e9;
    uint64_t perr = atomic_load(&w->proto_errors), reqs = atomic_load(&w->requests);
    const char *be = agile__backend_name(w->be);

    if (json) {
        sb_printf(&b, "{\"backend\":\"%s\",\"worker_pid\":%d,\"runtime_dir\":", be, (int)getpid());
        sb_json_str(&b, w->dir);
        sb_printf(&b, ",\"uptime_s\":%.3f,\"requests\":%llu,\"protocol_errors\":%llu,", up,
                  (unsigned long long)reqs, (unsigned long long)perr);
        sb_printf(&b, "\"protocol\":\"%u.%u\",\"devices\":[", AGILE_WIRE_MAJOR, AGILE_WIRE_MINOR);
        for (int d = 0; d < w->ndev; d++) {
            sb_printf(&b, "%s{\"index\":%d,\"name\":", d ? "," : "", d);
            sb_json_str(&b, w->dev[d].name);
            sb_printf(&b, ",\"total_bytes\":%llu,\"granularity\":%llu,\"cc\":\"%d.%d\"}",
                      (unsigned long long)w->dev[d].total_mem,
                      (unsigned long long)w->dev[d].granularity, w->dev[d].cc_major,
                      w->dev[d].cc_minor);
        }
        sb_printf(&b, "],\"tenants\":[");
        for (size_t i = 0; i < nt; i++) {
            uint64_t total = 0;
            sb_printf(&b, "%s{\"uid\":%u,\"sessions\":%u,\"priority\":%u,\"quota_bytes\":%llu,",
                      i ? "," : "", t[i].uid, t[i].sessions, t[i].priority,
                      (unsigned long long)t[i].quota);
            sb_printf(&b, "\"leased_bytes_per_gpu\":[");
            for (int d = 0; d < w->ndev; d++) {
                sb_printf(&b, "%s%llu", d ? "," : "", (unsigned long long)t[i].leased[d]);
                total += t[i].leased[d];
            }
            sb_printf(&b, "],\"leased_bytes\":%llu,\"protocol_errors\":%llu,"
                          "\"quota_refusals\":%llu,\"protected_bytes\":%llu,"
                          "\"timelimit_exceeded\":%llu,\"objects\":{",
                      (unsigned long long)total, (unsigned long long)t[i].proto_errors,
                      (unsigned long long)t[i].quota_refusals,
                      (unsigned long long)t[i].protected_bytes,
                      (unsigned long long)t[i].timelimit_exceeded);
            int first = 1;
            uint32_t all = 0;
            for (unsigned ty = AGILE_OBJ_LEASE; ty < AGILE_OBJ_MAX_; ty++) {
                sb_printf(&b, "%s\"%s\":%u", first ? "" : ",", agile__obj_name(ty), t[i].objs[ty]);
                all += t[i].objs[ty];
                first = 0;
            }
            sb_printf(&b, "},\"object_count\":%u}", all);
        }
        sb_printf(&b, "]}\n");
    } else {
        sb_printf(&b, "agile worker  pid %d  backend %s  protocol %u.%u  up %.0f s\n",
                  (int)getpid(), be, AGILE_WIRE_MAJOR, AGILE_WIRE_MINOR, up);
        sb_printf(&b, "runtime dir   %s\nrequests      %llu  (protocol errors %llu)\n\n", w->dir,
                  (unsigned long long)reqs, (unsigned long long)perr);
        sb_printf(&b, "GPU  NAME                              MEMORY\n");
        for (int d = 0; d < w->ndev; d++)
            sb_printf(&b, "%-4d %-33s %7.1f GiB\n", d, w->dev[d].name,
                      (double)w->dev[d].total_mem / (double)(1ull << 30));
        sb_printf(&b, "\nTENANT(uid)  SESSIONS  LEASED          QUOTA/GPU       OBJECTS  PROTO-ERR\n");
        for (size_t i = 0; i < nt; i++) {
            uint64_t total = 0;
            uint32_t all = 0;
            for (int d = 0; d < w->ndev; d++)
                total += t[i].leased[d];
            for (unsigned ty = AGILE_OBJ_LEASE; ty < AGILE_OBJ_MAX_; ty++)
                all += t[i].objs[ty];
            sb_printf(&b, "%-12u %-9u %9.1f MiB %11.1f GiB %8u %10llu\n", t[i].uid,
                      t[i].sessions, (double)total / (1 << 20),
                      (double)t[i].quota / (double)(1ull << 30), all,
                      (unsigned long long)t[i].proto_errors);
        }
        if (!nt)
            sb_printf(&b, "(no tenants)\n");
    }
    free(t);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
