/* twin.h — tenant windows: one window (and its sinks) per tenant and device, shared by the
 * tenant's sessions. Created by the tenant's first lease on the device, released when the
 * last session that used it is freed, so a tenant costs the worker one window's mappings
 * (~1024 + gap/chunk on host, where vm.max_map_count bounds them) however many sessions it
 * opens, and holds one sink per device, counted in its quota (agile__tenant.sink).
 *
 * Offsets: a lease's offset is the same in the worker's window and in the client's, which
 * reserves a window of the same size and maps its own leases at the offsets the worker
 * gives; the tenant's sessions share one offset space (one lock per tenant), so their
 * leases never overlap, and a session's end frees only its own leases. Guarded kernels and
 * ring ops of a session can reach every lease of its tenant (one uid), never another's.
 *
 * Threads: every call may come from any thread; agile__twin_window does not block. */
#ifndef AGILE_TWIN_H
#define AGILE_TWIN_H

#include "worker.h"

/* agile__twin_lease: a lease of `size` bytes for session s on dev, in its tenant's window
 * of W bytes (created here on the tenant's first lease on dev; its sinks are then counted
 * in the tenant's quota, AGILE_EQUOTA when leased + sink bytes would pass `quota`). The
 * session joins the window (agile__twin_window) and keeps it until it is freed. */
int agile__twin_lease(agile__worker *w, agile__session *s, int dev, uint64_t W, uint64_t size,
                      uint64_t quota, agile__lease **l, uint64_t *off, int *fd);
/* agile__twin_unlease: destroy a lease of agile__twin_lease; its range is free again. */
void agile__twin_unlease(agile__session *s, int dev, agile__lease *l, uint64_t off, uint64_t size);
/* The tenant window s has joined on dev, NULL before its first lease there. */
agile__window *agile__twin_window(const agile__session *s, int dev);
/* agile__twin_session_end: from the session's last release; the last session of a tenant
 * on a device releases the window and its sinks. */
void agile__twin_session_end(agile__session *s);
/* agile__twin_tenant_fini: when the worker frees its tenants (their sessions are gone). */
void agile__twin_tenant_fini(agile__tenant *t);

#endif
