/* hello.c — a C program against libagile (docs/c-api.md): connect to the worker (starting
 * one if none runs), print what the session got, lease 64 MiB through the pool, give it back.
 *   cc hello.c $(pkg-config --cflags --libs agile) -o hello && ./hello */
#include <stdio.h>

#include <agile/agile.h>

int main(void)
{
    agile_client *c;
    agile_session_info si;
    int rv = agile_init(NULL); /* the default client: autostart, backend auto */
    if (rv == AGILE_OK)
        rv = agile_default_client(&c);
    if (rv == AGILE_OK)
        rv = agile_session_info_get(c, &si);
    if (rv != AGILE_OK) {
        fprintf(stderr, "hello: %s: %s\n", agile_strerror(rv), agile_last_error());
        return 1;
    }
    printf("tenant %u, %s backend, %u GPU(s), quota %llu MiB per GPU, worker protocol %u.%u\n",
           si.tenant, si.backend == AGILE_BACKEND_KIND_CUDA ? "cuda" : "host", si.ndev,
           (unsigned long long)(si.quota >> 20), si.worker_major, si.worker_minor);
    void *p = agile_malloc(64 << 20, 0, NULL);
    if (!p) {
        fprintf(stderr, "hello: agile_malloc: %s\n", agile_last_error());
        return 1;
    }
    agile_mem_stats st;
    agile_memory_stats(0, &st);
    printf("64 MiB at %p: %llu MiB reserved from the worker\n", p,
           (unsigned long long)(st.reserved_bytes >> 20));
    agile_free(p, 64 << 20, 0, NULL);
    return agile_empty_cache() == AGILE_OK ? 0 : 1;
}
