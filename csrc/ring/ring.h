/* ring.h — the data plane: per-client shared-memory command and completion rings.
 *
 * One memfd region per client, created by the worker and passed to the client as an fd
 * (SCM_RIGHTS). It holds a header and two single-producer single-consumer rings:
 *
 *   command ring     client -> worker   (LAUNCH, MOD_OP, MEMCPY, MEMSET, SIGNAL, WAIT, ...)
 *   completion ring  worker -> client   (seq, status, result) for every command
 *
 * Region layout (every offset is also written in the header, so a later minor may move
 * things; the validator checks ranges, not fixed offsets):
 *
 *   off   size  field (little-endian)
 *     0     4   magic        AGILE_RING_MAGIC ("ARNG")
 *     4     2   major        AGILE_RING_MAJOR: another major is refused (AGILE_EVERSION)
 *     6     2   minor
 *     8     8   total_size   == the memfd's size
 *    16     4   slots        power of two, AGILE_RING_MIN_SLOTS..AGILE_RING_MAX_SLOTS
 *    20     4   slot_size    multiple of 64, AGILE_RING_MIN_SLOT_SIZE..AGILE_RING_MAX_SLOT_SIZE
 *    24     8   cmd_ctl_off  control block of the command ring (AGILE_RING_CTL_SIZE bytes)
 *    32     8   cmd_off      slots of the command ring (slots * slot_size bytes)
 *    40     8   cpl_ctl_off
 *    48     8   cpl_off
 *    56     4   worker_pid   informational
 *    60     4   flags        0
 *    64     4   closed       live word: AGILE_RING_CLOSED_* bits, set by the side that leaves
 *    68    60   spare        0
 *   (control blocks and slots follow, 64-byte aligned; the slots page-aligned)
 *
 * A control block keeps the producer's tail, the consumer's head and the two wait words on
 * separate cache lines. Counters are 64-bit and only grow: a slot's position is the count
 * modulo slots, its sequence number is the count itself, so wrap-around needs no flag.
 *
 * Slot layout: a 32-byte header and a payload of slot_size - 32 bytes.
 *
 *     0     4   magic    AGILE_RING_SLOT_CMD or AGILE_RING_SLOT_CPL
 *     4     2   opcode   AGILE_RING_CMD_LIST
 *     6     2   flags    0 (reserved)
 *     8     4   length   payload bytes used, <= slot_size - 32
 *    12     4   status   completions: agile_err_t; commands: 0
 *    16     8   seq      commands: the ring position; completions: the command's seq
 *    24     8   tag      stream or user tag, echoed in the completion
 *
 * Trust: the worker never believes anything in the region. It keeps its own copy of the
 * geometry and of its counters, reads the client's counters once per use and checks them,
 * and decodes a slot only from a private copy (the client may rewrite shared memory at any
 * moment). A malformed slot or counter breaks that one ring (AGILE_EPROTO); the worker then
 * disconnects that client. The client trusts the worker but still bounds its reads.
 *
 * Waiting: spin briefly (adaptive, at most AGILE_RING_SPIN_MAX_NS), then sleep on a futex in
 * the region with a timeout. The other side wakes a sleeper only when the sleeper has said
 * so (a flag next to the futex word), so the fast path makes no system call. Every wait is
 * bounded by a timeout and checks the peer (pidfd) and the closed word between sleeps, so a
 * dead peer gives AGILE_ECLOSED rather than a hang.
 */
#ifndef AGILE_RING_H
#define AGILE_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core.h"

#define AGILE_RING_MAGIC 0x474e5241u    /* "ARNG" */
#define AGILE_RING_SLOT_CMD 0x444d4341u /* "ACMD" */
#define AGILE_RING_SLOT_CPL 0x4c504341u /* "ACPL" */
#define AGILE_RING_MAJOR 1u
#define AGILE_RING_MINOR 0u

#define AGILE_RING_HDR_SIZE 128u
#define AGILE_RING_CTL_SIZE 256u
#define AGILE_RING_SLOT_HDR_SIZE 32u
#define AGILE_RING_DEFAULT_SLOTS 1024u
#define AGILE_RING_DEFAULT_SLOT_SIZE 256u
#define AGILE_RING_MIN_SLOTS 2u
#define AGILE_RING_MAX_SLOTS 65536u
#define AGILE_RING_MIN_SLOT_SIZE 64u
#define AGILE_RING_MAX_SLOT_SIZE 4096u
#define AGILE_RING_MAX_PAYLOAD (AGILE_RING_MAX_SLOT_SIZE - AGILE_RING_SLOT_HDR_SIZE)
/* Largest region we map on a client's say-so. */
#define AGILE_RING_MAX_REGION ((uint64_t)1 << 30)

#define AGILE_RING_CLOSED_WORKER 0x1u
#define AGILE_RING_CLOSED_CLIENT 0x2u

/* Spin before sleeping: long enough to cover a round trip on a busy core, short enough
 * that an idle client costs nothing measurable. Adapted per endpoint within these bounds. */
#define AGILE_RING_SPIN_MIN_NS 2000u
#define AGILE_RING_SPIN_MAX_NS 50000u
/* Longest single futex sleep: the peer is re-checked at least this often. */
#define AGILE_RING_SLEEP_SLICE_NS 10000000u

/* agile__ring_submit flags. */
#define AGILE_RING_NONBLOCK 0x1u
/* Batch: write the command but publish it (and wake the worker) only with the next submit
 * without this flag, agile__ring_flush, or any wait: one release store and at most one
 * wake-up for a whole batch. */
#define AGILE_RING_MORE 0x2u

/* ---- commands ---------------------------------------------------------------------------- */
/* Payload records, in wire.h's field kinds (U8 U16 U32 U64 I32 BLOB). Blobs are u32 length +
 * bytes; decoded blobs point into the command's private copy, never into shared memory. */
#define AGILE_RING_REC_nop(F) F(U64, cookie)
#define AGILE_RING_REC_launch(F)                                                                   \
    F(U64, function)                                                                               \
    F(U64, stream)                                                                                 \
    F(U32, grid_x)                                                                                 \
    F(U32, grid_y)                                                                                 \
    F(U32, grid_z) F(U32, block_x) F(U32, block_y) F(U32, block_z) F(U32, shmem) F(U32, flags)     \
        F(BLOB, params)
#define AGILE_RING_REC_mod_op(F)                                                                   \
    F(U32, module) F(U32, op) F(U64, stream) F(U64, object) F(BLOB, args)
#define AGILE_RING_REC_memcpy(F) F(U64, dst) F(U64, src) F(U64, bytes) F(U64, stream) F(U32, flags)
#define AGILE_RING_REC_memset(F)                                                                   \
    F(U64, dst) F(U64, count) F(U32, value) F(U32, elem_size) F(U64, stream)
#define AGILE_RING_REC_signal(F) F(U64, counter) F(U64, value) F(U64, stream) F(U32, flags)
#define AGILE_RING_REC_wait(F) F(U64, counter) F(U64, value) F(U64, stream) F(U32, cond)
#define AGILE_RING_REC_barrier(F) F(U64, stream) F(U32, flags)

/* X(NAME, opcode, record): the only list of ring commands. Opcode 0 is never valid, so a
 * zeroed slot is rejected. */
#define AGILE_RING_CMD_LIST(X)                                                                     \
    X(NOP, 1, nop)                                                                                 \
    X(LAUNCH, 2, launch)                                                                           \
    X(MOD_OP, 3, mod_op)                                                                           \
    X(MEMCPY, 4, memcpy)                                                                           \
    X(MEMSET, 5, memset)                                                                           \
    X(SIGNAL, 6, signal)                                                                           \
    X(WAIT, 7, wait)                                                                               \
    X(BARRIER, 8, barrier)

enum {
#define X(name, op, rec) AGILE_RING_OP_##name = op,
    AGILE_RING_CMD_LIST(X)
#undef X
        AGILE_RING_OP_MAX_
};

#define X(name, op, rec)                                                                           \
    struct agile__ring_rec_##rec {                                                                 \
        AGILE_RING_REC_##rec(AGILE__FIELD_DECL)                                                    \
    };
AGILE_RING_CMD_LIST(X)
#undef X

/* A decoded (or to-be-encoded) command. For encoding, fill opcode, tag and u; blobs point to
 * the caller's memory. After decoding, everything lives in this struct (raw holds the
 * private copy of the slot that blobs point into). */
typedef struct agile__ring_cmd {
    uint16_t opcode;
    uint16_t flags;
    uint32_t length; /* payload bytes (decode) */
    uint64_t seq;    /* decode: the slot's seq; submit: filled in */
    uint64_t tag;
    union {
#define X(name, op, rec) struct agile__ring_rec_##rec rec;
        AGILE_RING_CMD_LIST(X)
#undef X
    } u;
    uint8_t raw[AGILE_RING_MAX_SLOT_SIZE];
} agile__ring_cmd;

/* A completion as the client sees it. */
typedef struct agile__ring_cpl {
    uint64_t seq; /* of the command */
    uint64_t tag;
    uint64_t result; /* op-specific (0 when the op has none) */
    int32_t status;  /* agile_err_t */
    uint16_t opcode;
} agile__ring_cpl;

const char *agile__ring_op_name(unsigned opcode);

/* agile__ring_cmd_size: bytes the slot needs for cmd (header included); compare with the
 * region's slot_size to decide whether to fall back to the control plane. */
size_t agile__ring_cmd_size(const agile__ring_cmd *cmd);
/* agile__ring_cmd_encode: write cmd as slot number seq into slot (slot_size bytes).
 * AGILE_ETOOBIG when it does not fit (nothing is published), AGILE_EINVAL on a bad opcode. */
int agile__ring_cmd_encode(const agile__ring_cmd *cmd, uint64_t seq, uint8_t *slot,
                           uint32_t slot_size);
/* agile__ring_cmd_decode: validate and decode the command in slot (slot_size bytes of shared
 * memory, possibly being rewritten by the client right now). The slot is copied into out->raw
 * first and only the copy is read. Checks magic, opcode, flags, status, length <= payload
 * size, seq == expected_seq and the payload record. AGILE_EPROTO on any failure. */
int agile__ring_cmd_decode(const uint8_t *slot, uint32_t slot_size, uint64_t expected_seq,
                           agile__ring_cmd *out);

/* ---- region ------------------------------------------------------------------------------ */

typedef struct agile__ring_geom {
    uint64_t size;
    uint32_t slots, slot_size;
    uint64_t cmd_ctl_off, cmd_off, cpl_ctl_off, cpl_off;
} agile__ring_geom;

/* A ring's control block in shared memory (AGILE_RING_CTL_SIZE bytes; offsets fixed by the
 * static asserts in ring.c). */
typedef struct agile__ring_ctl {
    _Alignas(64) _Atomic uint64_t tail;     /* producer: slots published */
    _Alignas(64) _Atomic uint64_t head;     /* consumer: slots released */
    _Alignas(64) _Atomic uint32_t data_ftx; /* bumped when data arrives for a sleeping consumer */
    _Atomic uint32_t cons_sleeping;
    _Alignas(64) _Atomic uint32_t space_ftx; /* bumped when space frees for a sleeping producer */
    _Atomic uint32_t prod_sleeping;
} agile__ring_ctl;

typedef struct agile__ring_region {
    int fd;
    uint8_t *base;
    agile__ring_geom g; /* private copy: never re-read from the region */
    uint32_t mask;
    agile__ring_ctl *cmd_ctl, *cpl_ctl;
    uint8_t *cmd, *cpl;
    _Atomic uint32_t *closed;
} agile__ring_region;

/* agile__ring_layout: the geometry the worker uses for (slots, slot_size). AGILE_EINVAL when
 * slots is not a power of two in range or slot_size not a multiple of 64 in range. */
int agile__ring_layout(uint32_t slots, uint32_t slot_size, agile__ring_geom *g);
/* agile__ring_hdr_validate: check a header (the first len bytes of a region, private copy)
 * against the region's real size. AGILE_EPROTO / AGILE_EVERSION; fills g on success. */
int agile__ring_hdr_validate(const uint8_t *hdr, size_t len, uint64_t region_size,
                             agile__ring_geom *g);
/* agile__ring_region_create: worker side. A new memfd of the layout's size, sealed against
 * shrinking and growing, mapped; r->fd is the fd to pass to the client (r keeps it; dup it
 * if the sender closes its copy). Fills the header. */
int agile__ring_region_create(uint32_t slots, uint32_t slot_size, agile__ring_region *r);
/* agile__ring_region_attach: client side. Maps fd (which r owns on success only) after
 * validating the header against fstat's size. */
int agile__ring_region_attach(int fd, agile__ring_region *r);
/* agile__ring_region_fini: unmap and close. Safe on a zeroed or failed region. */
void agile__ring_region_fini(agile__ring_region *r);

/* ---- waiting ----------------------------------------------------------------------------- */

/* How a waiter learns that its peer is gone. pidfd (from pidfd_open) is preferred over pid
 * (kill(pid, 0) cannot tell a zombie or a reused pid); check, if set, is called too and
 * returns AGILE_OK while the peer lives. Zeroed = no peer check (closed word only). */
typedef struct agile__ring_peer {
    int pidfd; /* -1: none */
    pid_t pid; /* 0: none */
    int (*check)(void *arg);
    void *arg;
} agile__ring_peer;

/* agile__ring_peer_pid: a peer watching process pid (pidfd when the kernel has it).
 * Release with agile__ring_peer_fini. */
int agile__ring_peer_pid(pid_t pid, agile__ring_peer *p);
void agile__ring_peer_fini(agile__ring_peer *p);
/* agile__ring_peer_alive: AGILE_OK, or AGILE_ECLOSED once the peer has exited. */
int agile__ring_peer_alive(const agile__ring_peer *p);

/* ---- client endpoint ---------------------------------------------------------------------- */

typedef struct agile__ring_client {
    agile__ring_region reg;
    agile__ring_peer peer;
    uint64_t cmd_tail;  /* next command seq */
    uint64_t published; /* commands the worker can see (< cmd_tail within a MORE batch) */
    uint64_t cpl_head;  /* next completion to read */
    uint32_t spin_ns;
    /* sticky asynchronous error: the first failing command since the last barrier */
    uint64_t err_seq;
    int32_t err_status;
    bool broken;
} agile__ring_client;

/* agile__ring_client_init: attach to fd (owned by c on success), watch peer (copied; c owns
 * its pidfd on success). */
int agile__ring_client_init(agile__ring_client *c, int fd, const agile__ring_peer *peer);
/* agile__ring_client_fini: mark the client side closed (wakes the worker), unmap, close. */
void agile__ring_client_fini(agile__ring_client *c);
/* Unmap without closing: the ring stays open for the process that owns it (a forked child
 * dropping its inherited copy). */
void agile__ring_client_detach(agile__ring_client *c);
/* agile__ring_submit: publish cmd on the command ring; *seq (optional) gets its seq.
 * flags: AGILE_RING_NONBLOCK, AGILE_RING_MORE. Client-side state is not thread-safe: one
 * thread per client endpoint at a time (the library's stream lock, say).
 * A full ring waits up to timeout_ns (<0: no limit, but still AGILE_ECLOSED as soon as the
 * worker dies or closes), or with AGILE_RING_NONBLOCK returns AGILE_EFULL at once. It also
 * returns AGILE_EFULL when the completion ring is full as well (the worker waits for us to
 * reap: waiting would deadlock); reap with agile__ring_poll/wait and retry.
 * AGILE_ETOOBIG when cmd does not fit a slot (use the control plane). */
int agile__ring_submit(agile__ring_client *c, const agile__ring_cmd *cmd, unsigned flags,
                       int64_t timeout_ns, uint64_t *seq);
/* agile__ring_flush: publish the commands of an AGILE_RING_MORE batch. Never blocks. */
void agile__ring_flush(agile__ring_client *c);
/* agile__ring_poll: take up to max completions without blocking; *n gets how many. Failed
 * completions are also recorded as the sticky error. Does not flush an open MORE batch. */
int agile__ring_poll(agile__ring_client *c, agile__ring_cpl *out, uint32_t max, uint32_t *n);
/* agile__ring_wait: flush, then wait up to timeout_ns for one completion. AGILE_ETIMEDOUT,
 * AGILE_ECLOSED (worker gone or closed the ring), AGILE_EPROTO (the worker wrote garbage). */
int agile__ring_wait(agile__ring_client *c, agile__ring_cpl *out, int64_t timeout_ns);
/* agile__ring_wait_seq: reap completions until the one for seq; *status gets its status.
 * Completions are in order, so earlier ones are recorded (sticky error) and dropped. */
int agile__ring_wait_seq(agile__ring_client *c, uint64_t seq, int64_t timeout_ns, int32_t *status);
/* agile__ring_barrier: submit a BARRIER on stream, wait for it, and return the first error of
 * an asynchronous command since the previous barrier (or AGILE_OK), then clear it. *err_seq
 * (optional) gets the failing command's seq. Transport errors are returned as such. */
int agile__ring_barrier(agile__ring_client *c, uint64_t stream, int64_t timeout_ns,
                        uint64_t *err_seq);
/* agile__ring_client_error: peek at the sticky error without clearing it. */
int32_t agile__ring_client_error(const agile__ring_client *c, uint64_t *seq);

/* ---- worker endpoint ---------------------------------------------------------------------- */

typedef struct agile__ring_worker {
    agile__ring_region reg;
    agile__ring_peer peer;
    uint64_t cmd_head; /* expected seq of the next command (private: the client cannot move it) */
    uint64_t cpl_tail; /* completions published */
    uint32_t spin_ns;
    uint64_t err_seq; /* sticky error reported by the next BARRIER */
    int32_t err_status;
    bool broken;
} agile__ring_worker;

/* agile__ring_worker_init: create a region (agile__ring_region_create); w->reg.fd goes to the
 * client. peer may be NULL and set later with agile__ring_worker_set_peer. */
int agile__ring_worker_init(agile__ring_worker *w, uint32_t slots, uint32_t slot_size,
                            const agile__ring_peer *peer);
/* agile__ring_worker_set_peer: watch the client (w owns p's pidfd afterwards). */
void agile__ring_worker_set_peer(agile__ring_worker *w, const agile__ring_peer *p);
/* agile__ring_worker_fini: mark the worker side closed (wakes the client), unmap, close. */
void agile__ring_worker_fini(agile__ring_worker *w);
/* agile__ring_next: take the next command without blocking. *got is false when the ring is
 * empty or the completion ring has no room for its completion (the worker never blocks on
 * a client that does not reap: that client just stops being served). AGILE_EPROTO when the
 * slot or the client's counters are malformed: an error completion is posted if there is
 * room, the ring is marked broken, and every later call fails: disconnect the client. */
int agile__ring_next(agile__ring_worker *w, agile__ring_cmd *out, bool *got);
/* agile__ring_pending: commands the client has published and the worker not yet taken
 * (0 when broken; bounded by slots). Cheap: one load. */
uint32_t agile__ring_pending(agile__ring_worker *w);
/* agile__ring_wait_cmd: wait up to timeout_ns until agile__ring_next would return a command.
 * AGILE_ETIMEDOUT; AGILE_ECLOSED when the client closed its side or died. */
int agile__ring_wait_cmd(agile__ring_worker *w, int64_t timeout_ns);
/* The kernel's limit for one vectored futex wait. */
#define AGILE_RING_WAIT_ANY_MAX 128u
/* agile__ring_wait_any: the dispatch thread of a worker serving many clients: wait up to
 * timeout_ns until at least one of the n rings needs attention. st[i] gets AGILE_OK (a
 * command can be taken), AGILE_ECLOSED (its client closed or died), AGILE_EPROTO (broken)
 * or AGILE_ETIMEDOUT (nothing). Spins briefly, then sleeps on all the rings' futex words at
 * once (futex_waitv; short sleeps on kernels without it). Returns AGILE_OK when some st[i] is
 * not AGILE_ETIMEDOUT, else AGILE_ETIMEDOUT; AGILE_EINVAL for n > AGILE_RING_WAIT_ANY_MAX. */
int agile__ring_wait_any(agile__ring_worker *const *w, uint32_t n, int64_t timeout_ns, int32_t *st);
/* agile__ring_complete: post the completion of cmd (seq/opcode/tag taken from it) with status
 * and result. A failed status becomes the sticky error; a BARRIER's completion carries the
 * sticky error instead of `status` when status is AGILE_OK, and clears it. Never blocks:
 * agile__ring_next only hands out a command when its completion has room. */
int agile__ring_complete(agile__ring_worker *w, const agile__ring_cmd *cmd, int32_t status,
                         uint64_t result);

#endif
