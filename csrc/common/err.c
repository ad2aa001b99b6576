#include "core.h"

#include <stdio.h>
#include <string.h>

static const char *err_msg(int code)
{
    switch (code) {
#define X(name, value, msg)                                                                        \
    case value:                                                                                    \
        return msg;
        AGILE_ERR_LIST(X)
#undef X
    default:
        return NULL;
    }
}

AGILE_API const char *agile_err_name(int err)
{
    switch (agile_err_class(err)) {
#define X(name, value, msg)                                                                        \
    case value:                                                                                    \
        return "AGILE_" #name;
        AGILE_ERR_LIST(X)
#undef X
    default:
        return "AGILE_E?";
    }
}

AGILE_API const char *agile_strerror(int err)
{
    static _Thread_local char buf[160];
    int cls = agile_err_class(err);
    int code = err & AGILE_ERR_CODE_MASK;
    const char *m = err_msg(cls);
    if (cls == AGILE_ESYSERR) {
        char tmp[96];
        /* GNU strerror_r returns the message (maybe not in tmp). */
        const char *s = strerror_r(code, tmp, sizeof tmp);
        snprintf(buf, sizeof buf, "%s", s);
        return buf;
    }
    if (cls == AGILE_ECUDA || cls == AGILE_ECUFFT) {
        snprintf(buf, sizeof buf, "%s %d", m, code);
        return buf;
    }
    if (m)
        return m;
    snprintf(buf, sizeof buf, "unknown error %d", err);
    return buf;
}

AGILE_API const char *agile_err_entry(unsigned i, int *code)
{
    static const struct {
        const char *name;
        int code;
    } tab[] = {
#define X(name, value, msg) {"AGILE_" #name, value},
        AGILE_ERR_LIST(X)
#undef X
    };
    if (i >= sizeof tab / sizeof tab[0]) return NULL;
    if (code) *code = tab[i].code;
    return tab[i].name;
}
