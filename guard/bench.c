/* bench.c — guard-bench: guard throughput over the PTX corpus (MB of input PTX per second,
 * median and p99 of several runs), the verifier's throughput, and the compile time cold
 * (cache miss, nvJitLink) vs warm (cache hit). Figures only: nothing here asserts a time.
 * usage: guard-bench [--runs N] [--no-verify] [--json] [CORPUS_DIR]
 * --json: one JSON line of every figure at the end (benchmarks/run.py reads it). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "guard.h"

typedef struct file {
    char *path, *src;
    size_t len;
} file;

static file *files;
static size_t nfiles, capfiles;

static void walk(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL) return;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        size_t n = strlen(e->d_name);
        FILE *f;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (strcmp(e->d_name, "reject") != 0) walk(path);
            continue;
        }
        if (n < 5 || strcmp(e->d_name + n - 4, ".ptx") != 0 || (f = fopen(path, "rb")) == NULL)
            continue;
        if (nfiles == capfiles) {
            size_t nc = capfiles ? capfiles * 2 : 64;
            file *nf = realloc(files, nc * sizeof(file));
            if (nf == NULL) {
                fclose(f);
                break;
            }
            files = nf;
            capfiles = nc;
        }
        files[nfiles].path = strdup(path);
        files[nfiles].src = malloc((size_t)st.st_size + 1);
        files[nfiles].len = fread(files[nfiles].src, 1, (size_t)st.st_size, f);
        fclose(f);
        nfiles++;
    }
    closedir(d);
}

/* Thread CPU time: the machine is shared, so wall time mostly measures the neighbours. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void stats(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d); /* sorted in place: the JSON reads it */
    /* throughput: p99 is the slow tail, i.e. the 1st percentile of MB/s */
    printf("%-30s median %8.1f MB/s   p99 %8.1f MB/s   (%d runs)\n", what, v[n / 2],
           v[(n - 1) / 100], n);
}

int main(int argc, char **argv)
{
    const char *dir = AGILE_PTX_CORPUS;
    int runs = 30;
    bool verify = true, json = false;
    size_t total = 0, sites = 0;
    double compile_ms[5] = {-1, -1, -1, -1, -1};
    double *mbs, *vmbs, *wmbs;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-verify") == 0)
            verify = false; /* profile the rewriter alone */
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            dir = argv[i];
    }
    if (runs < 1) runs = 1;
    walk(dir);
    for (size_t i = 0; i < nfiles; i++)
        total += files[i].len;
    printf("guard-bench: %zu PTX files, %.2f MB, from %s\n", nfiles, (double)total / 1e6, dir);
    if (nfiles == 0) return 2;
    mbs = calloc((size_t)runs, sizeof(double));
    vmbs = calloc((size_t)runs, sizeof(double));
    wmbs = calloc((size_t)runs, sizeof(double));
    /* one run = enough passes over the corpus to take >= 8 MB, so timer noise is small */
    int passes = (int)(8e6 / (double)total) + 1;
    for (int r = 0; r < runs; r++) {
        uint64_t t0 = cpu_ns(), w0 = agile__now_ns(), tv = 0, wv = 0;
        sites = 0;
        for (size_t i = 0; i < nfiles * (size_t)passes; i++) {
            agile_guard_opts o;
            agile_guard_result res;
            agile_guard_opts_init(&o);
            o.skip_verify = true; /* timed separately below */
            if (agile_guard_ptx(files[i % nfiles].src, files[i % nfiles].len, &o, &res) ==
                AGILE_OK) {
                uint64_t v0 = cpu_ns(), vw0 = agile__now_ns();
                char err[300];
                sites += res.nsites;
                if (verify) (void)agile_guard_verify(res.ptx, res.ptx_len, NULL, err, sizeof(err));
                tv += cpu_ns() - v0;
                wv += agile__now_ns() - vw0;
            }
            agile_guard_result_fini(&res);
        }
        uint64_t dt = cpu_ns() - t0 - tv;
        uint64_t dw = agile__now_ns() - w0 - wv;
        wmbs[r] = (double)total * passes / 1e6 / ((double)dw / 1e9);
        mbs[r] = (double)total * passes / 1e6 / ((double)dt / 1e9);
        vmbs[r] = (double)total * passes / 1e6 / ((double)(tv ? tv : 1) / 1e9);
    }
    printf("instrumented sites per pass: %zu (%d passes per run)\n", sites / (size_t)passes,
           passes);
    stats("guard (parse+rewrite), CPU", mbs, runs);
    stats("verifier, CPU", vmbs, runs);
    stats("guard, wall clock", wmbs, runs);

    /* compile: the largest accepted file, cold (miss) then warm (hit) */
    {
        char dirbuf[] = "/tmp/guard-bench-cache.XXXXXX";
        size_t big = 0;
        agile_guard_opts o;
        agile_guard_result res;
        agile_guard_compile_opts co = {"sm_90", NULL, 0, NULL, 0};
        for (size_t i = 0; i < nfiles; i++)
            if (files[i].len > files[big].len && strstr(files[i].src, "sm_90a") == NULL) big = i;
        agile_guard_opts_init(&o);
        if (mkdtemp(dirbuf) == NULL ||
            agile_guard_ptx(files[big].src, files[big].len, &o, &res) != AGILE_OK) {
            printf("compile: skipped\n");
            goto report;
        }
        co.cache_dir = dirbuf;
        /* 0: first compile (includes loading nvJitLink), 1-2: hits, 3: another key (miss,
         * library already loaded), 4: its hit */
        for (int k = 0; k < 5; k++) {
            static const char *const lineinfo[] = {"-lineinfo"};
            void *img = NULL;
            size_t n = 0;
            bool hit = false;
            char log[1024];
            uint64_t t0;
            if (k == 3) {
                co.options = lineinfo;
                co.noptions = 1;
            }
            t0 = agile__now_ns();
            int rv =
                agile_guard_compile(res.ptx, res.ptx_len, &co, &img, &n, &hit, log, sizeof(log));
            double ms = (double)(agile__now_ns() - t0) / 1e6;
            if (rv != AGILE_OK) {
                printf("compile: %s (%s)\n", agile_strerror(rv), log);
                break;
            }
            compile_ms[k] = ms;
            printf("compile %-20s %-28s %8.2f ms  (%zu bytes cubin, sm_90%s)\n",
                   strrchr(files[big].path, '/') + 1,
                   hit      ? "cache hit"
                   : k == 0 ? "cold miss (+ nvJitLink load)"
                            : "cold miss",
                   ms, n, co.noptions ? ", -lineinfo" : "");
            free(img);
        }
        agile_guard_result_fini(&res);
        {
            char cmd[200];
            snprintf(cmd, sizeof(cmd), "rm -rf %s", dirbuf);
            if (system(cmd) != 0) printf("(could not remove %s)\n", dirbuf);
        }
    }
report:
    if (json)
        printf("{\"bench\": \"guard\", \"files\": %zu, \"mb\": %.3f, \"sites_per_pass\": %zu, "
               "\"guard_cpu_mbs\": {\"p50\": %.1f, \"p99\": %.1f, \"runs\": %d}, "
               "\"verify_cpu_mbs\": {\"p50\": %.1f, \"p99\": %.1f, \"runs\": %d}, "
               "\"guard_wall_mbs\": {\"p50\": %.1f, \"p99\": %.1f, \"runs\": %d}, "
               "\"compile_cold_with_load_ms\": %.3f, \"compile_hit_ms\": %.3f, "
               "\"compile_cold_ms\": %.3f, \"goal_guard_mbs_ge_50\": %s}\n",
               nfiles, (double)total / 1e6, sites / (size_t)passes, mbs[runs / 2],
               mbs[(runs - 1) / 100], runs, vmbs[runs / 2], vmbs[(runs - 1) / 100], runs,
               wmbs[runs / 2], wmbs[(runs - 1) / 100], runs, compile_ms[0], compile_ms[1],
               compile_ms[3], mbs[runs / 2] >= 50 ? "true" : "false");
    return 0;
}
