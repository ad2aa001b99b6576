/* ring.c — shared-memory command/completion rings (see ring.h for the layout and the trust
 * model). */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "ring counters must be lock-free across processes");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "ring wait words must be lock-free across processes");
_Static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4, "atomic sizes");
/* The control block is part of the shared-memory format: pin its layout. */
_Static_assert(offsetof(agile__ring_ctl, tail) == 0, "ctl layout");
_Static_assert(offsetof(agile__ring_ctl, head) == 64, "ctl layout");
_Static_assert(offsetof(agile__ring_ctl, data_ftx) == 128, "ctl layout");
_Static_assert(offsetof(agile__ring_ctl, cons_sleeping) == 132, "ctl layout");
_Static_assert(offsetof(agile__ring_ctl, space_ftx) == 192, "ctl layout");
_Static_assert(offsetof(agile__ring_ctl, prod_sleeping) == 196, "ctl layout");
_Static_assert(sizeof(agile__ring_ctl) == AGILE_RING_CTL_SIZE, "ctl size");

#define HDR_CLOSED_OFF 64u
#define PAGE 4096u
#define CPL_PAYLOAD 8u /* U64 result */

/* Returned by the static readiness checks only; never escapes this file. */
#define NOT_READY (-1)

/* ---- commands ---------------------------------------------------------------------------- */

const char *agile__ring_op_name(unsigned opcode)
{
    switch (opcode) {
#define X(name, op, rec)                                                                           \
    case op:                                                                                       \
        return #name;
        AGILE_RING_CMD_LIST(X)
#undef X
    default:
        return "?";
    }
}

#define SZ_U8(v) 1u
#define SZ_U16(v) 2u
#define SZ_U32(v) 4u
#define SZ_U64(v) 8u
#define SZ_I32(v) 4u
#define SZ_BLOB(v) (4u + (size_t)(v).n)
#define SZ_FIELD(kind, name) +SZ_##kind(rec->name)

#define PUT_U8(w, v) agile__put_u8(w, v)
#define PUT_U16(w, v) agile__put_u16(w, v)
#define PUT_U32(w, v) agile__put_u32(w, v)
#define PUT_U64(w, v) agile__put_u64(w, v)
#define PUT_I32(w, v) agile__put_i32(w, v)
#define PUT_BLOB(w, v) agile__put_blob(w, v)
#define PUT_FIELD(kind, name) PUT_##kind(w, rec->name);

#define GET_U8(r) agile__get_u8(r)
#define GET_U16(r) agile__get_u16(r)
#define GET_U32(r) agile__get_u32(r)
#define GET_U64(r) agile__get_u64(r)
#define GET_I32(r) agile__get_i32(r)
#define GET_BLOB(r) agile__get_blob(r)
#define GET_FIELD(kind, name) rec->name = GET_##kind(r);

static size_t payload_size(const agile__ring_cmd *cmd)
{
    switch (cmd->opcode) {
#define X(name, op, recname)                                                                       \
    case op: {                                                                                     \
        const struct agile__ring_rec_##recname *rec = &cmd->u.recname;                             \
        (void)rec;                                                                                 \
        return 0 AGILE_RING_REC_##recname(SZ_FIELD);                                               \
    }
        AGILE_RING_CMD_LIST(X)
#undef X
    default:
        return SIZE_MAX;
    }
}

static void payload_put(agile__wbuf *w, const agile__ring_cmd *cmd)
{
    switch (cmd->opcode) {
#define X(name, op, recname)                                                                       \
    case op: {                                                                                     \
        const struct agile__ring_rec_##recname *rec = &cmd->u.recname;                             \
        AGILE_RING_REC_##recname(PUT_FIELD) break;                                                 \
    }
        AGILE_RING_CMD_LIST(X)
#undef X
    default:
        w->overflow = 1;
        break;
    }
}

static void payload_get(agile__rbuf *r, agile__ring_cmd *cmd)
{
    switch (cmd->opcode) {
#define X(name, op, recname)                                                                       \
    case op: {                                                                                     \
        struct agile__ring_rec_##recname *rec = &cmd->u.recname;                                   \
        AGILE_RING_REC_##recname(GET_FIELD) break;                                                 \
    }
        AGILE_RING_CMD_LIST(X)
#undef X
    default:
        r->bad = 1;
        break;
    }
}

size_t agile__ring_cmd_size(const agile__ring_cmd *cmd)
{
    size_t n = payload_size(cmd);
    return n == SIZE_MAX ? SIZE_MAX : AGILE_RING_SLOT_HDR_SIZE + n;
}

static void slot_hdr_put(uint8_t *slot, uint32_t magic, uint16_t opcode, uint32_t length,
                         int32_t status, uint64_t seq, uint64_t tag)
{
    agile__wbuf w = {slot, AGILE_RING_SLOT_HDR_SIZE, 0, 0};
    agile__put_u32(&w, magic);
    agile__put_u16(&w, opcode);
    agile__put_u16(&w, 0);
    agile__put_u32(&w, length);
    agile__put_i32(&w, status);
    agile__put_u64(&w, seq);
    agile__put_u64(&w, tag);
}

int agile__ring_cmd_encode(const agile__ring_cmd *cmd, uint64_t seq, uint8_t *slot,
                           uint32_t slot_size)
{
    size_t need = agile__ring_cmd_size(cmd);
    if (need == SIZE_MAX) return AGILE_EINVAL;
    if (slot_size < AGILE_RING_MIN_SLOT_SIZE || slot_size > AGILE_RING_MAX_SLOT_SIZE ||
        need > slot_size)
        return AGILE_ETOOBIG;
    agile__wbuf w = {slot + AGILE_RING_SLOT_HDR_SIZE, slot_size - AGILE_RING_SLOT_HDR_SIZE, 0, 0};
    payload_put(&w, cmd);
    if (w.overflow) /* cannot happen after the size check; fail closed anyway */
        return AGILE_ETOOBIG;
    slot_hdr_put(slot, AGILE_RING_SLOT_CMD, cmd->opcode, (uint32_t)w.len, 0, seq, cmd->tag);
    return AGILE_OK;
}

int agile__ring_cmd_decode(const uint8_t *slot, uint32_t slot_size, uint64_t expected_seq,
                           agile__ring_cmd *out)
{
    if (slot_size < AGILE_RING_MIN_SLOT_SIZE || slot_size > AGILE_RING_MAX_SLOT_SIZE)
        return AGILE_EINVAL;
    /* TOCTOU: the client can rewrite the slot while we look at it. Copy the header once,
     * decide everything from the copy, then copy exactly `length` payload bytes (length taken
     * from the copy, so a concurrent change cannot make us read further than we checked). */
    memcpy(out->raw, slot, AGILE_RING_SLOT_HDR_SIZE);
    atomic_signal_fence(memory_order_seq_cst);
    agile__rbuf h = {out->raw, AGILE_RING_SLOT_HDR_SIZE, 0, 0};
    uint32_t magic = agile__get_u32(&h);
    out->opcode = agile__get_u16(&h);
    out->flags = agile__get_u16(&h);
    out->length = agile__get_u32(&h);
    int32_t status = agile__get_i32(&h);
    out->seq = agile__get_u64(&h);
    out->tag = agile__get_u64(&h);
    if (magic != AGILE_RING_SLOT_CMD || out->opcode == 0 || out->opcode >= AGILE_RING_OP_MAX_ ||
        out->flags != 0 || status != 0 || out->length > slot_size - AGILE_RING_SLOT_HDR_SIZE ||
        out->seq != expected_seq)
        return AGILE_EPROTO;
    memcpy(out->raw + AGILE_RING_SLOT_HDR_SIZE, slot + AGILE_RING_SLOT_HDR_SIZE, out->length);
    atomic_signal_fence(memory_order_seq_cst);
    /* Trailing bytes after the record are allowed: a newer minor appends fields. */
    agile__rbuf r = {out->raw + AGILE_RING_SLOT_HDR_SIZE, out->length, 0, 0};
    payload_get(&r, out);
    return r.bad ? AGILE_EPROTO : AGILE_OK;
}

/* ---- region ------------------------------------------------------------------------------ */

static bool is_pow2(uint32_t v)
{
    return v && !(v & (v - 1));
}

int agile__ring_layout(uint32_t slots, uint32_t slot_size, agile__ring_geom *g)
{
    if (!is_pow2(slots) || slots < AGILE_RING_MIN_SLOTS || slots > AGILE_RING_MAX_SLOTS ||
        slot_size % 64 || slot_size < AGILE_RING_MIN_SLOT_SIZE ||
        slot_size > AGILE_RING_MAX_SLOT_SIZE)
        return AGILE_EINVAL;
    uint64_t bytes = AGILE_ALIGN_UP((uint64_t)slots * slot_size, (uint64_t)PAGE);
    memset(g, 0, sizeof *g);
    g->slots = slots;
    g->slot_size = slot_size;
    g->cmd_ctl_off = 256;
    g->cpl_ctl_off = 256 + AGILE_RING_CTL_SIZE;
    g->cmd_off = PAGE;
    g->cpl_off = PAGE + bytes;
    g->size = PAGE + 2 * bytes;
    return AGILE_OK;
}

/* [off, off+len) lies in [AGILE_RING_HDR_SIZE, size) and is 64-byte aligned. */
static bool range_ok(uint64_t off, uint64_t len, uint64_t size)
{
    return off % 64 == 0 && off >= AGILE_RING_HDR_SIZE && off <= size && len <= size - off;
}

static bool disjoint(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a + alen <= b || b + blen <= a; /* no overflow: both ranges passed range_ok */
}

int agile__ring_hdr_validate(const uint8_t *hdr, size_t len, uint64_t region_size,
                             agile__ring_geom *g)
{
    agile__rbuf r = {hdr, len, 0, 0};
    agile__ring_geom t;
    uint32_t magic = agile__get_u32(&r);
    uint16_t major = agile__get_u16(&r);
    (void)agile__get_u16(&r); /* minor: newer minors only use spare fields */
    t.size = agile__get_u64(&r);
    t.slots = agile__get_u32(&r);
    t.slot_size = agile__get_u32(&r);
    t.cmd_ctl_off = agile__get_u64(&r);
    t.cmd_off = agile__get_u64(&r);
    t.cpl_ctl_off = agile__get_u64(&r);
    t.cpl_off = agile__get_u64(&r);
    if (r.bad || len < AGILE_RING_HDR_SIZE || magic != AGILE_RING_MAGIC) return AGILE_EPROTO;
    if (major != AGILE_RING_MAJOR) return AGILE_EVERSION;
    if (t.size != region_size || t.size > AGILE_RING_MAX_REGION || !is_pow2(t.slots) ||
        t.slots < AGILE_RING_MIN_SLOTS || t.slots > AGILE_RING_MAX_SLOTS || t.slot_size % 64 ||
        t.slot_size < AGILE_RING_MIN_SLOT_SIZE || t.slot_size > AGILE_RING_MAX_SLOT_SIZE)
        return AGILE_EPROTO;
    uint64_t ring = (uint64_t)t.slots * t.slot_size;
    uint64_t off[4] = {t.cmd_ctl_off, t.cpl_ctl_off, t.cmd_off, t.cpl_off};
    uint64_t n[4] = {AGILE_RING_CTL_SIZE, AGILE_RING_CTL_SIZE, ring, ring};
    for (int i = 0; i < 4; i++) {
        if (!range_ok(off[i], n[i], t.size)) return AGILE_EPROTO;
        for (int j = 0; j < i; j++)
            if (!disjoint(off[i], n[i], off[j], n[j])) return AGILE_EPROTO;
    }
    *g = t;
    return AGILE_OK;
}

static void region_bind(agile__ring_region *r)
{
    r->mask = r->g.slots - 1;
    r->cmd_ctl = (agile__ring_ctl *)(void *)(r->base + r->g.cmd_ctl_off);
    r->cpl_ctl = (agile__ring_ctl *)(void *)(r->base + r->g.cpl_ctl_off);
    r->cmd = r->base + r->g.cmd_off;
    r->cpl = r->base + r->g.cpl_off;
    r->closed = (_Atomic uint32_t *)(void *)(r->base + HDR_CLOSED_OFF);
}

int agile__ring_region_create(uint32_t slots, uint32_t slot_size, agile__ring_region *r)
{
    int rv = AGILE_OK;
    memset(r, 0, sizeof *r);
    r->fd = -1;
    AGILE_TRY(agile__ring_layout(slots, slot_size, &r->g));
    r->fd = memfd_create("agile-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (r->fd < 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    /* Seal the size: a client that shrank the file would make the worker's next access to
     * the mapping raise SIGBUS, i.e. one tenant could kill the worker. */
    if (ftruncate(r->fd, (off_t)r->g.size) < 0 ||
        fcntl(r->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    void *p = mmap(NULL, r->g.size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (p == MAP_FAILED) {
        rv = agile_err_sys(errno);
        goto out;
    }
    r->base = p;
    agile__wbuf w = {r->base, AGILE_RING_HDR_SIZE, 0, 0};
    agile__put_u32(&w, AGILE_RING_MAGIC);
    agile__put_u16(&w, AGILE_RING_MAJOR);
    agile__put_u16(&w, AGILE_RING_MINOR);
    agile__put_u64(&w, r->g.size);
    agile__put_u32(&w, r->g.slots);
    agile__put_u32(&w, r->g.slot_size);
    agile__put_u64(&w, r->g.cmd_ctl_off);
    agile__put_u64(&w, r->g.cmd_off);
    agile__put_u64(&w, r->g.cpl_ctl_off);
    agile__put_u64(&w, r->g.cpl_off);
    agile__put_u32(&w, (uint32_t)getpid());
    agile__put_u32(&w, 0);
    region_bind(r); /* the rest is zero from ftruncate: counters, wait words, closed */
out:
    if (rv != AGILE_OK) agile__ring_region_fini(r);
    return rv;
}

int agile__ring_region_attach(int fd, agile__ring_region *r)
{
    int rv = AGILE_OK;
    struct stat st;
    uint8_t hdr[AGILE_RING_HDR_SIZE];
    memset(r, 0, sizeof *r);
    r->fd = -1;
    if (fstat(fd, &st) < 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)AGILE_RING_HDR_SIZE ||
        (uint64_t)st.st_size > AGILE_RING_MAX_REGION) {
        rv = AGILE_EPROTO;
        goto out;
    }
    /* pread, not the mapping: validation reads a private copy. */
    ssize_t n = pread(fd, hdr, sizeof hdr, 0);
    if (n < 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    AGILE_TRY(agile__ring_hdr_validate(hdr, (size_t)n, (uint64_t)st.st_size, &r->g));
    void *p = mmap(NULL, r->g.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rv = agile_err_sys(errno);
        goto out;
    }
    r->base = p;
    r->fd = fd;
    region_bind(r);
out:
    if (rv != AGILE_OK) { /* the caller still owns fd */
        memset(r, 0, sizeof *r);
        r->fd = -1;
    }
    return rv;
}

void agile__ring_region_fini(agile__ring_region *r)
{
    if (r->base) munmap(r->base, r->g.size);
    if (r->fd >= 0) close(r->fd);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}

/* ---- peers ------------------------------------------------------------------------------- */

int agile__ring_peer_pid(pid_t pid, agile__ring_peer *p)
{
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    if (pid <= 0) return AGILE_EINVAL;
    p->pid = pid;
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        p->pidfd = (int)fd;
        return AGILE_OK;
    }
    if (errno == ESRCH) return AGILE_ECLOSED;
#endif
    return AGILE_OK; /* old kernel: kill(pid, 0) it is */
}

void agile__ring_peer_fini(agile__ring_peer *p)
{
    if (p->pidfd >= 0) close(p->pidfd);
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
}

int agile__ring_peer_alive(const agile__ring_peer *p)
{
    if (p->pidfd >= 0) {
        /* A pidfd polls readable once the process has exited, reaped or not. */
        struct pollfd pfd = {p->pidfd, POLLIN, 0};
        if (poll(&pfd, 1, 0) > 0) return AGILE_ECLOSED;
    } else if (p->pid > 0 && kill(p->pid, 0) < 0 && errno == ESRCH) {
        return AGILE_ECLOSED;
    }
    return p->check ? p->check(p->arg) : AGILE_OK;
}

/* ---- waiting ----------------------------------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void ftx_wait(_Atomic uint32_t *word, uint32_t val, uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    /* Shared (not FUTEX_PRIVATE): the word lives in a mapping shared by two processes.
     * EAGAIN, EINTR and ETIMEDOUT all just mean "look again". */
    (void)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void ftx_wake(_Atomic uint32_t *word)
{
    (void)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Producer side of the sleep handshake: called after publishing. Pairs with the fence in
 * wait_loop (Dekker): either the sleeper sees our publication when it re-checks, or we see
 * its flag here. The common case costs one fence and one load, no system call. */
static inline void notify(_Atomic uint32_t *ftx, _Atomic uint32_t *sleeping)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(sleeping, memory_order_relaxed)) {
        atomic_fetch_add_explicit(ftx, 1, memory_order_release);
        ftx_wake(ftx);
    }
}

static void wake_all(agile__ring_region *r)
{
    agile__ring_ctl *c[2] = {r->cmd_ctl, r->cpl_ctl};
    for (int i = 0; i < 2; i++) {
        atomic_fetch_add(&c[i]->data_ftx, 1);
        atomic_fetch_add(&c[i]->space_ftx, 1);
        ftx_wake(&c[i]->data_ftx);
        ftx_wake(&c[i]->space_ftx);
    }
}

/* A readiness check: AGILE_OK when ready, NOT_READY (then ftx and flag name the word to sleep
 * on), or an error. */
typedef int (*ready_fn)(void *ctx, _Atomic uint32_t **ftx, _Atomic uint32_t **flag);

typedef struct {
    uint32_t *spin_ns;
    const agile__ring_peer *peer;
    _Atomic uint32_t *closed;
    uint32_t closed_bit; /* the peer's bit */
} wait_ctx;

static int peer_gone(const wait_ctx *w)
{
    if (atomic_load_explicit(w->closed, memory_order_acquire) & w->closed_bit) return AGILE_ECLOSED;
    return agile__ring_peer_alive(w->peer);
}

static int wait_loop(const wait_ctx *w, ready_fn ready, void *ctx, int64_t timeout_ns)
{
    _Atomic uint32_t *ftx = NULL, *flag = NULL;
    int rv = ready(ctx, &ftx, &flag);
    if (rv != NOT_READY) return rv;
    if (timeout_ns == 0) return peer_gone(w) != AGILE_OK ? AGILE_ECLOSED : AGILE_ETIMEDOUT;
    uint64_t start = agile__now_ns();
    uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : start + (uint64_t)timeout_ns;
    uint64_t spin_end = AGILE_MIN(deadline, start + *w->spin_ns);
    /* Spin: a round trip on a busy peer is a few microseconds, far less than a futex sleep
     * and wake-up (tens of microseconds with a context switch). */
    for (unsigned i = 1;; i++) {
        cpu_relax();
        if ((rv = ready(ctx, &ftx, &flag)) != NOT_READY) {
            uint32_t s = *w->spin_ns;
            *w->spin_ns = AGILE_MIN(AGILE_RING_SPIN_MAX_NS, s + s / 4);
            return rv;
        }
        if ((i & 63) == 0 && agile__now_ns() >= spin_end) break;
    }
    for (;;) {
        if ((rv = peer_gone(w)) != AGILE_OK) break;
        uint64_t now = agile__now_ns();
        if (now >= deadline) {
            rv = AGILE_ETIMEDOUT;
            break;
        }
        _Atomic uint32_t *f = ftx, *fl = flag;
        uint32_t v = atomic_load_explicit(f, memory_order_acquire);
        atomic_store_explicit(fl, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        rv = ready(ctx, &ftx, &flag);
        if (rv != NOT_READY || ftx != f) {
            /* Ready, or now waiting for something else (the worker: data arrived but the
             * completion ring is full): never leave a stale flag behind, or the peer would
             * make a wake-up system call on every operation. */
            atomic_store_explicit(fl, 0, memory_order_relaxed);
            if (rv != NOT_READY) break;
            continue;
        }
        ftx_wait(f, v, AGILE_MIN(deadline - now, (uint64_t)AGILE_RING_SLEEP_SLICE_NS));
        atomic_store_explicit(fl, 0, memory_order_relaxed);
        if ((rv = ready(ctx, &ftx, &flag)) != NOT_READY) break;
    }
    /* We slept. If the event came soon after we gave up, we gave up too early: spin longer
     * next time, up to the cap (shrinking here instead would lock both sides into sleeping,
     * each waking the other with a system call). If it came much later, the peer is idle
     * or slow: spin less, so a quiet client does not cost a core. */
    uint64_t waited = agile__now_ns() - start;
    uint32_t s = *w->spin_ns;
    if (rv == AGILE_OK && waited <= AGILE_RING_SPIN_MAX_NS)
        *w->spin_ns = (uint32_t)AGILE_MIN((uint64_t)AGILE_RING_SPIN_MAX_NS,
                                          AGILE_MAX((uint64_t)s * 2, waited + waited / 4));
    else
        *w->spin_ns = AGILE_MAX(AGILE_RING_SPIN_MIN_NS, s / 2);
    return rv;
}

/* ---- client ------------------------------------------------------------------------------ */

int agile__ring_client_init(agile__ring_client *c, int fd, const agile__ring_peer *peer)
{
    int rv = AGILE_OK;
    memset(c, 0, sizeof *c);
    c->peer.pidfd = -1;
    AGILE_TRY(agile__ring_region_attach(fd, &c->reg));
    if (peer) c->peer = *peer;
    c->spin_ns = AGILE_RING_SPIN_MAX_NS / 2;
    /* Pick up where the ring is (a client may re-attach to a fresh region only, but reading
     * the counters keeps us consistent with whatever the worker has). */
    c->cmd_tail = atomic_load_explicit(&c->reg.cmd_ctl->tail, memory_order_acquire);
    c->published = c->cmd_tail;
    c->cpl_head = atomic_load_explicit(&c->reg.cpl_ctl->head, memory_order_acquire);
out:
    return rv;
}

void agile__ring_client_fini(agile__ring_client *c)
{
    if (c->reg.base) {
        atomic_fetch_or(c->reg.closed, AGILE_RING_CLOSED_CLIENT);
        wake_all(&c->reg);
    }
    agile__ring_client_detach(c);
}

void agile__ring_client_detach(agile__ring_client *c)
{
    agile__ring_region_fini(&c->reg);
    agile__ring_peer_fini(&c->peer);
}

static int client_space_ready(void *ctx, _Atomic uint32_t **ftx, _Atomic uint32_t **flag)
{
    agile__ring_client *c = ctx;
    uint64_t head = atomic_load_explicit(&c->reg.cmd_ctl->head, memory_order_acquire);
    if (c->cmd_tail - head > c->reg.g.slots) {
        c->broken = true;
        return AGILE_EPROTO;
    }
    if (c->cmd_tail - head < c->reg.g.slots) return AGILE_OK;
    /* Both rings full: the worker is waiting for us to reap completions before it takes
     * another command, so waiting here would never end. */
    uint64_t ctail = atomic_load_explicit(&c->reg.cpl_ctl->tail, memory_order_acquire);
    if (ctail - c->cpl_head >= c->reg.g.slots) return AGILE_EFULL;
    *ftx = &c->reg.cmd_ctl->space_ftx;
    *flag = &c->reg.cmd_ctl->prod_sleeping;
    return NOT_READY;
}

static int client_cpl_ready(void *ctx, _Atomic uint32_t **ftx, _Atomic uint32_t **flag)
{
    agile__ring_client *c = ctx;
    uint64_t tail = atomic_load_explicit(&c->reg.cpl_ctl->tail, memory_order_acquire);
    if (tail - c->cpl_head > c->reg.g.slots) {
        c->broken = true;
        return AGILE_EPROTO;
    }
    if (tail != c->cpl_head) return AGILE_OK;
    *ftx = &c->reg.cpl_ctl->data_ftx;
    *flag = &c->reg.cpl_ctl->cons_sleeping;
    return NOT_READY;
}

static wait_ctx client_wait_ctx(agile__ring_client *c)
{
    wait_ctx w = {&c->spin_ns, &c->peer, c->reg.closed, AGILE_RING_CLOSED_WORKER};
    return w;
}

int agile__ring_submit(agile__ring_client *c, const agile__ring_cmd *cmd, unsigned flags,
                       int64_t timeout_ns, uint64_t *seq)
{
    int rv = AGILE_OK;
    if (c->broken) return AGILE_EPROTO;
    /* A command posted to a worker that has left would never complete. */
    if (atomic_load_explicit(c->reg.closed, memory_order_relaxed) & AGILE_RING_CLOSED_WORKER)
        return AGILE_ECLOSED;
    if (agile__ring_cmd_size(cmd) > c->reg.g.slot_size)
        return cmd->opcode && cmd->opcode < AGILE_RING_OP_MAX_ ? AGILE_ETOOBIG : AGILE_EINVAL;
    wait_ctx w = client_wait_ctx(c);
    /* A full ring of unpublished commands would wait for a worker that cannot see them. */
    if (c->cmd_tail - c->published >= c->reg.g.slots / 2) agile__ring_flush(c);
    rv = wait_loop(&w, client_space_ready, c, (flags & AGILE_RING_NONBLOCK) ? 0 : timeout_ns);
    if (rv == AGILE_EFULL || rv == AGILE_ETIMEDOUT) agile__ring_flush(c);
    if (rv == AGILE_ETIMEDOUT && (flags & AGILE_RING_NONBLOCK)) rv = AGILE_EFULL;
    AGILE_TRY(rv);
    uint8_t *slot = c->reg.cmd + (size_t)(c->cmd_tail & c->reg.mask) * c->reg.g.slot_size;
    AGILE_TRY(agile__ring_cmd_encode(cmd, c->cmd_tail, slot, c->reg.g.slot_size));
    if (seq) *seq = c->cmd_tail;
    c->cmd_tail++;
    if (!(flags & AGILE_RING_MORE)) agile__ring_flush(c);
out:
    return rv;
}

void agile__ring_flush(agile__ring_client *c)
{
    if (c->published == c->cmd_tail) return;
    c->published = c->cmd_tail;
    atomic_store_explicit(&c->reg.cmd_ctl->tail, c->cmd_tail, memory_order_release);
    notify(&c->reg.cmd_ctl->data_ftx, &c->reg.cmd_ctl->cons_sleeping);
}

/* Take the completion at cpl_head (the caller checked there is one). */
static int client_take(agile__ring_client *c, agile__ring_cpl *out)
{
    const uint8_t *slot = c->reg.cpl + (size_t)(c->cpl_head & c->reg.mask) * c->reg.g.slot_size;
    agile__rbuf r = {slot, AGILE_RING_SLOT_HDR_SIZE + CPL_PAYLOAD, 0, 0};
    uint32_t magic = agile__get_u32(&r);
    out->opcode = agile__get_u16(&r);
    (void)agile__get_u16(&r);
    uint32_t len = agile__get_u32(&r);
    out->status = agile__get_i32(&r);
    out->seq = agile__get_u64(&r);
    out->tag = agile__get_u64(&r);
    out->result = agile__get_u64(&r);
    if (r.bad || magic != AGILE_RING_SLOT_CPL || len < CPL_PAYLOAD) {
        c->broken = true;
        return AGILE_EPROTO;
    }
    c->cpl_head++;
    atomic_store_explicit(&c->reg.cpl_ctl->head, c->cpl_head, memory_order_release);
    notify(&c->reg.cpl_ctl->space_ftx, &c->reg.cpl_ctl->prod_sleeping);
    /* Remember the first failure for the next barrier; a BARRIER's own status is the
     * worker's copy of that same sticky error and is reported by agile__ring_barrier. */
    if (out->status != AGILE_OK && out->opcode != AGILE_RING_OP_BARRIER && !c->err_status) {
        c->err_status = out->status;
        c->err_seq = out->seq;
    }
    return AGILE_OK;
}

int agile__ring_poll(agile__ring_client *c, agile__ring_cpl *out, uint32_t max, uint32_t *n)
{
    int rv = AGILE_OK;
    *n = 0;
    if (c->broken) return AGILE_EPROTO;
    uint64_t tail = atomic_load_explicit(&c->reg.cpl_ctl->tail, memory_order_acquire);
    if (tail - c->cpl_head > c->reg.g.slots) {
        c->broken = true;
        return AGILE_EPROTO;
    }
    while (*n < max && c->cpl_head != tail) {
        AGILE_TRY(client_take(c, &out[*n]));
        (*n)++;
    }
out:
    return rv;
}

int agile__ring_wait(agile__ring_client *c, agile__ring_cpl *out, int64_t timeout_ns)
{
    int rv = AGILE_OK;
    if (c->broken) return AGILE_EPROTO;
    agile__ring_flush(c); /* a completion of an unpublished command would never come */
    wait_ctx w = client_wait_ctx(c);
    AGILE_TRY(wait_loop(&w, client_cpl_ready, c, timeout_ns));
    AGILE_TRY(client_take(c, out));
out:
    return rv;
}

int agile__ring_wait_seq(agile__ring_client *c, uint64_t seq, int64_t timeout_ns, int32_t *status)
{
    int rv = AGILE_OK;
    uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : agile__now_ns() + (uint64_t)timeout_ns;
    agile__ring_cpl cpl;
    if (seq >= c->cmd_tail) return AGILE_EINVAL; /* never submitted: would wait forever */
    for (;;) {
        int64_t left = -1;
        if (deadline != UINT64_MAX) {
            uint64_t now = agile__now_ns();
            left = now >= deadline ? 0 : (int64_t)(deadline - now);
        }
        AGILE_TRY(agile__ring_wait(c, &cpl, left));
        if (cpl.seq == seq) break;
        if (cpl.seq > seq) { /* completions are in order: ours was skipped */
            c->broken = true;
            rv = AGILE_EPROTO;
            goto out;
        }
    }
    if (status) *status = cpl.status;
out:
    return rv;
}

int agile__ring_barrier(agile__ring_client *c, uint64_t stream, int64_t timeout_ns,
                        uint64_t *err_seq)
{
    int rv = AGILE_OK;
    agile__ring_cmd cmd;
    uint64_t seq;
    int32_t st = AGILE_OK;
    memset(&cmd, 0, offsetof(agile__ring_cmd, raw));
    cmd.opcode = AGILE_RING_OP_BARRIER;
    cmd.tag = stream;
    cmd.u.barrier.stream = stream;
    AGILE_TRY(agile__ring_submit(c, &cmd, 0, timeout_ns, &seq));
    AGILE_TRY(agile__ring_wait_seq(c, seq, timeout_ns, &st));
    if (c->err_status) {
        rv = c->err_status;
        if (err_seq) *err_seq = c->err_seq;
    } else if (st != AGILE_OK) {
        rv = st;
        if (err_seq) *err_seq = seq;
    }
    c->err_status = AGILE_OK;
    c->err_seq = 0;
out:
    return rv;
}

int32_t agile__ring_client_error(const agile__ring_client *c, uint64_t *seq)
{
    if (seq) *seq = c->err_seq;
    return c->err_status;
}

/* ---- worker ------------------------------------------------------------------------------ */

int agile__ring_worker_init(agile__ring_worker *w, uint32_t slots, uint32_t slot_size,
                            const agile__ring_peer *peer)
{
    int rv = AGILE_OK;
    memset(w, 0, sizeof *w);
    w->peer.pidfd = -1;
    AGILE_TRY(agile__ring_region_create(slots, slot_size, &w->reg));
    if (peer) w->peer = *peer;
    w->spin_ns = AGILE_RING_SPIN_MAX_NS / 2;
out:
    return rv;
}

void agile__ring_worker_set_peer(agile__ring_worker *w, const agile__ring_peer *p)
{
    agile__ring_peer_fini(&w->peer);
    w->peer = *p;
}

void agile__ring_worker_fini(agile__ring_worker *w)
{
    if (w->reg.base) {
        atomic_fetch_or(w->reg.closed, AGILE_RING_CLOSED_WORKER);
        wake_all(&w->reg);
    }
    agile__ring_region_fini(&w->reg);
    agile__ring_peer_fini(&w->peer);
}

/* Break the ring: post an error completion for the offending seq if there is room (so the
 * client learns why), and refuse everything afterwards. */
static int worker_break(agile__ring_worker *w, bool room)
{
    if (!w->broken && room) {
        uint8_t *slot = w->reg.cpl + (size_t)(w->cpl_tail & w->reg.mask) * w->reg.g.slot_size;
        agile__wbuf b = {slot + AGILE_RING_SLOT_HDR_SIZE, CPL_PAYLOAD, 0, 0};
        agile__put_u64(&b, 0);
        slot_hdr_put(slot, AGILE_RING_SLOT_CPL, 0, CPL_PAYLOAD, AGILE_EPROTO, w->cmd_head, 0);
        atomic_store_explicit(&w->reg.cpl_ctl->tail, ++w->cpl_tail, memory_order_release);
        notify(&w->reg.cpl_ctl->data_ftx, &w->reg.cpl_ctl->cons_sleeping);
    }
    if (!w->broken)
        agile__warn("ring: malformed command ring at seq %llu; disconnecting its client",
                    (unsigned long long)w->cmd_head);
    w->broken = true;
    return AGILE_EPROTO;
}

/* The client's counters, checked: the number of pending commands (bounded by slots) and
 * whether the completion ring has room for one more. AGILE_EPROTO when either lies. */
static int worker_counters(agile__ring_worker *w, uint64_t *pending, bool *room)
{
    uint64_t tail = atomic_load_explicit(&w->reg.cmd_ctl->tail, memory_order_acquire);
    uint64_t chead = atomic_load_explicit(&w->reg.cpl_ctl->head, memory_order_acquire);
    *pending = tail - w->cmd_head;
    /* Completions the client claims to have read must exist; every command taken and not
     * yet completed has a completion slot reserved: cmd_head - chead < slots leaves one. */
    bool cpl_ok = chead <= w->cpl_tail && w->cmd_head - chead <= w->reg.g.slots;
    *room = cpl_ok && w->cmd_head - chead < w->reg.g.slots;
    if (*pending > w->reg.g.slots || !cpl_ok) return AGILE_EPROTO;
    return AGILE_OK;
}

int agile__ring_next(agile__ring_worker *w, agile__ring_cmd *out, bool *got)
{
    uint64_t pending;
    bool room;
    *got = false;
    if (w->broken) return AGILE_EPROTO;
    if (worker_counters(w, &pending, &room) != AGILE_OK) return worker_break(w, room);
    if (!pending || !room) return AGILE_OK;
    const uint8_t *slot = w->reg.cmd + (size_t)(w->cmd_head & w->reg.mask) * w->reg.g.slot_size;
    if (agile__ring_cmd_decode(slot, w->reg.g.slot_size, w->cmd_head, out) != AGILE_OK)
        return worker_break(w, room);
    /* The command is in private memory now: release the slot at once. */
    w->cmd_head++;
    atomic_store_explicit(&w->reg.cmd_ctl->head, w->cmd_head, memory_order_release);
    notify(&w->reg.cmd_ctl->space_ftx, &w->reg.cmd_ctl->prod_sleeping);
    *got = true;
    return AGILE_OK;
}

uint32_t agile__ring_pending(agile__ring_worker *w)
{
    if (w->broken) return 0;
    uint64_t tail = atomic_load_explicit(&w->reg.cmd_ctl->tail, memory_order_acquire);
    uint64_t n = tail - w->cmd_head;
    return n > w->reg.g.slots ? w->reg.g.slots : (uint32_t)n; /* a lie is caught by next */
}

static int worker_cmd_ready(void *ctx, _Atomic uint32_t **ftx, _Atomic uint32_t **flag)
{
    agile__ring_worker *w = ctx;
    uint64_t pending;
    bool room;
    if (w->broken) return AGILE_EPROTO;
    if (worker_counters(w, &pending, &room) != AGILE_OK)
        return AGILE_OK; /* let agile__ring_next report it */
    if (pending && room) return AGILE_OK;
    if (!pending) {
        *ftx = &w->reg.cmd_ctl->data_ftx;
        *flag = &w->reg.cmd_ctl->cons_sleeping;
    } else {
        *ftx = &w->reg.cpl_ctl->space_ftx;
        *flag = &w->reg.cpl_ctl->prod_sleeping;
    }
    return NOT_READY;
}

int agile__ring_wait_cmd(agile__ring_worker *w, int64_t timeout_ns)
{
    wait_ctx c = {&w->spin_ns, &w->peer, w->reg.closed, AGILE_RING_CLOSED_CLIENT};
    return wait_loop(&c, worker_cmd_ready, w, timeout_ns);
}

/* One pass over the rings: fill st, the futex word and flag of those not ready; how many
 * need attention. */
static uint32_t any_check(agile__ring_worker *const *w, uint32_t n, int32_t *st,
                          _Atomic uint32_t **ftx, _Atomic uint32_t **flag, bool peers)
{
    uint32_t hits = 0;
    for (uint32_t i = 0; i < n; i++) {
        int rv = worker_cmd_ready(w[i], &ftx[i], &flag[i]);
        if (rv == NOT_READY) {
            wait_ctx c = {&w[i]->spin_ns, &w[i]->peer, w[i]->reg.closed, AGILE_RING_CLOSED_CLIENT};
            bool closed = (atomic_load_explicit(w[i]->reg.closed, memory_order_acquire) &
                           AGILE_RING_CLOSED_CLIENT) ||
                          (peers && peer_gone(&c) != AGILE_OK);
            rv = closed ? AGILE_ECLOSED : AGILE_ETIMEDOUT;
        }
        st[i] = rv;
        hits += rv != AGILE_ETIMEDOUT;
    }
    return hits;
}

int agile__ring_wait_any(agile__ring_worker *const *w, uint32_t n, int64_t timeout_ns, int32_t *st)
{
    _Atomic uint32_t *ftx[AGILE_RING_WAIT_ANY_MAX], *flag[AGILE_RING_WAIT_ANY_MAX];
    if (n > AGILE_RING_WAIT_ANY_MAX) return AGILE_EINVAL;
    if (any_check(w, n, st, ftx, flag, timeout_ns == 0)) return AGILE_OK;
    if (timeout_ns == 0 || n == 0) return AGILE_ETIMEDOUT;
    uint64_t start = agile__now_ns();
    uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : start + (uint64_t)timeout_ns;
    uint64_t spin_end = AGILE_MIN(deadline, start + AGILE_RING_SPIN_MAX_NS / 2);
    for (unsigned i = 1;; i++) {
        cpu_relax();
        if (any_check(w, n, st, ftx, flag, false)) return AGILE_OK;
        if ((i & 15) == 0 && agile__now_ns() >= spin_end) break;
    }
    for (;;) {
        if (any_check(w, n, st, ftx, flag, true)) return AGILE_OK;
        uint64_t now = agile__now_ns();
        if (now >= deadline) return AGILE_ETIMEDOUT;
        uint64_t until = AGILE_MIN(deadline, now + AGILE_RING_SLEEP_SLICE_NS);
#ifdef SYS_futex_waitv
        struct futex_waitv fw[AGILE_RING_WAIT_ANY_MAX];
        for (uint32_t i = 0; i < n; i++) {
            fw[i].val = atomic_load_explicit(ftx[i], memory_order_acquire);
            fw[i].uaddr = (uint64_t)(uintptr_t)ftx[i];
            fw[i].flags = FUTEX_32; /* shared: no FUTEX_PRIVATE_FLAG */
            fw[i].__reserved = 0;
            atomic_store_explicit(flag[i], 1, memory_order_relaxed);
        }
        atomic_thread_fence(memory_order_seq_cst);
        _Atomic uint32_t *f2[AGILE_RING_WAIT_ANY_MAX], *fl2[AGILE_RING_WAIT_ANY_MAX];
        bool sleep = any_check(w, n, st, f2, fl2, false) == 0;
        for (uint32_t i = 0; sleep && i < n; i++)
            sleep = f2[i] == ftx[i]; /* waiting for the same thing still */
        if (sleep) {
            struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
            long r = syscall(SYS_futex_waitv, fw, n, 0, &ts, CLOCK_MONOTONIC);
            if (r < 0 && errno == ENOSYS) {
                struct timespec nap = {0, 100000}; /* old kernel: poll every 100 us */
                nanosleep(&nap, NULL);
            }
        }
        for (uint32_t i = 0; i < n; i++)
            atomic_store_explicit(flag[i], 0, memory_order_relaxed);
#else
        struct timespec nap = {0, 100000};
        (void)until;
        nanosleep(&nap, NULL);
#endif
    }
}

int agile__ring_complete(agile__ring_worker *w, const agile__ring_cmd *cmd, int32_t status,
                         uint64_t result)
{
    if (w->broken) return AGILE_EPROTO;
    /* One completion per command, in order: the client matches them by counting. */
    if (cmd->seq != w->cpl_tail || cmd->seq >= w->cmd_head) return AGILE_EINVAL;
    if (cmd->opcode == AGILE_RING_OP_BARRIER) {
        if (status == AGILE_OK && w->err_status != AGILE_OK) {
            status = w->err_status;
            result = w->err_seq;
        }
        w->err_status = AGILE_OK;
        w->err_seq = 0;
    } else if (status != AGILE_OK && w->err_status == AGILE_OK) {
        w->err_status = status;
        w->err_seq = cmd->seq;
    }
    uint8_t *slot = w->reg.cpl + (size_t)(w->cpl_tail & w->reg.mask) * w->reg.g.slot_size;
    agile__wbuf b = {slot + AGILE_RING_SLOT_HDR_SIZE, CPL_PAYLOAD, 0, 0};
    agile__put_u64(&b, result);
    slot_hdr_put(slot, AGILE_RING_SLOT_CPL, cmd->opcode, CPL_PAYLOAD, status, cmd->seq, cmd->tag);
    w->cpl_tail++;
    atomic_store_explicit(&w->reg.cpl_ctl->tail, w->cpl_tail, memory_order_release);
    notify(&w->reg.cpl_ctl->data_ftx, &w->reg.cpl_ctl->cons_sleeping);
    return AGILE_OK;
}
