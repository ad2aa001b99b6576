/* backend.h — the GPU backends behind one interface: `cuda` (CUDA driver API through
 * dlopen("libcuda.so.1"), one primary context per GPU, owned by the worker) and `host`
 * (memfd-backed memory, no GPU). See ../../../shared/DESIGN.md "Memory model: windows".
 *
 * Worker side: a backend hands out per-tenant windows of W = 2^k bytes, aligned to W,
 * reserved with a trailing guard gap; every unleased part of a window (and the gap) is
 * mapped to a per-window sink chunk so a fenced access never faults. Leases are physical
 * chunks mapped into a window at an offset and exported as file descriptors; released
 * leases are scrubbed before their memory can reach anyone else. Protected memory is
 * the worker's own and never exported.
 *
 * Client side (agile__cmem_*): the same window size reserved in the client, leases
 * imported from their fds and mapped at the same offsets. The two bases may differ.
 *
 * Threads: a backend's functions may be called from any thread; calls on one window are
 * serialised by the caller (the worker's per-session lock). No function holds a global
 * lock across a GPU call.
 */
#ifndef AGILE_BACKEND_H
#define AGILE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct agile__backend agile__backend;
typedef struct agile__window agile__window;
typedef struct agile__lease agile__lease;
typedef struct agile__pmem agile__pmem;

enum { AGILE_BACKEND_HOST = 1, AGILE_BACKEND_CUDA = 2 };

typedef struct agile__devinfo {
    char name[128];
    uint64_t total_mem;
    uint64_t free_mem;
    int cc_major, cc_minor;
    uint64_t granularity; /* physical chunk granularity (2 MiB on H100/H200, host: 2 MiB) */
    char uuid[40];
} agile__devinfo;

/* agile__backend_open: open the backend of the given kind (AGILE_BACKEND_*). On failure
 * returns an error (AGILE_ENODEV when the machine has no usable GPU or driver) and writes
 * the reason for a person ("libcuda.so.1 not found", "no CUDA device") into why. */
int agile__backend_open(int kind, agile__backend **out, char *why, size_t whycap);
void agile__backend_close(agile__backend *be);
int agile__backend_kind(const agile__backend *be);
const char *agile__backend_name(const agile__backend *be);
int agile__backend_device_count(agile__backend *be);
int agile__backend_device_info(agile__backend *be, int dev, agile__devinfo *out);

/* ---- windows (worker side) ---------------------------------------------------------------- */

/* agile__window_create: reserve `size` (a power of two >= granularity) aligned to `size`,
 * plus `guard_gap` bytes after it, on device dev, and map the sink over all of it. */
int agile__window_create(agile__backend *be, int dev, uint64_t size, uint64_t guard_gap,
                         agile__window **out);
/* Unmaps and releases everything, leases included (they must not be used afterwards). */
void agile__window_destroy(agile__window *w);
/* Worker-side base address of the window (device VA on cuda, host VA on host). */
uint64_t agile__window_base(const agile__window *w);
uint64_t agile__window_size(const agile__window *w);

/* agile__lease_create: allocate `size` bytes (a multiple of granularity) of fresh, zeroed
 * physical memory, map it at `offset` of the window (replacing the sink there) and export
 * it: *fd is a new file descriptor the caller owns (send it, then close it). */
int agile__lease_create(agile__window *w, uint64_t offset, uint64_t size, agile__lease **out,
                        int *fd);
/* agile__lease_destroy: scrub, unmap, put the sink back over the range, free the memory. */
void agile__lease_destroy(agile__lease *l);
uint64_t agile__lease_offset(const agile__lease *l);
uint64_t agile__lease_size(const agile__lease *l);

/* ---- protected memory (worker and modules; never inside a window, never exported) ------- */
int agile__pmem_alloc(agile__backend *be, int dev, uint64_t size, agile__pmem **out,
                      uint64_t *addr);
void agile__pmem_free(agile__pmem *p);

/* ---- memory operations on worker-side addresses (in-window memcpy/memset commands) ------ */
int agile__backend_memset(agile__backend *be, int dev, uint64_t addr, int value, uint64_t n);
int agile__backend_memcpy(agile__backend *be, int dev, uint64_t dst, uint64_t src, uint64_t n);

/* ---- client side -------------------------------------------------------------------------- */

typedef struct agile__cwin agile__cwin;

/* agile__cmem_reserve: in the client process, reserve a window of `size` aligned to
 * `size` for device dev of the given backend kind. On cuda this uses the client's own
 * CUDA context (the primary context of dev, retained). */
int agile__cmem_reserve(int kind, int dev, uint64_t size, agile__cwin **out);
/* Import the lease fd (the callee takes ownership of fd on success and failure) and map it
 * at `offset`, readable and writable by the client. */
int agile__cmem_map(agile__cwin *w, int fd, uint64_t offset, uint64_t size);
int agile__cmem_unmap(agile__cwin *w, uint64_t offset, uint64_t size);
uint64_t agile__cmem_base(const agile__cwin *w);
void agile__cmem_release(agile__cwin *w);

#endif
