#include "core.h"

#include <string.h>

void agile__put_blob(agile__wbuf *w, agile__blob b)
{
    agile__put_u32(w, b.n);
    if (w->overflow || w->cap - w->len < b.n) {
        w->overflow = 1;
        return;
    }
    if (b.n)
        memcpy(w->p + w->len, b.p, b.n);
    w->len += b.n;
}

agile__blob agile__get_blob(agile__rbuf *r)
{
    agile__blob b = {NULL, 0};
    uint32_t n = agile__get_u32(r);
    if (r->bad || r->len - r->off < n) {
        r->bad = 1;
        return b;
    }
    b.p = r->p + r->off;
    b.n = n;
    r->off += n;
    return b;
}

int agile__blob_str(agile__blob b, char *out, size_t cap)
{
    if (cap == 0 || b.n >= cap || (b.n && memchr(b.p, 0, b.n)))
        return AGILE_EINVAL;
    if (b.n)
        memcpy(out, b.p, b.n);
    out[b.n] = 0;
    return AGILE_OK;
}

const char *agile__msg_name(unsigned type)
{
    switch (type) {
#define X(name, id, req, rep)                                                                      \
    case id:                                                                                       \
        return #name;
        AGILE_MSG_LIST(X)
#undef X
    default:
        return "?";
    }
}

int agile__msg_rec(unsigned type, unsigned flags, int32_t status)
{
    int reply = (flags & AGILE_MSGF_REPLY) != 0;
    if (reply && status != AGILE_OK)
        return AGILE_REC_ID_error;
    switch (type) {
        /* PING's request and reply are the same record: identical branches are intended. */
#define X(name, id, req, rep)                                                                      \
    case id:                                                                                       \
        return reply ? AGILE_REC_ID_##rep : AGILE_REC_ID_##req; /* NOLINT(bugprone-branch-clone) */
        AGILE_MSG_LIST(X)
#undef X
    default:
        return -1;
    }
}

void agile__hdr_put(agile__wbuf *w, const agile__hdr *h)
{
    agile__put_u32(w, h->magic);
    agile__put_u16(w, h->major);
    agile__put_u16(w, h->minor);
    agile__put_u16(w, h->type);
    agile__put_u16(w, h->flags);
    agile__put_u32(w, h->body_len);
    agile__put_u64(w, h->req_id);
    agile__put_i32(w, h->status);
    agile__put_u32(w, h->spare);
}

int agile__hdr_decode(const uint8_t *buf, size_t len, agile__hdr *h)
{
    agile__rbuf r = {buf, len, 0, 0};
    if (!buf || len < AGILE_WIRE_HDR_SIZE)
        return AGILE_EPROTO;
    h->magic = agile__get_u32(&r);
    h->major = agile__get_u16(&r);
    h->minor = agile__get_u16(&r);
    h->type = agile__get_u16(&r);
    h->flags = agile__get_u16(&r);
    h->body_len = agile__get_u32(&r);
    h->req_id = agile__get_u64(&r);
    h->status = agile__get_i32(&r);
    h->spare = agile__get_u32(&r);
    if (h->magic != AGILE_WIRE_MAGIC)
        return AGILE_EPROTO;
    if (h->major != AGILE_WIRE_MAJOR)
        return AGILE_EVERSION;
    if (h->body_len > AGILE_WIRE_MAX_BODY)
        return AGILE_ETOOBIG;
    if (h->body_len != len - AGILE_WIRE_HDR_SIZE)
        return AGILE_EPROTO;
    if (h->flags & ~AGILE_MSGF_REPLY)
        return AGILE_EPROTO;
    if (h->type == 0 || h->type >= AGILE_MSG_MAX_)
        return AGILE_EPROTO;
    if (!(h->flags & AGILE_MSGF_REPLY) && h->status != 0)
        return AGILE_EPROTO;
    return AGILE_OK;
}

#define PUT_FIELD(kind, name) PUT_##kind(w, &rec->name);
#define PUT_U8(w, v) agile__put_u8(w, *(v))
#define PUT_U16(w, v) agile__put_u16(w, *(v))
#define PUT_U32(w, v) agile__put_u32(w, *(v))
#define PUT_U64(w, v) agile__put_u64(w, *(v))
#define PUT_I32(w, v) agile__put_i32(w, *(v))
#define PUT_BLOB(w, v) agile__put_blob(w, *(v))
#define GET_FIELD(kind, name) rec->name = GET_##kind(r);
#define GET_U8(r) agile__get_u8(r)
#define GET_U16(r) agile__get_u16(r)
#define GET_U32(r) agile__get_u32(r)
#define GET_U64(r) agile__get_u64(r)
#define GET_I32(r) agile__get_i32(r)
#define GET_BLOB(r) agile__get_blob(r)

static void body_put(agile__wbuf *w, const agile__msg *m, int rec_id)
{
    switch (rec_id) {
#define X(recname)                                                                                 \
    case AGILE_REC_ID_##recname: {                                                                 \
        const struct agile__rec_##recname *rec = &m->u.recname;                                    \
        (void)rec;                                                                                 \
        AGILE_REC_##recname(PUT_FIELD) break;                                                      \
    }
        AGILE_REC_LIST(X)
#undef X
    default:
        w->overflow = 1;
    }
}

static void body_get(agile__rbuf *r, agile__msg *m, int rec_id)
{
    switch (rec_id) {
#define X(recname)                                                                                 \
    case AGILE_REC_ID_##recname: {                                                                 \
        struct agile__rec_##recname *rec = &m->u.recname;                                          \
        (void)rec;                                                                                 \
        AGILE_REC_##recname(GET_FIELD) break;                                                      \
    }
        AGILE_REC_LIST(X)
#undef X
    default:
        r->bad = 1;
    }
}

size_t agile__msg_size(const agile__msg *m)
{
    /* Encode into a null sink that only counts. */
    int rec = agile__msg_rec(m->h.type, m->h.flags, m->h.status);
    size_t n = 0;
    if (rec < 0)
        return 0;
    switch (rec) {
#define SZ_FIELD(kind, name) n += SZ_##kind(rec_->name);
#define SZ_U8(v) 1
#define SZ_U16(v) 2
#define SZ_U32(v) 4
#define SZ_U64(v) 8
#define SZ_I32(v) 4
#define SZ_BLOB(v) (4u + (size_t)(v).n)
#define X(recname)                                                                                 \
    case AGILE_REC_ID_##recname: {                                                                 \
        const struct agile__rec_##recname *rec_ = &m->u.recname;                                   \
        (void)rec_;                                                                                \
        AGILE_REC_##recname(SZ_FIELD) break;                                                       \
    }
        AGILE_REC_LIST(X)
#undef X
    }
    return AGILE_WIRE_HDR_SIZE + n;
}

int agile__msg_encode(agile__msg *m, uint8_t *buf, size_t cap, size_t *len)
{
    agile__wbuf w = {buf, cap, 0, 0};
    int rec = agile__msg_rec(m->h.type, m->h.flags, m->h.status);
    size_t total = agile__msg_size(m);
    if (rec < 0)
        return AGILE_EINVAL;
    if (total - AGILE_WIRE_HDR_SIZE > AGILE_WIRE_MAX_BODY)
        return AGILE_ETOOBIG;
    if (total > cap)
        return AGILE_ETOOBIG;
    m->h.magic = AGILE_WIRE_MAGIC;
    m->h.major = AGILE_WIRE_MAJOR;
    m->h.minor = AGILE_WIRE_MINOR;
    m->h.spare = 0;
    m->h.body_len = (uint32_t)(total - AGILE_WIRE_HDR_SIZE);
    agile__hdr_put(&w, &m->h);
    body_put(&w, m, rec);
    if (w.overflow || w.len != total)
        return AGILE_EINTERNAL;
    *len = w.len;
    return AGILE_OK;
}

int agile__msg_decode(const uint8_t *buf, size_t len, agile__msg *m)
{
    agile__rbuf r;
    int rec;
    int rv;
    memset(m, 0, sizeof *m);
    if ((rv = agile__hdr_decode(buf, len, &m->h)) != AGILE_OK)
        return rv;
    rec = agile__msg_rec(m->h.type, m->h.flags, m->h.status);
    if (rec < 0)
        return AGILE_EPROTO;
    r.p = buf + AGILE_WIRE_HDR_SIZE;
    r.len = m->h.body_len;
    r.off = 0;
    r.bad = 0;
    body_get(&r, m, rec);
    /* Trailing bytes are fields of a newer minor; a shorter body is malformed. */
    if (r.bad)
        return AGILE_EPROTO;
    if (r.off != r.len && m->h.minor <= AGILE_WIRE_MINOR)
        return AGILE_EPROTO;
    return AGILE_OK;
}
