/* `agilectl status`: the worker's state as JSON or as a table for people. */
#include "worker.h"
#include "dataplane.h"

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

typedef agile__tenant_snap tsnap;

/* On a --shared worker a uid sees its own tenant only; root and the worker's uid see all. */
static int visible(const agile__worker *w, uint32_t viewer, uint32_t uid)
{
    return !w->shared || viewer == AGILE_STATUS_ALL || viewer == 0 ||
           viewer == (uint32_t)geteuid() || viewer == uid;
}

size_t agile__worker_snapshot(agile__worker *w, uint32_t viewer, tsnap **out)
{
    size_t n = 0, i = 0;
    tsnap *v;
    pthread_mutex_lock(&w->mu);
    for (agile__tenant *t = w->tenants; t; t = t->next)
        n += visible(w, viewer, t->uid);
    v = calloc(n ? n : 1, sizeof *v);
    if (v) {
        for (agile__tenant *t = w->tenants; t; t = t->next) {
            if (!visible(w, viewer, t->uid))
                continue;
            v[i].uid = t->uid;
            v[i].sessions = t->sessions;
            v[i].priority = t->pol.priority;
            v[i].quota = t->pol.quota;
            memcpy(v[i].leased, t->leased, sizeof t->leased);
            memcpy(v[i].sink, t->sink, sizeof t->sink);
            v[i].proto_errors = t->proto_errors;
            v[i].quota_refusals = t->quota_refusals;
            v[i].protected_bytes = t->protected_bytes;
            v[i].timelimit_exceeded = t->timelimit_exceeded;
            v[i].host_op_pauses = atomic_load(&t->host_op_pauses);
            v[i].pending = t->pending;
            v[i].pipes = t->pipes;
            v[i].pipe_refusals = t->pipe_refusals;
            v[i].requests = atomic_load(&t->requests_inflight);
            v[i].loads = atomic_load(&t->loads_inflight);
            v[i].session_refusals = t->session_refusals;
            v[i].pending_refusals = t->pending_refusals;
            v[i].request_refusals = atomic_load(&t->request_refusals);
            v[i].module_size_refusals = atomic_load(&t->module_size_refusals);
            v[i].pol = t->pol;
            v[i].ring_cmds = atomic_load(&t->ring_cmds);
            v[i].module_loads = atomic_load(&t->module_loads);
            v[i].guard_sites = atomic_load(&t->guard_sites);
            for (int k = 0; k < AGILE_MODULE_COUNTED; k++)
                v[i].module_ops[k] = atomic_load(&t->module_ops[k]);
            pthread_mutex_lock(&w->objs.mu); /* the account is the table's */
            v[i].object_refusals = t->objs.refusals;
            pthread_mutex_unlock(&w->objs.mu);
            i++;
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

/* Sticky faults of device d and the context resets they cost (dataplane.h); the suspect's
 * uid is shown to whoever may see that tenant. */
static void fault_json(sbuf *b, agile__worker *w, int d, uint32_t viewer)
{
    agile__dp_faults f;
    agile__dp_faults_get(w, d, &f);
    sb_printf(b, "\"faults\":%llu,\"context_resets\":%llu,\"last_fault\":",
              (unsigned long long)f.faults, (unsigned long long)f.resets);
    if (!f.faults) {
        sb_printf(b, "null");
        return;
    }
    if (f.uid != UINT32_MAX && visible(w, viewer, f.uid))
        sb_printf(b, "{\"uid\":%u,\"kernel\":", f.uid);
    else
        sb_printf(b, "{\"uid\":null,\"kernel\":");
    sb_json_str(b, f.kernel);
    sb_printf(b, ",\"error\":");
    sb_json_str(b, agile__backend_err_name(f.err));
    sb_printf(b, ",\"at_unix_ms\":%llu,\"recovery_ms\":%.1f,\"victims\":%u}",
              (unsigned long long)f.at_unix_ms, (double)f.recovery_ns / 1e6, f.victims);
}

static void fault_text(sbuf *b, agile__worker *w, int d, uint32_t viewer)
{
    agile__dp_faults f;
    agile__dp_faults_get(w, d, &f);
    if (!f.faults) return;
    sb_printf(b, "     faults %llu, context resets %llu; last: %s by ", (unsigned long long)f.faults,
              (unsigned long long)f.resets, agile__backend_err_name(f.err));
    if (f.uid != UINT32_MAX && visible(w, viewer, f.uid))
        sb_printf(b, "tenant %u", f.uid);
    else
        sb_printf(b, "another tenant");
    sb_printf(b, ", kernel %s, recovered in %.1f ms, %u tenants lost work in flight\n", f.kernel,
              (double)f.recovery_ns / 1e6, f.victims);
}

char *agile__worker_status(agile__worker *w, int json, uint32_t viewer)
{
    sbuf b = {0};
    tsnap *t = NULL;
    size_t nt = agile__worker_snapshot(w, viewer, &t);
    double up = (double)(agile__now_ns() - w->started_ns) / 1e9;
    uint64_t perr = atomic_load(&w->proto_errors), reqs = atomic_load(&w->requests);
    const char *be = agile__backend_name(w->be);

    if (json) {
        sb_printf(&b, "{\"backend\":\"%s\",\"worker_pid\":%d,\"runtime_dir\":", be, (int)getpid());
        sb_json_str(&b, w->dir);
        sb_printf(&b, ",\"uptime_s\":%.3f,\"requests\":%llu,\"protocol_errors\":%llu,", up,
                  (unsigned long long)reqs, (unsigned long long)perr);
        char murl[AGILE_METRICS_URL_MAX + 16];
        agile__metrics_url(w, murl, sizeof murl);
        sb_printf(&b, "\"metrics_url\":");
        sb_json_str(&b, murl);
        sb_printf(&b, ",\"config_reloads\":%llu,\"config_reload_failures\":%llu,",
                  (unsigned long long)atomic_load(&w->reloads),
                  (unsigned long long)atomic_load(&w->reload_failures));
        sb_printf(&b, "\"protocol\":\"%u.%u\",\"devices\":[", AGILE_WIRE_MAJOR, AGILE_WIRE_MINOR);
        for (int d = 0; d < w->ndev; d++) {
            sb_printf(&b, "%s{\"index\":%d,\"name\":", d ? "," : "", d);
            sb_json_str(&b, w->dev[d].name);
            sb_printf(&b, ",\"total_bytes\":%llu,\"granularity\":%llu,\"cc\":\"%d.%d\",",
                      (unsigned long long)w->dev[d].total_mem,
                      (unsigned long long)w->dev[d].granularity, w->dev[d].cc_major,
                      w->dev[d].cc_minor);
            fault_json(&b, w, d, viewer);
            sb_printf(&b, "}");
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
            sb_printf(&b, "],\"sink_bytes_per_gpu\":[");
            for (int d = 0; d < w->ndev; d++)
                sb_printf(&b, "%s%llu", d ? "," : "", (unsigned long long)t[i].sink[d]);
            sb_printf(&b, "],\"leased_bytes\":%llu,\"protocol_errors\":%llu,"
                          "\"quota_refusals\":%llu,\"protected_bytes\":%llu,"
                          "\"timelimit_exceeded\":%llu,\"host_op_pauses\":%llu,\"objects\":{",
                      (unsigned long long)total, (unsigned long long)t[i].proto_errors,
                      (unsigned long long)t[i].quota_refusals,
                      (unsigned long long)t[i].protected_bytes,
                      (unsigned long long)t[i].timelimit_exceeded,
                      (unsigned long long)t[i].host_op_pauses);
            int first = 1;
            uint32_t all = 0;
            for (unsigned ty = AGILE_OBJ_LEASE; ty < AGILE_OBJ_MAX_; ty++) {
                sb_printf(&b, "%s\"%s\":%u", first ? "" : ",", agile__obj_name(ty), t[i].objs[ty]);
                all += t[i].objs[ty];
                first = 0;
            }
            sb_printf(&b, "},\"object_count\":%u,", all);
            sb_printf(&b,
                      "\"pending_sessions\":%u,\"connections\":%u,\"requests_in_flight\":%u,"
                      "\"module_loads_in_flight\":%u,\"refusals\":{\"sessions\":%llu,"
                      "\"pending\":%llu,\"connections\":%llu,\"objects\":%llu,"
                      "\"requests\":%llu,\"module_bytes\":%llu},",
                      t[i].pending, t[i].pipes, t[i].requests, t[i].loads,
                      (unsigned long long)t[i].session_refusals,
                      (unsigned long long)t[i].pending_refusals,
                      (unsigned long long)t[i].pipe_refusals,
                      (unsigned long long)t[i].object_refusals,
                      (unsigned long long)t[i].request_refusals,
                      (unsigned long long)t[i].module_size_refusals);
            sb_printf(&b,
                      "\"limits\":{\"max_sessions\":%u,\"max_pending\":%u,\"max_objects\":%u,"
                      "\"max_requests\":%u,\"max_module_loads\":%u,\"max_module_bytes\":%llu}}",
                      t[i].pol.max_sessions, t[i].pol.max_pending, t[i].pol.max_objects,
                      t[i].pol.max_requests, t[i].pol.max_module_loads,
                      (unsigned long long)t[i].pol.max_module_bytes);
        }
        sb_printf(&b, "]}\n");
    } else {
        sb_printf(&b, "agile worker  pid %d  backend %s  protocol %u.%u  up %.0f s\n",
                  (int)getpid(), be, AGILE_WIRE_MAJOR, AGILE_WIRE_MINOR, up);
        sb_printf(&b, "runtime dir   %s\nrequests      %llu  (protocol errors %llu)\n\n", w->dir,
                  (unsigned long long)reqs, (unsigned long long)perr);
        sb_printf(&b, "GPU  NAME                              MEMORY\n");
        for (int d = 0; d < w->ndev; d++) {
            sb_printf(&b, "%-4d %-33s %7.1f GiB\n", d, w->dev[d].name,
                      (double)w->dev[d].total_mem / (double)(1ull << 30));
            fault_text(&b, w, d, viewer);
        }
        sb_printf(&b, "\nTENANT(uid)  SESSIONS  LEASED          SINK        QUOTA/GPU       OBJECTS  "
                      "PROTO-ERR\n");
        for (size_t i = 0; i < nt; i++) {
            uint64_t total = 0, sink = 0;
            uint32_t all = 0;
            for (int d = 0; d < w->ndev; d++) {
                total += t[i].leased[d];
                sink += t[i].sink[d];
            }
            for (unsigned ty = AGILE_OBJ_LEASE; ty < AGILE_OBJ_MAX_; ty++)
                all += t[i].objs[ty];
            sb_printf(&b, "%-12u %-9u %9.1f MiB %7.1f MiB %11.1f GiB %8u %10llu\n", t[i].uid,
                      t[i].sessions, (double)total / (1 << 20), (double)sink / (1 << 20),
                      (double)t[i].quota / (double)(1ull << 30), all,
                      (unsigned long long)t[i].proto_errors);
        }
        if (!nt)
            sb_printf(&b, "(no tenants)\n");
        else
            sb_printf(&b, "\nTENANT(uid)  LIMITS IN USE/MAX: SESSIONS  PENDING  OBJECTS        "
                          "REQUESTS  LOADS   REFUSED: SESS PEND CONN OBJ REQ MODSIZE\n");
        for (size_t i = 0; i < nt; i++) {
            uint32_t all = 0; /* max_objects counts the sessions' own handles too */
            for (unsigned ty = AGILE_OBJ_SESSION; ty < AGILE_OBJ_MAX_; ty++)
                all += t[i].objs[ty];
            sb_printf(&b, "%-12u %9u/%-5u %4u/%-4u %7u/%-7u %4u/%-4u %3u/%-3u %12llu %4llu %4llu "
                          "%3llu %3llu %7llu\n",
                      t[i].uid, t[i].sessions, t[i].pol.max_sessions, t[i].pending,
                      t[i].pol.max_pending, all, t[i].pol.max_objects, t[i].requests,
                      t[i].pol.max_requests, t[i].loads, t[i].pol.max_module_loads,
                      (unsigned long long)t[i].session_refusals,
                      (unsigned long long)t[i].pending_refusals,
                      (unsigned long long)t[i].pipe_refusals,
                      (unsigned long long)t[i].object_refusals,
                      (unsigned long long)t[i].request_refusals,
                      (unsigned long long)t[i].module_size_refusals);
        }
    }
    free(t);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
