#include "config.h"

#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define MAX_CONFIG_BYTES (1u << 20)

void agile__config_defaults(agile__config *c)
{
    memset(c, 0, sizeof *c);
    c->dflt.quota = 8ull << 30;
    c->dflt.modules = AGILE_MODULE_ALL;
    c->dflt.priority = 1;
    c->dflt.time_limit_ms = 10000;
    c->dflt.lease_step = 64ull << 20;
    c->dflt.max_sessions = 128;
    c->dflt.max_pending = 64;
    c->dflt.max_objects = 65536;
    c->dflt.max_requests = 16;
    c->dflt.max_module_loads = 4;
    c->dflt.max_module_bytes = 4ull << 20;
}

int agile__parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suf;
        uint64_t mul;
    } sufs[] = {{"", 1},
                {"k", 1ull << 10}, {"kib", 1ull << 10}, {"kb", 1000ull},
                {"m", 1ull << 20}, {"mib", 1ull << 20}, {"mb", 1000000ull},
                {"g", 1ull << 30}, {"gib", 1ull << 30}, {"gb", 1000000000ull},
                {"t", 1ull << 40}, {"tib", 1ull << 40}, {"tb", 1000000000000ull}};
    uint64_t v = 0;
    const char *p = s;
    char suf[8];
    size_t n = 0;
    if (!isdigit((unsigned char)*p))
        return AGILE_EINVAL;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p++ - '0');
        if (v > (UINT64_MAX - d) / 10)
            return AGILE_EINVAL;
        v = v * 10 + d;
    }
    while (*p == ' ')
        p++;
    while (*p && n < sizeof suf - 1)
        suf[n++] = (char)tolower((unsigned char)*p++);
    suf[n] = 0;
    if (*p)
        return AGILE_EINVAL;
    for (size_t i = 0; i < AGILE_ARRAY_LEN(sufs); i++) {
        if (!strcmp(suf, sufs[i].suf)) {
            if (v && sufs[i].mul > UINT64_MAX / v)
                return AGILE_EINVAL;
            *out = v * sufs[i].mul;
            return AGILE_OK;
        }
    }
    return AGILE_EINVAL;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t v;
    if (agile__parse_size(s, &v) != AGILE_OK || v < lo || v > hi)
        return AGILE_EINVAL;
    *out = (uint32_t)v;
    return AGILE_OK;
}

static int parse_modules(char *s, uint32_t *out)
{
    uint32_t m = 0;
    char *save = NULL;
    if (!strcmp(s, "all")) {
        *out = AGILE_MODULE_ALL;
        return AGILE_OK;
    }
    if (!strcmp(s, "none")) {
        *out = 0;
        return AGILE_OK;
    }
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *e = tok + strlen(tok);
        while (e > tok && e[-1] == ' ')
            *--e = 0;
#define X(NAME, id, name)                                                                          \
    if (!strcmp(tok, name)) {                                                                      \
        m |= AGILE_MODULE_BIT(id);                                                                 \
        continue;                                                                                  \
    }
        AGILE_MODULE_ID_LIST(X)
#undef X
        return AGILE_EINVAL;
    }
    *out = m;
    return AGILE_OK;
}

/* The per-uid count limits: key, bounds, where in the policy, the error. */
typedef struct {
    const char *key;
    uint32_t lo, hi;
    size_t off;
    const char *why;
} limit_spec;

static const limit_spec *limit_key(const char *key)
{
    static const limit_spec specs[] = {
        {"max_sessions", 1, 4096, offsetof(agile__policy, max_sessions),
         "max_sessions must be 1..4096"},
        {"max_pending", 1, 4096, offsetof(agile__policy, max_pending),
         "max_pending must be 1..4096"},
        {"max_objects", 16, 1u << 20, offsetof(agile__policy, max_objects),
         "max_objects must be 16..1048576"},
        {"max_requests", 1, AGILE_CONFIG_MAX_REQUESTS, offsetof(agile__policy, max_requests),
         "max_requests must be 1..32"},
        {"max_module_loads", 1, AGILE_CONFIG_MAX_REQUESTS,
         offsetof(agile__policy, max_module_loads), "max_module_loads must be 1..32"},
    };
    for (size_t i = 0; i < AGILE_ARRAY_LEN(specs); i++)
        if (!strcmp(key, specs[i].key))
            return &specs[i];
    return NULL;
}

static void trim(char **s)
{
    char *p = *s, *e;
    while (*p == ' ' || *p == '\t')
        p++;
    e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = 0;
    *s = p;
}

int agile__config_check_listen(const char *url)
{
    const char *p = url, *host, *colon;
    size_t n = strlen(url);
    if (n >= AGILE_METRICS_URL_MAX || strncmp(url, "http://", 7) != 0)
        return AGILE_EINVAL;
    host = p = url + 7;
    if (*p == '[') {
        p += 1 + strspn(p + 1, "0123456789abcdefABCDEF:.");
        if (*p++ != ']' || p - host < 3)
            return AGILE_EINVAL;
    } else {
        p += strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
        if (p == host)
            return AGILE_EINVAL;
    }
    colon = p;
    if (*colon != ':' || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)
        return AGILE_EINVAL;
    return AGILE_OK;
}

static int resolve_tenant(const char *name, uint32_t *uid)
{
    uint32_t v;
    if (parse_u32(name, 0, UINT32_MAX - 1, &v) == AGILE_OK) {
        *uid = v;
        return AGILE_OK;
    }
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwnam_r(name, &pw, buf, sizeof buf, &res) != 0 || !res)
        return AGILE_ENOENT;
    *uid = (uint32_t)res->pw_uid;
    return AGILE_OK;
}

int agile__config_parse(agile__config *c, const char *text, size_t len, char *err, size_t errcap)
{
    agile__policy *cur = &c->dflt;
    int in_worker = 0; /* in the [worker] section */
    char line[512];
    size_t pos = 0;
    unsigned lineno = 0;
    const char *why = NULL;
    const limit_spec *lim;

    agile__config_defaults(c);
    if (len > MAX_CONFIG_BYTES) {
        snprintf(err, errcap, "config larger than %u bytes", MAX_CONFIG_BYTES);
        return AGILE_ECONFIG;
    }
    while (pos < len) {
        size_t n = 0;
        char *s, *eq, *key, *val;
        lineno++;
        while (pos < len && text[pos] != '\n') {
            if (n < sizeof line - 1)
                line[n++] = text[pos];
            else
                why = "line too long";
            if (text[pos] == 0)
                why = "NUL byte";
            pos++;
        }
        pos++; /* the newline */
        line[n] = 0;
        if (why)
            goto bad;
        if ((s = strchr(line, '#')))
            *s = 0;
        s = line;
        trim(&s);
        if (!*s)
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (!end || end[1]) {
                why = "section header must be [default], [tenant UID|NAME] or [worker]";
                goto bad;
            }
            *end = 0;
            s++;
            trim(&s);
            in_worker = !strcmp(s, "worker");
            if (in_worker)
                continue;
            if (!strcmp(s, "default")) {
                cur = &c->dflt;
                continue;
            }
            if (strncmp(s, "tenant ", 7) != 0 && strncmp(s, "tenant\t", 7) != 0) {
                why = "section header must be [default], [tenant UID|NAME] or [worker]";
                goto bad;
            }
            s += 6;
            trim(&s);
            uint32_t uid;
            if (resolve_tenant(s, &uid) != AGILE_OK) {
                why = "unknown tenant (not a uid nor a user name)";
                goto bad;
            }
            uint32_t i;
            for (i = 0; i < c->nrules && c->rules[i].uid != uid; i++)
                ;
            if (i == c->nrules) {
                if (c->nrules == AGILE_MAX_TENANT_RULES) {
                    why = "too many tenant sections";
                    goto bad;
                }
                c->rules[i].uid = uid;
                c->rules[i].pol = c->dflt; /* sections inherit what [default] said so far */
                c->nrules++;
            }
            cur = &c->rules[i].pol;
            continue;
        }
        if (!(eq = strchr(s, '='))) {
            why = "expected key = value";
            goto bad;
        }
        *eq = 0;
        key = s;
        val = eq + 1;
        trim(&key);
        trim(&val);
        if (in_worker) {
            if (strcmp(key, "metrics_listen") != 0) {
                why = "unknown key in [worker] (known: metrics_listen)";
                goto bad;
            }
            if (*val && agile__config_check_listen(val) != AGILE_OK) {
                why = "metrics_listen must be http://HOST:PORT (HOST a name, an IPv4 address "
                      "or [IPv6]), or empty for none";
                goto bad;
            }
            snprintf(c->metrics_listen, sizeof c->metrics_listen, "%s", val);
        } else if (!strcmp(key, "quota")) {
            if (agile__parse_size(val, &cur->quota) != AGILE_OK) {
                why = "bad size for quota";
                goto bad;
            }
        } else if (!strcmp(key, "lease_step")) {
            if (agile__parse_size(val, &cur->lease_step) != AGILE_OK || cur->lease_step == 0) {
                why = "bad size for lease_step";
                goto bad;
            }
        } else if (!strcmp(key, "modules")) {
            if (parse_modules(val, &cur->modules) != AGILE_OK) {
                why = "unknown module in modules (known: fft, guard)";
                goto bad;
            }
        } else if (!strcmp(key, "priority")) {
            if (parse_u32(val, 1, 16, &cur->priority) != AGILE_OK) {
                why = "priority must be 1..16";
                goto bad;
            }
        } else if (!strcmp(key, "time_limit_ms")) {
            if (parse_u32(val, 0, 86400000, &cur->time_limit_ms) != AGILE_OK) {
                why = "time_limit_ms must be 0..86400000";
                goto bad;
            }
        } else if ((lim = limit_key(key))) {
            if (parse_u32(val, lim->lo, lim->hi, (uint32_t *)((char *)cur + lim->off)) !=
                AGILE_OK) {
                why = lim->why;
                goto bad;
            }
        } else if (!strcmp(key, "max_module_bytes")) {
            if (agile__parse_size(val, &cur->max_module_bytes) != AGILE_OK ||
                cur->max_module_bytes < 1024 || cur->max_module_bytes > AGILE_CONFIG_MAX_MODULE) {
                why = "max_module_bytes must be 1KiB..15MiB";
                goto bad;
            }
        } else {
            why = "unknown key (known: quota, modules, priority, time_limit_ms, lease_step, "
                  "max_sessions, max_pending, max_objects, max_requests, max_module_loads, "
                  "max_module_bytes)";
            goto bad;
        }
    }
    return AGILE_OK;
bad:
    snprintf(err, errcap, "line %u: %s", lineno, why);
    return AGILE_ECONFIG;
}

int agile__config_load(agile__config *c, const char *path, char *err, size_t errcap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    ssize_t got;
    int rv;
    if (fd < 0) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return agile_err_sys(errno);
    }
    if (fstat(fd, &st) != 0 || st.st_size > (off_t)MAX_CONFIG_BYTES) {
        snprintf(err, errcap, "%s: not readable or larger than 1 MiB", path);
        close(fd);
        return AGILE_ECONFIG;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return AGILE_ENOMEM;
    }
    got = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (got < 0) {
        free(buf);
        return agile_err_sys(errno);
    }
    rv = agile__config_parse(c, buf, (size_t)got, err, errcap);
    free(buf);
    return rv;
}

const agile__policy *agile__config_policy(const agile__config *c, uint32_t uid)
{
    for (uint32_t i = 0; i < c->nrules; i++)
        if (c->rules[i].uid == uid)
            return &c->rules[i].pol;
    return &c->dflt;
}
