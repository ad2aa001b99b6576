/* wire.h — agile's versioned wire format (control plane over nng, fd socket records).
 *
 * Every message is a 32-byte little-endian header followed by a body:
 *
 *   off size field
 *     0   4  magic     AGILE_WIRE_MAGIC ("AGIL")
 *     4   2  major     AGILE_WIRE_MAJOR: a different major is refused (AGILE_EVERSION)
 *     6   2  minor     newer minors only append fields; decoders ignore trailing bytes
 *     8   2  type      AGILE_MSG_LIST
 *    10   2  flags     AGILE_MSGF_REPLY, others must be 0
 *    12   4  body_len  <= AGILE_WIRE_MAX_BODY, equal to the bytes that follow
 *    16   8  req_id    echoed in the reply
 *    24   4  status    replies: agile_err_t; requests: 0
 *    28   4  spare     0 on send, ignored on receipt
 *
 * Bodies are records of fixed-width integers and blobs (u32 length + bytes), each record
 * described once in AGILE_REC_* field lists below; the structs, encoders and decoders are
 * generated from those lists. A reply whose status is not AGILE_OK carries the `error`
 * record (a human-readable message) instead of the type's reply record.
 *
 * Decoders never read past the buffer: the reader has a sticky error flag and every get
 * checks the remaining length. Blobs decode as views into the buffer (not NUL-terminated).
 */
#ifndef AGILE_WIRE_H
#define AGILE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define AGILE_WIRE_MAGIC 0x4c494741u /* "AGIL" */
#define AGILE_WIRE_MAJOR 1u
#define AGILE_WIRE_MINOR 0u
#define AGILE_WIRE_HDR_SIZE 32u
#define AGILE_WIRE_MAX_BODY (16u << 20) /* PTX of big Triton kernels fits with room */
#define AGILE_MSGF_REPLY 0x1u

/* ---- primitive put/get ------------------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t cap, len;
    int overflow;
} agile__wbuf;

typedef struct {
    const uint8_t *p;
    size_t len, off;
    int bad;
} agile__rbuf;

typedef struct {
    const uint8_t *p;
    uint32_t n;
} agile__blob;

static inline void agile__put_le(agile__wbuf *w, uint64_t v, unsigned n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = 1;
        return;
    }
    for (unsigned i = 0; i < n; i++)
        w->p[w->len++] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t agile__get_le(agile__rbuf *r, unsigned n)
{
    uint64_t v = 0;
    if (r->bad || r->len - r->off < n) {
        r->bad = 1;
        return 0;
    }
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)r->p[r->off++] << (8 * i);
    return v;
}
static inline void agile__put_u8(agile__wbuf *w, uint8_t v) { agile__put_le(w, v, 1); }
static inline void agile__put_u16(agile__wbuf *w, uint16_t v) { agile__put_le(w, v, 2); }
static inline void agile__put_u32(agile__wbuf *w, uint32_t v) { agile__put_le(w, v, 4); }
static inline void agile__put_u64(agile__wbuf *w, uint64_t v) { agile__put_le(w, v, 8); }
static inline void agile__put_i32(agile__wbuf *w, int32_t v) { agile__put_le(w, (uint32_t)v, 4); }
static inline uint8_t agile__get_u8(agile__rbuf *r) { return (uint8_t)agile__get_le(r, 1); }
static inline uint16_t agile__get_u16(agile__rbuf *r) { return (uint16_t)agile__get_le(r, 2); }
static inline uint32_t agile__get_u32(agile__rbuf *r) { return (uint32_t)agile__get_le(r, 4); }
static inline uint64_t agile__get_u64(agile__rbuf *r) { return agile__get_le(r, 8); }
static inline int32_t agile__get_i32(agile__rbuf *r) { return (int32_t)agile__get_le(r, 4); }
void agile__put_blob(agile__wbuf *w, agile__blob b);
agile__blob agile__get_blob(agile__rbuf *r);
/* Copy a blob into a NUL-terminated string; AGILE_EINVAL if it holds a NUL or does not fit. */
int agile__blob_str(agile__blob b, char *out, size_t cap);
static inline agile__blob agile__blob_of(const void *p, size_t n)
{
    agile__blob b = {(const uint8_t *)p, (uint32_t)n};
    return b;
}

/* ---- records ----------------------------------------------------------------------------- */
/* Field kinds: U8 U16 U32 U64 I32 BLOB. */

#define AGILE_REC_empty(F)
#define AGILE_REC_error(F) F(BLOB, message)
#define AGILE_REC_hello_req(F)                                                                     \
    F(U16, major) F(U16, minor) F(U64, token_lo) F(U64, token_hi) F(U32, pid) F(U32, flags)
#define AGILE_REC_hello_rep(F)                                                                     \
    F(U16, major) F(U16, minor) F(U64, session) F(U32, tenant) F(U32, backend) F(U32, ndev)        \
    F(U64, quota) F(U32, priority) F(U32, flags)
#define AGILE_REC_ping(F) F(U64, nonce)
#define AGILE_REC_status_req(F) F(U32, format)
#define AGILE_REC_status_rep(F) F(BLOB, text)
#define AGILE_REC_handle(F) F(U64, handle)
#define AGILE_REC_obj_create_req(F) F(U32, type) F(U32, device)
#define AGILE_REC_lease_grow_req(F) F(U32, device) F(U32, flags) F(U64, bytes)
#define AGILE_REC_lease_grow_rep(F)                                                                \
    F(U64, handle) F(U64, offset) F(U64, size) F(U64, fd_seq) F(U32, nfds) F(U32, flags)
#define AGILE_REC_window_req(F) F(U32, device)
#define AGILE_REC_window_rep(F)                                                                    \
    F(U64, size) F(U32, bits) F(U32, flags) F(U64, quota) F(U64, leased) F(U64, granularity)
#define AGILE_REC_module_load_req(F) F(U32, device) F(U32, flags) F(BLOB, ptx)
#define AGILE_REC_module_load_rep(F) F(U64, handle) F(BLOB, log)
#define AGILE_REC_module_function_req(F) F(U64, module) F(BLOB, name)
#define AGILE_REC_module_function_rep(F) F(U64, handle) F(U32, nparams) F(BLOB, param_sizes)
#define AGILE_REC_mod_ctl_req(F) F(U32, module) F(U32, op) F(U32, device) F(BLOB, payload)
#define AGILE_REC_mod_ctl_rep(F) F(U64, handle) F(BLOB, payload)
/* mod_ctl_req.op with this bit set: run data-plane op (op & ~AGILE_MODULE_CTL_EXEC)
 * synchronously over the control plane, payload = the op's args. The worker serves it
 * through the same entry point as the ring and replies once the op is complete. */
#define AGILE_MODULE_CTL_EXEC 0x80000000u
#define AGILE_REC_ring_attach_req(F) F(U32, slots) F(U32, flags)
#define AGILE_REC_ring_attach_rep(F) F(U64, handle) F(U64, fd_seq) F(U32, nfds) F(U32, flags)

#define AGILE_REC_LIST(X)                                                                          \
    X(empty) X(error) X(hello_req) X(hello_rep) X(ping) X(status_req) X(status_rep) X(handle)     \
    X(obj_create_req) X(lease_grow_req) X(lease_grow_rep) X(window_req) X(window_rep)             \
    X(module_load_req) X(module_load_rep) X(module_function_req) X(module_function_rep)           \
    X(mod_ctl_req) X(mod_ctl_rep) X(ring_attach_req) X(ring_attach_rep)

/* X(NAME, id, request record, reply record): the only list of message types. */
#define AGILE_MSG_LIST(X)                                                                          \
    X(HELLO, 1, hello_req, hello_rep)                                                              \
    X(PING, 2, ping, ping)                                                                         \
    X(STATUS, 3, status_req, status_rep)                                                           \
    X(BYE, 4, empty, empty)                                                                        \
    X(OBJ_CREATE, 5, obj_create_req, handle)                                                       \
    X(OBJ_DESTROY, 6, handle, empty)                                                               \
    X(LEASE_GROW, 7, lease_grow_req, lease_grow_rep)                                               \
    X(LEASE_RELEASE, 8, handle, empty)                                                             \
    X(WINDOW, 9, window_req, window_rep)                                                           \
    X(MODULE_LOAD, 10, module_load_req, module_load_rep)                                           \
    X(MODULE_UNLOAD, 11, handle, empty)                                                            \
    X(MODULE_FUNCTION, 12, module_function_req, module_function_rep)                               \
    X(MOD_CTL, 13, mod_ctl_req, mod_ctl_rep)                                                       \
    X(RING_ATTACH, 14, ring_attach_req, ring_attach_rep)

enum {
#define X(name, id, req, rep) AGILE_MSG_##name = id,
    AGILE_MSG_LIST(X)
#undef X
    AGILE_MSG_MAX_
};

#define AGILE__FT_U8 uint8_t
#define AGILE__FT_U16 uint16_t
#define AGILE__FT_U32 uint32_t
#define AGILE__FT_U64 uint64_t
#define AGILE__FT_I32 int32_t
#define AGILE__FT_BLOB agile__blob
#define AGILE__FIELD_DECL(kind, name) AGILE__FT_##kind name;
#define X(rec)                                                                                     \
    struct agile__rec_##rec {                                                                      \
        char unused_; /* empty records stay valid C */                                             \
        AGILE_REC_##rec(AGILE__FIELD_DECL)                                                         \
    };
AGILE_REC_LIST(X)
#undef X

/* Record ids, for the generic encoder/decoder. */
enum {
#define X(rec) AGILE_REC_ID_##rec,
    AGILE_REC_LIST(X)
#undef X
    AGILE_REC_ID_MAX_
};

typedef struct agile__hdr {
    uint32_t magic;
    uint16_t major, minor, type, flags;
    uint32_t body_len;
    uint64_t req_id;
    int32_t status;
    uint32_t spare;
} agile__hdr;

typedef struct agile__msg {
    agile__hdr h;
    union {
#define X(rec) struct agile__rec_##rec rec;
        AGILE_REC_LIST(X)
#undef X
    } u;
} agile__msg;

const char *agile__msg_name(unsigned type);
/* The record a message of this type/flags/status carries (-1: unknown type). */
int agile__msg_rec(unsigned type, unsigned flags, int32_t status);

void agile__hdr_put(agile__wbuf *w, const agile__hdr *h);
/* Decode and validate a header against len, the size of the whole message. */
int agile__hdr_decode(const uint8_t *buf, size_t len, agile__hdr *h);

/* agile__msg_size: bytes agile__msg_encode will write for m (header included). */
size_t agile__msg_size(const agile__msg *m);
/* Encode m (its h.type/flags/status/req_id are used; magic, version, body_len are set). */
int agile__msg_encode(agile__msg *m, uint8_t *buf, size_t cap, size_t *len);
/* Decode a whole message. Blobs in m point into buf. AGILE_EPROTO on malformed input,
 * AGILE_EVERSION on another major, AGILE_ETOOBIG on an oversized body. */
int agile__msg_decode(const uint8_t *buf, size_t len, agile__msg *m);

/* ---- fd socket records -------------------------------------------------------------------- */
/* Worker → client over DIR/agile.fd.sock, each 48 bytes little-endian, optionally with one fd
 * in SCM_RIGHTS: magic u32 "AGFD", version u16 (1), kind u16, seq u64 (per session, from 1),
 * handle u64, a u64, b u64, spare u64. TOKEN: handle = session id, a/b = the one-time token
 * for HELLO; LEASE: a = window offset, b = size, fd = the memory; RING: the ring region;
 * REFUSED (instead of TOKEN, then the worker hangs up): a = the agile_err_t (AGILE_ELIMIT,
 * AGILE_EBUSY), handle = which limit (AGILE_FDREFUSE_*), b = its value. */
#define AGILE_FDREC_MAGIC 0x44464741u
#define AGILE_FDREC_SIZE 48u
enum { AGILE_FDREC_TOKEN = 1, AGILE_FDREC_LEASE = 2, AGILE_FDREC_RING = 3, AGILE_FDREC_REFUSED = 4 };
enum { AGILE_FDREFUSE_WORKER = 0, AGILE_FDREFUSE_SESSIONS = 1, AGILE_FDREFUSE_PENDING = 2 };

#endif
