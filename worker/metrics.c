/* The metrics endpoint: the worker's counters in the Prometheus text exposition format
 * (version 0.0.4) at http://HOST:PORT/metrics, served by nng's HTTP server (config
 * [worker] metrics_listen; off without it). Every tenant is shown: whoever can reach the
 * address sees every tenant's numbers (bind it to 127.0.0.1, or firewall it). */
#include "worker.h"
#include "dataplane.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/supplemental/http/http.h>

struct agile__metrics {
    nng_http_server *srv;
    char url[AGILE_METRICS_URL_MAX + 16]; /* where it listens, the port resolved */
};

/* Per-tenant scalar series: name, type, help, where in the snapshot (u32 or u64). */
typedef struct {
    const char *name, *type, *help;
    size_t off, size;
} tseries;

#define U32(f) offsetof(agile__tenant_snap, f), sizeof(uint32_t)
#define U64(f) offsetof(agile__tenant_snap, f), sizeof(uint64_t)
static const tseries tenant_series[] = {
    {"agile_tenant_sessions", "gauge", "Sessions of the tenant (uid).", U32(sessions)},
    {"agile_tenant_quota_bytes", "gauge", "The tenant's quota per GPU (config).", U64(quota)},
    {"agile_tenant_priority", "gauge", "The tenant's scheduler weight (config).", U32(priority)},
    {"agile_tenant_protected_bytes", "gauge", "Worker memory held for the tenant's module work.",
     U64(protected_bytes)},
    {"agile_tenant_quota_refusals_total", "counter", "Leases refused by the tenant's quota.",
     U64(quota_refusals)},
    {"agile_tenant_protocol_errors_total", "counter",
     "Malformed requests and rings from the tenant.", U64(proto_errors)},
    {"agile_tenant_ring_commands_total", "counter", "Data-plane ring commands executed.",
     U64(ring_cmds)},
    {"agile_tenant_module_loads_total", "counter", "PTX modules guarded and loaded.",
     U64(module_loads)},
    {"agile_tenant_guard_sites_total", "counter", "Memory access sites the guard fenced.",
     U64(guard_sites)},
    {"agile_tenant_time_limit_exceeded_total", "counter",
     "Data-plane operations past the tenant's time_limit_ms.", U64(timelimit_exceeded)},
    {"agile_tenant_host_op_pauses_total", "counter",
     "Large host operations of the tenant preempted so that other work went first.",
     U64(host_op_pauses)},
};

/* Refusals by limit, one labelled family. */
static const struct {
    const char *limit;
    size_t off;
} refusal_series[] = {
    {"sessions", offsetof(agile__tenant_snap, session_refusals)},
    {"pending", offsetof(agile__tenant_snap, pending_refusals)},
    {"connections", offsetof(agile__tenant_snap, pipe_refusals)},
    {"objects", offsetof(agile__tenant_snap, object_refusals)},
    {"requests", offsetof(agile__tenant_snap, request_refusals)},
    {"module_bytes", offsetof(agile__tenant_snap, module_size_refusals)},
};

static uint64_t field(const agile__tenant_snap *t, size_t off, size_t size)
{
    const char *p = (const char *)t + off;
    uint32_t v32;
    uint64_t v64;
    if (size == sizeof v32) {
        memcpy(&v32, p, sizeof v32);
        return v32;
    }
    memcpy(&v64, p, sizeof v64);
    return v64;
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(f, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

char *agile__metrics_text(agile__worker *w)
{
    static const char *mod_names[] = {
#define X(NAME, id, name) [id] = name,
        AGILE_MODULE_ID_LIST(X)
#undef X
    };
    char *buf = NULL;
    size_t len = 0;
    agile__tenant_snap *t = NULL;
    size_t nt = agile__worker_snapshot(w, AGILE_STATUS_ALL, &t);
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        free(t);
        return NULL;
    }
    family(f, "agile_worker_info", "gauge", "The worker's version, protocol and backend.");
    fprintf(f, "agile_worker_info{version=\"%s\",protocol=\"%u.%u\",backend=\"%s\"} 1\n",
            AGILE_VERSION, AGILE_WIRE_MAJOR, AGILE_WIRE_MINOR, agile__backend_name(w->be));
    family(f, "agile_worker_uptime_seconds", "gauge", "Seconds since the worker started.");
    fprintf(f, "agile_worker_uptime_seconds %.3f\n",
            (double)(agile__now_ns() - w->started_ns) / 1e9);
    family(f, "agile_requests_total", "counter", "Control-plane requests served.");
    fprintf(f, "agile_requests_total %llu\n", (unsigned long long)atomic_load(&w->requests));
    family(f, "agile_protocol_errors_total", "counter", "Malformed requests and rings, all tenants.");
    fprintf(f, "agile_protocol_errors_total %llu\n",
            (unsigned long long)atomic_load(&w->proto_errors));
    family(f, "agile_config_reloads_total", "counter", "Config reloads (SIGHUP) by result.");
    fprintf(f, "agile_config_reloads_total{result=\"ok\"} %llu\n",
            (unsigned long long)atomic_load(&w->reloads));
    fprintf(f, "agile_config_reloads_total{result=\"refused\"} %llu\n",
            (unsigned long long)atomic_load(&w->reload_failures));

    family(f, "agile_gpu_info", "gauge", "A GPU of the worker: its name.");
    for (int d = 0; d < w->ndev; d++) {
        fprintf(f, "agile_gpu_info{gpu=\"%d\",name=\"", d);
        label(f, w->dev[d].name);
        fputs("\"} 1\n", f);
    }
    family(f, "agile_gpu_memory_bytes", "gauge", "Memory of the GPU.");
    for (int d = 0; d < w->ndev; d++)
        fprintf(f, "agile_gpu_memory_bytes{gpu=\"%d\"} %llu\n", d,
                (unsigned long long)w->dev[d].total_mem);
    agile__dp_faults fl[AGILE_MAX_DEV];
    for (int d = 0; d < w->ndev; d++)
        agile__dp_faults_get(w, d, &fl[d]);
    family(f, "agile_gpu_faults_total", "counter", "Sticky GPU faults seen.");
    for (int d = 0; d < w->ndev; d++)
        fprintf(f, "agile_gpu_faults_total{gpu=\"%d\"} %llu\n", d, (unsigned long long)fl[d].faults);
    family(f, "agile_gpu_context_resets_total", "counter", "Context resets that succeeded.");
    for (int d = 0; d < w->ndev; d++)
        fprintf(f, "agile_gpu_context_resets_total{gpu=\"%d\"} %llu\n", d,
                (unsigned long long)fl[d].resets);

    for (size_t k = 0; k < AGILE_ARRAY_LEN(tenant_series); k++) {
        const tseries *s = &tenant_series[k];
        family(f, s->name, s->type, s->help);
        for (size_t i = 0; i < nt; i++)
            fprintf(f, "%s{uid=\"%u\"} %llu\n", s->name, t[i].uid,
                    (unsigned long long)field(&t[i], s->off, s->size));
    }
    family(f, "agile_tenant_leased_bytes", "gauge", "Bytes leased to the tenant, per GPU.");
    for (size_t i = 0; i < nt; i++)
        for (int d = 0; d < w->ndev; d++)
            fprintf(f, "agile_tenant_leased_bytes{uid=\"%u\",gpu=\"%d\"} %llu\n", t[i].uid, d,
                    (unsigned long long)t[i].leased[d]);
    family(f, "agile_tenant_sink_bytes", "gauge", "The tenant's window sinks, per GPU.");
    for (size_t i = 0; i < nt; i++)
        for (int d = 0; d < w->ndev; d++)
            fprintf(f, "agile_tenant_sink_bytes{uid=\"%u\",gpu=\"%d\"} %llu\n", t[i].uid, d,
                    (unsigned long long)t[i].sink[d]);
    family(f, "agile_tenant_module_ops_total", "counter",
           "Module operations that succeeded (fft: FFT executions), by module.");
    for (size_t i = 0; i < nt; i++)
        for (int m = 0; m < AGILE_MODULE_COUNTED; m++)
            fprintf(f, "agile_tenant_module_ops_total{uid=\"%u\",module=\"%s\"} %llu\n", t[i].uid,
                    mod_names[m], (unsigned long long)t[i].module_ops[m]);
    family(f, "agile_tenant_limit_refusals_total", "counter",
           "Connections and requests refused by a per-uid limit, by limit.");
    for (size_t i = 0; i < nt; i++)
        for (size_t k = 0; k < AGILE_ARRAY_LEN(refusal_series); k++)
            fprintf(f, "agile_tenant_limit_refusals_total{uid=\"%u\",limit=\"%s\"} %llu\n",
                    t[i].uid, refusal_series[k].limit,
                    (unsigned long long)field(&t[i], refusal_series[k].off, sizeof(uint64_t)));
    free(t);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void serve(nng_aio *aio)
{
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    agile__worker *w = nng_http_handler_get_data(h);
    nng_http_res *res = NULL;
    char *text = agile__metrics_text(w);
    int rv = text ? nng_http_res_alloc(&res) : NNG_ENOMEM;
    if (rv == 0)
        rv = nng_http_res_set_header(res, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    if (rv == 0)
        rv = nng_http_res_copy_data(res, text, strlen(text));
    free(text);
    if (rv != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, rv);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void metrics_free(struct agile__metrics *m)
{
    if (!m)
        return;
    if (m->srv) {
        nng_http_server_stop(m->srv);
        nng_http_server_release(m->srv);
    }
    free(m);
}

static int metrics_open(agile__worker *w, const char *url, struct agile__metrics **out, char *err,
                        size_t errcap)
{
    struct agile__metrics *m = calloc(1, sizeof *m);
    nng_url *u = NULL;
    nng_http_handler *h = NULL;
    nng_sockaddr sa;
    int rv;
    if (!m)
        return AGILE_ENOMEM;
    if ((rv = nng_url_parse(&u, url)) != 0 || (rv = nng_http_server_hold(&m->srv, u)) != 0 ||
        (rv = nng_http_handler_alloc(&h, "/metrics", serve)) != 0 ||
        (rv = nng_http_handler_set_method(h, "GET")) != 0 ||
        (rv = nng_http_handler_set_data(h, w, NULL)) != 0 ||
        (rv = nng_http_server_add_handler(m->srv, h)) != 0) {
        if (h)
            nng_http_handler_free(h);
    } else {
        h = NULL; /* the server's now */
        rv = nng_http_server_start(m->srv);
    }
    if (rv != 0) {
        snprintf(err, errcap, "metrics_listen %s: %s", url, nng_strerror(rv));
        if (u)
            nng_url_free(u);
        metrics_free(m);
        return AGILE_ECONFIG; /* not EBUSY: that exit status (3) means another worker */
    }
    /* The address as bound: the port the kernel chose when the config said 0. */
    unsigned port = 0;
    if (nng_http_server_get_addr(m->srv, &sa) == 0)
        port = sa.s_family == NNG_AF_INET6 ? ntohs(sa.s_in6.sa_port) : ntohs(sa.s_in.sa_port);
    snprintf(m->url, sizeof m->url, "http://%s%s%s:%u", strchr(u->u_hostname, ':') ? "[" : "",
             u->u_hostname, strchr(u->u_hostname, ':') ? "]" : "", port);
    nng_url_free(u);
    *out = m;
    return AGILE_OK;
}

int agile__metrics_listen(agile__worker *w, const char *url, char *err, size_t errcap)
{
    struct agile__metrics *m = NULL, *old;
    int rv;
    if (url[0] && (rv = metrics_open(w, url, &m, err, errcap)) != AGILE_OK)
        return rv;
    pthread_mutex_lock(&w->mu);
    old = w->metrics;
    w->metrics = m;
    pthread_mutex_unlock(&w->mu);
    metrics_free(old); /* not under w->mu: its handler in flight takes it */
    if (m)
        agile__info("metrics: %s/metrics", m->url);
    return AGILE_OK;
}

void agile__metrics_url(agile__worker *w, char *buf, size_t cap)
{
    pthread_mutex_lock(&w->mu);
    snprintf(buf, cap, "%s", w->metrics ? w->metrics->url : "");
    pthread_mutex_unlock(&w->mu);
}

void agile__metrics_stop(agile__worker *w)
{
    char err[8];
    agile__metrics_listen(w, "", err, sizeof err);
}
