/* agile/err.h — the one error type of agile.
 *
 * Every function of the C API returns agile_err_t: AGILE_OK (0) or a positive code from
 * AGILE_ERR_LIST. Errors of the OS, the CUDA driver and cuFFT are wrapped, not lost: the
 * code carries the original value in its low bits under a class flag (as nng does with
 * NNG_ESYSERR), so agile_strerror() can name both.
 */
#ifndef AGILE_ERR_H
#define AGILE_ERR_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(AGILE_BUILDING)
#define AGILE_API __attribute__((visibility("default")))
#else
#define AGILE_API
#endif

/* X(name, value, message): the only list of error codes. */
#define AGILE_ERR_LIST(X)                                                                      \
    X(OK, 0, "success")                                                                        \
    X(EINVAL, 1, "invalid argument")                                                           \
    X(ENOMEM, 2, "out of memory")                                                              \
    X(EQUOTA, 3, "tenant quota exceeded")                                                      \
    X(EHANDLE, 4, "invalid, stale or foreign handle")                                          \
    X(EPROTO, 5, "protocol error")                                                             \
    X(EVERSION, 6, "incompatible protocol version")                                            \
    X(ETIMEDOUT, 7, "timed out")                                                               \
    X(ECLOSED, 8, "connection closed")                                                         \
    X(EBUSY, 9, "resource busy")                                                               \
    X(ENODEV, 10, "no usable GPU")                                                             \
    X(EBOUNDS, 11, "access outside the tenant's window")                                       \
    X(EGUARD, 12, "guard violation")                                                           \
    X(EREJECT, 13, "PTX rejected by the guard")                                                \
    X(EPERM, 14, "not permitted by policy")                                                    \
    X(ENOTSUP, 15, "not supported")                                                            \
    X(ENOENT, 16, "not found")                                                                 \
    X(ETOOBIG, 17, "message or object too large")                                              \
    X(EFULL, 18, "ring full")                                                                  \
    X(ENOWORKER, 19, "no worker is running")                                                   \
    X(ECONFIG, 20, "invalid configuration")                                                    \
    X(ETIMELIMIT, 21, "kernel exceeded its time limit")                                        \
    X(EINTERNAL, 22, "internal error")                                                         \
    X(EFAULT, 23, "a kernel of this tenant faulted the GPU; its sessions were ended")          \
    X(ERESET, 24, "GPU context reset after another tenant's fault; work in flight was lost")   \
    X(EWORKER, 25, "the worker cannot complete stream-ordered work (gone or context lost)")    \
    X(ELIMIT, 26, "tenant limit reached (sessions, connections, objects or requests)")        \
    X(ESYSERR, 0x10000000, "operating system error")                                           \
    X(ECUDA, 0x20000000, "CUDA driver error")                                                  \
    X(ECUFFT, 0x30000000, "cuFFT error")

typedef enum agile_err {
#define AGILE__ERR_ENUM(name, value, msg) AGILE_##name = value,
    AGILE_ERR_LIST(AGILE__ERR_ENUM)
#undef AGILE__ERR_ENUM
} agile_err_t;

/* Class flags of wrapped errors; the low 28 bits hold the original code. */
#define AGILE_ERR_CLASS_MASK 0x70000000
#define AGILE_ERR_CODE_MASK 0x0fffffff

/* agile_strerror: a message for err, naming the wrapped OS/CUDA/cuFFT error where there is
 * one. The string is static or thread-local; it stays valid until the next call on the
 * same thread. Never NULL. */
AGILE_API const char *agile_strerror(int err);

/* agile_err_name: the symbolic name ("AGILE_EQUOTA"). Static storage. Never NULL. */
AGILE_API const char *agile_err_name(int err);

/* agile_err_entry: the name of the i-th code of AGILE_ERR_LIST ("AGILE_EQUOTA"); *code (may
 * be NULL) gets its value. NULL for i past the end. Static storage. Bindings read the codes
 * through it instead of copying them. */
AGILE_API const char *agile_err_entry(unsigned i, int *code);

/* agile_err_sys / agile_err_cuda / agile_err_cufft: wrap an errno / CUresult / cufftResult. */
static inline int agile_err_sys(int errnum)
{
    return errnum ? (int)AGILE_ESYSERR | (errnum & AGILE_ERR_CODE_MASK) : AGILE_OK;
}
static inline int agile_err_cuda(int cu)
{
    return cu ? (int)AGILE_ECUDA | (cu & AGILE_ERR_CODE_MASK) : AGILE_OK;
}
static inline int agile_err_cufft(int r)
{
    return r ? (int)AGILE_ECUFFT | (r & AGILE_ERR_CODE_MASK) : AGILE_OK;
}
/* agile_err_class: the plain code of err (AGILE_ESYSERR for any wrapped errno, ...). */
static inline int agile_err_class(int err)
{
    return (err & AGILE_ERR_CLASS_MASK) ? (err & AGILE_ERR_CLASS_MASK) : err;
}

#ifdef __cplusplus
}
#endif
#endif
