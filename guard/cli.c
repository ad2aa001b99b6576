/* cli.c — agile-guard: guard, verify and compile PTX from the command line.
 * Exit status: 0 guarded (or verified), 1 rejected (stderr: "file:line: reason"),
 * 2 usage or I/O error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core.h"
#include "guard.h"

#define MAXGATES 64

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: agile-guard [options] IN.ptx [-o OUT.ptx]\n"
        "       agile-guard --verify [--window-bits K] [--gap BYTES] [--gate NAME]... IN.ptx\n"
        "Rewrite untrusted PTX so that every global/generic memory access stays inside the\n"
        "tenant's window (see guard/guard.h for the contract).\n"
        "  --strict            compare instead of mask: skip and record out-of-window accesses\n"
        "  --window-bits K     fence with the immediate mask 2^K-1 (default: __agile_mask param)\n"
        "  --gap BYTES         guard gap mapped after the window (default 1048576)\n"
        "  --gate NAME         a worker function the module may call (repeatable)\n"
        "  --report FILE.json  write the per-kernel report\n"
        "  -o OUT.ptx          output (default stdout)\n"
        "  --verify            only run the independent verifier on IN.ptx (exit 0/1)\n"
        "  --compile ARCH      also compile the guarded PTX with nvJitLink (e.g. sm_90)\n"
        "  --cubin FILE        where --compile writes the image\n"
        "  --cache-dir DIR     compile cache (default $AGILE_GUARD_CACHE or ~/.cache/agile/guard)\n"
        "  --roundtrip         parse and print back unchanged (tests)\n"
        "  --no-verify         print the output even if the verifier refuses it (guard debugging)\n"
        "  --version           print the version\n"
        "  --help              this text\n"
        "Exit: 0 guarded/verified, 1 rejected, 2 usage or I/O error.\n");
}

static int read_all(const char *path, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (f == NULL) return agile_err_sys(errno);
    for (;;) {
        size_t k;
        if (cap - n < 65536) {
            char *nb = realloc(buf, cap * 2 + 65536);
            if (nb == NULL) {
                free(buf);
                if (f != stdin) fclose(f);
                return AGILE_ENOMEM;
            }
            buf = nb;
            cap = cap * 2 + 65536;
        }
        k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        if (f != stdin) fclose(f);
        return AGILE_ESYSERR | EIO;
    }
    if (f != stdin) fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return AGILE_OK;
}

static int write_all(const char *path, const void *p, size_t n)
{
    FILE *f = (path == NULL || strcmp(path, "-") == 0) ? stdout : fopen(path, "wb");
    int ok;
    if (f == NULL) return 0;
    ok = fwrite(p, 1, n, f) == n;
    if (f == stdout)
        ok = fflush(f) == 0 && ok;
    else
        ok = fclose(f) == 0 && ok;
    return ok;
}

/* Best effort: a missing cache directory only disables caching. */
static void mkdir_p(const char *dir)
{
    char p[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof(p)) return;
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == '\0') {
            char c = p[i];
            p[i] = '\0';
            mkdir(p, 0700);
            p[i] = c;
        }
    }
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *e;
    errno = 0;
    unsigned long long x = strtoull(s, &e, 0);
    if (errno || *s == '\0' || *e != '\0') return 0;
    *v = x;
    return 1;
}

int main(int argc, char **argv)
{
    agile_guard_opts o;
    const char *gates[MAXGATES];
    const char *in = NULL, *out = NULL, *report = NULL, *arch = NULL, *cubin = NULL, *cache = NULL;
    bool verify = false, roundtrip = false;
    char *src = NULL;
    size_t len = 0;
    agile_guard_result res;
    char cachebuf[4096];
    int rc = 2, rv;

    memset(&res, 0, sizeof(res));
    agile_guard_opts_init(&o);
    o.gates = gates;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v;
#define NEED()                                                                                     \
    do {                                                                                           \
        if (i + 1 >= argc) {                                                                       \
            fprintf(stderr, "agile-guard: %s needs a value\n", a);                                 \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (strcmp(a, "--version") == 0) {
            printf("agile-guard %s\n", AGILE_VERSION);
            rc = 0;
            goto out;
        } else if (strcmp(a, "--strict") == 0) {
            o.strict = true;
        } else if (strcmp(a, "--verify") == 0) {
            verify = true;
        } else if (strcmp(a, "--no-verify") == 0) {
            o.skip_verify = true; /* debugging the guard itself: print what the verifier refuses */
        } else if (strcmp(a, "--roundtrip") == 0) {
            roundtrip = true;
        } else if (strcmp(a, "--window-bits") == 0) {
            NEED();
            if (!parse_u64(argv[++i], &v) || v < 12 || v > 62) {
                fprintf(stderr, "agile-guard: --window-bits must be 12..62\n");
                goto out;
            }
            o.window_bits = (unsigned)v;
        } else if (strcmp(a, "--gap") == 0) {
            NEED();
            if (!parse_u64(argv[++i], &v) || v < AGILE_GUARD_ACCESS_SLACK) {
                fprintf(stderr, "agile-guard: --gap must be at least %u\n",
                        AGILE_GUARD_ACCESS_SLACK);
                goto out;
            }
            o.guard_gap = v;
        } else if (strcmp(a, "--gate") == 0) {
            NEED();
            if (o.ngates == MAXGATES) {
                fprintf(stderr, "agile-guard: too many --gate\n");
                goto out;
            }
            gates[o.ngates++] = argv[++i];
        } else if (strcmp(a, "--report") == 0) {
            NEED();
            report = argv[++i];
        } else if (strcmp(a, "-o") == 0) {
            NEED();
            out = argv[++i];
        } else if (strcmp(a, "--compile") == 0) {
            NEED();
            arch = argv[++i];
        } else if (strcmp(a, "--cubin") == 0) {
            NEED();
            cubin = argv[++i];
        } else if (strcmp(a, "--cache-dir") == 0) {
            NEED();
            cache = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "agile-guard: unknown option %s\n", a);
            usage(stderr);
            goto out;
        } else if (in == NULL) {
            in = a;
        } else {
            fprintf(stderr, "agile-guard: more than one input\n");
            goto out;
        }
#undef NEED
    }
    if (in == NULL) {
        usage(stderr);
        goto out;
    }
    rv = read_all(in, &src, &len);
    if (rv != AGILE_OK) {
        fprintf(stderr, "agile-guard: %s: %s\n", in, agile_strerror(rv));
        goto out;
    }
    o.filename = in;
    if (roundtrip) {
        char *p = NULL, err[300];
        size_t n = 0;
        rv = agile_guard_roundtrip(src, len, &p, &n, err, sizeof(err));
        if (rv != AGILE_OK) {
            fprintf(stderr, "%s:%s\n", in, rv == AGILE_EREJECT ? err : agile_strerror(rv));
            rc = rv == AGILE_EREJECT ? 1 : 2;
            goto out;
        }
        rc = write_all(out, p, n) ? 0 : 2;
        free(p);
        goto out;
    }
    if (verify) {
        agile_guard_vopts vo = {o.window_bits, o.guard_gap, gates, o.ngates};
        char err[300];
        rv = agile_guard_verify(src, len, &vo, err, sizeof(err));
        if (rv == AGILE_OK) {
            rc = 0;
        } else if (rv == AGILE_EGUARD) {
            fprintf(stderr, "%s:%s\n", in, err + 4); /* "line N: ..." -> "file:N: ..." */
            rc = 1;
        } else {
            fprintf(stderr, "agile-guard: %s\n", agile_strerror(rv));
        }
        goto out;
    }
    rv = agile_guard_ptx(src, len, &o, &res);
    if (report && res.report && !write_all(report, res.report, res.report_len)) {
        fprintf(stderr, "agile-guard: cannot write %s\n", report);
        goto out;
    }
    if (rv == AGILE_EREJECT || rv == AGILE_EGUARD) {
        fprintf(stderr, "%s\n", res.err);
        rc = 1;
        goto out;
    }
    if (rv != AGILE_OK) {
        fprintf(stderr, "agile-guard: %s\n", agile_strerror(rv));
        goto out;
    }
    if (!write_all(out, res.ptx, res.ptx_len)) {
        fprintf(stderr, "agile-guard: cannot write %s\n", out ? out : "stdout");
        goto out;
    }
    rc = 0;
    if (arch) {
        agile_guard_compile_opts co = {arch, NULL, 0, NULL, 0};
        void *img = NULL;
        size_t n = 0;
        bool hit = false;
        char log[4096];
        uint64_t t0 = agile__now_ns();
        if (cache == NULL) {
            const char *e = getenv("AGILE_GUARD_CACHE"), *home = getenv("HOME");
            if (e)
                cache = e;
            else if (home) {
                snprintf(cachebuf, sizeof(cachebuf), "%s/.cache/agile/guard", home);
                cache = cachebuf;
            }
        }
        if (cache) mkdir_p(cache);
        co.cache_dir = cache;
        rv = agile_guard_compile(res.ptx, res.ptx_len, &co, &img, &n, &hit, log, sizeof(log));
        if (rv != AGILE_OK) {
            fprintf(stderr, "agile-guard: compile for %s failed: %s\n%s\n", arch,
                    agile_strerror(rv), log);
            rc = rv == AGILE_EREJECT ? 1 : 2;
            goto out;
        }
        fprintf(stderr, "agile-guard: compiled for %s: %zu bytes, cache %s, %.1f ms\n", arch, n,
                cache ? (hit ? "hit" : "miss") : "off", (double)(agile__now_ns() - t0) / 1e6);
        if (cubin && !write_all(cubin, img, n)) {
            fprintf(stderr, "agile-guard: cannot write %s\n", cubin);
            rc = 2;
        }
        free(img);
    }
out:
    agile_guard_result_fini(&res);
    free(src);
    return rc;
}
