/* cwin.h — client windows: in the client process, a window of the size the worker gave the
 * tenant, reserved aligned to its size, with the worker's lease fds imported and mapped at
 * the worker's offsets (the two bases may differ). The worker's half of the memory model is
 * worker/backend/backend.h. Internal to libagile (and to the backend tests, which play
 * both sides).
 *
 * Threads: calls on one window are serialised by the caller. On cuda every function makes
 * the window's context (dev's primary context, retained by agile__cmem_reserve) current for
 * its own duration. */
#ifndef AGILE_CWIN_H
#define AGILE_CWIN_H

#include <stdint.h>

typedef struct agile__cwin agile__cwin;

/* The host backend's granularity of windows and leases, that of the GPUs, so that tests
 * exercise the same geometry. */
#define AGILE_HOST_GRAN (2ull << 20)

/* agile__cmem_reserve: reserve a window of `size` (a power of two, <= 2^46) aligned to
 * `size` for device dev of the given backend kind (AGILE_BACKEND_KIND_*). On cuda this uses
 * the client's own CUDA context (the primary context of dev, retained until
 * agile__cmem_release). On host the range stays reserved PROT_NONE wherever nothing is
 * mapped. */
int agile__cmem_reserve(int kind, int dev, uint64_t size, agile__cwin **out);
/* Import the lease fd (the callee takes ownership of fd on success and failure) and map it
 * at `offset`, readable and writable by the client. */
int agile__cmem_map(agile__cwin *w, int fd, uint64_t offset, uint64_t size);
/* Unmap exactly a range earlier mapped with agile__cmem_map (same offset and size). */
int agile__cmem_unmap(agile__cwin *w, uint64_t offset, uint64_t size);
uint64_t agile__cmem_base(const agile__cwin *w);
/* Unmaps whatever is still mapped and frees the reservation. */
void agile__cmem_release(agile__cwin *w);

/* agile__va_reserve: reserve len bytes of PROT_NONE address space aligned to align (a power
 * of two); *base is its start. The host backend's windows are reserved the same way. */
int agile__va_reserve(uint64_t len, uint64_t align, uint64_t *base);

#endif
