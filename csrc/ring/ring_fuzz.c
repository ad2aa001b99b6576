/* libFuzzer target: everything the worker reads from a client's ring region.
 *
 * The first input byte picks the target:
 *   0  agile__ring_cmd_decode on one slot (slot size and expected seq from the input);
 *      whatever decodes must re-encode to the same bytes
 *   1  agile__ring_hdr_validate on a region header (region size from the input); whatever
 *      validates must describe ranges inside the region
 *   2  the worker's agile__ring_next over a real region whose slots and counters the input
 *      fills, as a hostile client would
 */
#include <stdlib.h>
#include <string.h>

#include "ring/ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t take_u64(const uint8_t **p, size_t *n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8 && *n; i++, (*p)++, (*n)--)
        v |= (uint64_t) * *p << (8 * i);
    return v;
}

static agile__ring_cmd cmd, again;

static void fuzz_decode(const uint8_t *p, size_t n)
{
    static const uint32_t sizes[] = {64, 128, 256, 512, 4096};
    if (n < 2) return;
    uint32_t slot_size = sizes[p[0] % AGILE_ARRAY_LEN(sizes)];
    p++, n--;
    uint64_t seq = take_u64(&p, &n) % 4; /* small: so the seq check passes often */
    /* An exact-size heap slot: ASan catches any read past it. */
    uint8_t *slot = calloc(1, slot_size);
    uint8_t *out = calloc(1, slot_size);
    if (!slot || !out) abort();
    memcpy(slot, p, AGILE_MIN(n, (size_t)slot_size));
    if (agile__ring_cmd_decode(slot, slot_size, seq, &cmd) == AGILE_OK) {
        size_t need = agile__ring_cmd_size(&cmd);
        if (cmd.length > slot_size - AGILE_RING_SLOT_HDR_SIZE || need > slot_size ||
            need > AGILE_RING_SLOT_HDR_SIZE + cmd.length)
            abort();
        if (agile__ring_cmd_encode(&cmd, seq, out, slot_size) != AGILE_OK) abort();
        /* same bytes, except the length field (trailing bytes of a newer minor are dropped) */
        if (memcmp(out, slot, 8) || memcmp(out + 12, slot + 12, need - 12)) abort();
        if (agile__ring_cmd_decode(out, slot_size, seq, &again) != AGILE_OK) abort();
    }
    free(slot);
    free(out);
}

static void fuzz_header(const uint8_t *p, size_t n)
{
    uint64_t region = take_u64(&p, &n);
    agile__ring_geom g;
    uint8_t *hdr = malloc(n ? n : 1);
    if (!hdr) abort();
    memcpy(hdr, p, n);
    /* half the time a region size that matches the header, so deeper checks run */
    if ((region & 1) && n >= 16) {
        region = 0;
        for (unsigned i = 0; i < 8; i++)
            region |= (uint64_t)hdr[8 + i] << (8 * i);
    }
    if (agile__ring_hdr_validate(hdr, n, region, &g) == AGILE_OK) {
        uint64_t ring = (uint64_t)g.slots * g.slot_size;
        if (g.size != region || g.size > AGILE_RING_MAX_REGION || g.cmd_off + ring > g.size ||
            g.cpl_off + ring > g.size || g.cmd_ctl_off + AGILE_RING_CTL_SIZE > g.size ||
            g.cpl_ctl_off + AGILE_RING_CTL_SIZE > g.size || (g.slots & (g.slots - 1)))
            abort();
    }
    free(hdr);
}

static agile__ring_worker worker;
static bool have_worker;

static void fuzz_worker(const uint8_t *p, size_t n)
{
    if (!have_worker) {
        if (agile__ring_worker_init(&worker, 8, 64, NULL) != AGILE_OK) abort();
        agile__log_set_level(AGILE_LOG_ERROR);
        have_worker = true;
    }
    agile__ring_region *r = &worker.reg;
    uint64_t tail = take_u64(&p, &n) % 16;
    uint64_t chead = take_u64(&p, &n) % 16;
    memset(r->cmd, 0, (size_t)r->g.slots * r->g.slot_size);
    memcpy(r->cmd, p, AGILE_MIN(n, (size_t)r->g.slots * r->g.slot_size));
    atomic_store(&r->cmd_ctl->tail, tail);
    atomic_store(&r->cpl_ctl->head, chead);
    worker.cmd_head = 0;
    worker.cpl_tail = 0;
    worker.broken = false;
    worker.err_status = 0;
    for (int i = 0; i < 16; i++) {
        bool got;
        int rv = agile__ring_next(&worker, &cmd, &got);
        if (rv != AGILE_OK) {
            if (rv != AGILE_EPROTO || !worker.broken) abort();
            break;
        }
        if (!got) break;
        if (agile__ring_complete(&worker, &cmd, AGILE_OK, 0) != AGILE_OK) abort();
        atomic_store(&r->cpl_ctl->head, worker.cpl_tail); /* the client reaps */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_decode(data + 1, size - 1);
        break;
    case 1:
        fuzz_header(data + 1, size - 1);
        break;
    default:
        fuzz_worker(data + 1, size - 1);
        break;
    }
    return 0;
}
