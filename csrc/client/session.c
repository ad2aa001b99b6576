/* libagile: the end of a client. Everything a session made in this process belongs to its
 * agile_client (client_int.h); agile_disconnect takes it apart, each part through its own
 * close, the rings first (their reapers read memory the others free). */
#include "client_int.h"

#include <stdlib.h>

AGILE_API void agile_disconnect(agile_client *c)
{
    if (!c)
        return;
    agile__default_forget(c);
    c->timeout_ms = c->timeout_ms > 1000 ? 1000 : c->timeout_ms;
    agile__rings_close(c);
    pthread_mutex_destroy(&c->ring_mu);
    agile__objtab_fini(&c->objs);
    agile__conn_close(c);
    agile__mem_close(c);
    free(c);
}
