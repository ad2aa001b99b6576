/* compile.c — guarded PTX -> cubin through nvJitLink, with an on-disk cache.
 *
 * nvJitLink is dlopen()ed on first use, so the guard's binaries start on machines without
 * the CUDA toolkit (compile then fails with AGILE_ENOTSUP). The driver JIT costs ~100 ms
 * even for a one-line kernel, so images are cached under the SHA-256 of (guarded PTX,
 * arch, options): <cache_dir>/<hex>.cubin, written to a temporary file and renamed, so a
 * reader never sees a partial image. A hit refreshes the file's mtime; after a store the
 * directory is trimmed, oldest mtime first, until it holds at most cache_max bytes.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "guard.h"

/* The nvJitLink entry points we use (nvJitLink.h, CUDA 12/13: plain names are exported). */
typedef int (*jl_create_t)(void **h, uint32_t nopt, const char **opts);
typedef int (*jl_destroy_t)(void **h);
typedef int (*jl_add_t)(void *h, int kind, const void *data, size_t size, const char *name);
typedef int (*jl_complete_t)(void *h);
typedef int (*jl_size_t)(void *h, size_t *size);
typedef int (*jl_get_t)(void *h, void *buf);
typedef int (*jl_log_t)(void *h, char *buf);

#define JL_INPUT_PTX 2 /* NVJITLINK_INPUT_PTX (nvJitLink.h: NONE 0, CUBIN 1, PTX 2) */

static struct {
    pthread_once_t once;
    void *lib;
    jl_create_t create;
    jl_destroy_t destroy;
    jl_add_t add;
    jl_complete_t complete;
    jl_size_t cubin_size, log_size;
    jl_get_t cubin;
    jl_log_t log;
} jl = {PTHREAD_ONCE_INIT};

static void jl_load(void)
{
    static const char *const names[] = {
        "libnvJitLink.so.13", "libnvJitLink.so.12", "libnvJitLink.so",
        "/usr/local/cuda/lib64/libnvJitLink.so.13", "/usr/local/cuda/lib64/libnvJitLink.so.12"};
    const char *env = getenv("AGILE_NVJITLINK");
    void *h = env ? dlopen(env, RTLD_NOW | RTLD_LOCAL) : NULL;
    for (size_t i = 0; h == NULL && i < AGILE_ARRAY_LEN(names); i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) return;
    jl.create = (jl_create_t)dlsym(h, "nvJitLinkCreate");
    jl.destroy = (jl_destroy_t)dlsym(h, "nvJitLinkDestroy");
    jl.add = (jl_add_t)dlsym(h, "nvJitLinkAddData");
    jl.complete = (jl_complete_t)dlsym(h, "nvJitLinkComplete");
    jl.cubin_size = (jl_size_t)dlsym(h, "nvJitLinkGetLinkedCubinSize");
    jl.cubin = (jl_get_t)dlsym(h, "nvJitLinkGetLinkedCubin");
    jl.log_size = (jl_size_t)dlsym(h, "nvJitLinkGetErrorLogSize");
    jl.log = (jl_log_t)dlsym(h, "nvJitLinkGetErrorLog");
    if (!jl.create || !jl.destroy || !jl.add || !jl.complete || !jl.cubin_size || !jl.cubin ||
        !jl.log_size || !jl.log) {
        dlclose(h);
        memset(&jl.create, 0, sizeof(void *) * 8);
        return;
    }
    jl.lib = h;
}

static int read_file(const char *path, void **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    int rv = AGILE_OK;

    if (fd < 0) return errno == ENOENT ? AGILE_ENOENT : agile_err_sys(errno);
    if (fstat(fd, &st) != 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            rv = k < 0 ? agile_err_sys(errno) : AGILE_EPROTO;
            goto out;
        }
        got += (size_t)k;
    }
    *out = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rv;
}

static int write_atomic(const char *dir, const char *path, const void *data, size_t len)
{
    char tmp[4200];
    int fd = -1, rv = AGILE_OK;
    size_t put = 0;

    snprintf(tmp, sizeof(tmp), "%s/.tmp.%ld.XXXXXX", dir, (long)getpid());
    fd = mkstemp(tmp);
    if (fd < 0) return agile_err_sys(errno);
    while (put < len) {
        ssize_t k = write(fd, (const char *)data + put, len - put);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            rv = agile_err_sys(k < 0 ? errno : EIO);
            goto out;
        }
        put += (size_t)k;
    }
    if (close(fd) != 0) {
        fd = -1;
        rv = agile_err_sys(errno);
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) rv = agile_err_sys(errno);
out:
    if (fd >= 0) close(fd);
    if (rv != AGILE_OK) unlink(tmp);
    return rv;
}

typedef struct centry {
    char name[80];
    off_t size;
    struct timespec mtime;
} centry;

static int cmp_age(const void *a, const void *b)
{
    const centry *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec) return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : (x->mtime.tv_nsec > y->mtime.tv_nsec);
}

/* Evict the least recently used images until the directory holds at most max bytes. */
static void trim(const char *dir, uint64_t max)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    centry *v = NULL;
    size_t n = 0, cap = 0;
    uint64_t total = 0;
    char path[4200];

    if (d == NULL) return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        size_t nl = strlen(e->d_name);
        if (nl < 7 || nl >= sizeof(v->name) || strcmp(e->d_name + nl - 6, ".cubin") != 0) continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            centry *nv = realloc(v, nc * sizeof(centry));
            if (nv == NULL) break;
            v = nv;
            cap = nc;
        }
        memcpy(v[n].name, e->d_name, nl + 1);
        v[n].size = st.st_size;
        v[n].mtime = st.st_mtim;
        total += (uint64_t)st.st_size;
        n++;
    }
    closedir(d);
    if (n > 0) qsort(v, n, sizeof(centry), cmp_age);
    for (size_t i = 0; i < n && total > max; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, v[i].name);
        if (unlink(path) == 0) total -= (uint64_t)v[i].size;
    }
    free(v);
}

static int jit(const char *ptx, size_t len, const agile_guard_compile_opts *o, void **image,
               size_t *image_len, char *log, size_t logcap)
{
    const char *opts[34];
    char archopt[64];
    uint32_t nopt = 0;
    void *h = NULL;
    void *buf = NULL;
    size_t n = 0;
    int rv = AGILE_OK;

    pthread_once(&jl.once, jl_load);
    if (jl.lib == NULL) {
        if (log && logcap) snprintf(log, logcap, "libnvJitLink.so could not be loaded");
        return AGILE_ENOTSUP;
    }
    snprintf(archopt, sizeof(archopt), "-arch=%s", o->arch);
    opts[nopt++] = archopt;
    for (size_t i = 0; i < o->noptions && nopt < AGILE_ARRAY_LEN(opts); i++)
        opts[nopt++] = o->options[i];
    if (jl.create(&h, nopt, opts) != 0) {
        if (log && logcap) snprintf(log, logcap, "nvJitLinkCreate failed (bad arch or option?)");
        return AGILE_EINVAL;
    }
    if (jl.add(h, JL_INPUT_PTX, ptx, len, "guarded.ptx") != 0 || jl.complete(h) != 0) {
        size_t ls = 0;
        if (log && logcap) {
            log[0] = '\0';
            if (jl.log_size(h, &ls) == 0 && ls > 0) {
                char *l = malloc(ls + 1);
                if (l && jl.log(h, l) == 0) {
                    l[ls] = '\0';
                    snprintf(log, logcap, "%s", l);
                }
                free(l);
            }
        }
        rv = AGILE_EREJECT;
        goto out;
    }
    if (jl.cubin_size(h, &n) != 0 || n == 0) {
        rv = AGILE_EINTERNAL;
        goto out;
    }
    buf = malloc(n);
    if (buf == NULL) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    if (jl.cubin(h, buf) != 0) {
        rv = AGILE_EINTERNAL;
        goto out;
    }
    *image = buf;
    *image_len = n;
    buf = NULL;
out:
    free(buf);
    jl.destroy(&h);
    return rv;
}

int agile_guard_compile(const char *ptx, size_t len, const agile_guard_compile_opts *o,
                        void **image, size_t *image_len, bool *hit, char *log, size_t logcap)
{
    uint8_t key[32];
    char path[4200];
    const void *bufs[3 + 32];
    size_t lens[3 + 32], nb = 0;
    int rv;

    *hit = false;
    *image = NULL;
    *image_len = 0;
    if (ptx == NULL || o == NULL || o->arch == NULL || o->noptions > 32 || strlen(o->arch) > 32)
        return AGILE_EINVAL;
    if (o->cache_dir == NULL) return jit(ptx, len, o, image, image_len, log, logcap);
    /* Key: every input of the compile, each with its terminating NUL as a separator. */
    bufs[nb] = ptx, lens[nb++] = len;
    bufs[nb] = "", lens[nb++] = 1;
    bufs[nb] = o->arch, lens[nb++] = strlen(o->arch) + 1;
    for (size_t i = 0; i < o->noptions; i++)
        bufs[nb] = o->options[i], lens[nb++] = strlen(o->options[i]) + 1;
    agile_guard_sha256(bufs, lens, nb, key);
    {
        int k = snprintf(path, sizeof(path), "%s/", o->cache_dir);
        if (k < 0 || (size_t)k + 72 > sizeof(path)) return AGILE_EINVAL;
        for (size_t i = 0; i < 32; i++)
            snprintf(path + (size_t)k + 2 * i, 3, "%02x", key[i]);
        strcat(path, ".cubin");
    }
    rv = read_file(path, image, image_len);
    if (rv == AGILE_OK) {
        *hit = true;
        utimensat(AT_FDCWD, path, NULL, 0); /* LRU: a hit is a use */
        return AGILE_OK;
    }
    rv = jit(ptx, len, o, image, image_len, log, logcap);
    if (rv != AGILE_OK) return rv;
    if (mkdir(o->cache_dir, 0700) != 0 && errno != EEXIST)
        return AGILE_OK; /* compiled; caching is best effort */
    if (write_atomic(o->cache_dir, path, *image, *image_len) == AGILE_OK)
        trim(o->cache_dir, o->cache_max ? o->cache_max : (256ull << 20));
    return AGILE_OK;
}
