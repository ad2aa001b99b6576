/* evpool.c — pooled CUevents for the sub-allocator (see evpool.h). */
#include "evpool.h"

#include "core.h"
#include "cudadrv.h"

void agile__evpool_init(agile__evpool *p)
{
    pthread_mutex_init(&p->mu, NULL);
    p->nfree = 0;
    p->created = p->destroyed = 0;
}

void agile__evpool_fini(agile__evpool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->nfree) {
        agile__cu.cuEventDestroy((CUevent)(uintptr_t)p->free[--p->nfree]);
        p->destroyed++;
    }
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_destroy(&p->mu);
}

int agile__evpool_record(agile__evpool *p, uintptr_t stream, uint64_t *event)
{
    CUevent ev = NULL;
    CUresult r;

    pthread_mutex_lock(&p->mu);
    if (p->nfree) ev = (CUevent)(uintptr_t)p->free[--p->nfree];
    pthread_mutex_unlock(&p->mu);
    if (!ev) {
        r = agile__cu.cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING);
        if (r != CUDA_SUCCESS) return agile_err_cuda((int)r);
        pthread_mutex_lock(&p->mu);
        p->created++;
        pthread_mutex_unlock(&p->mu);
    }
    r = agile__cu.cuEventRecord(ev, (CUstream)stream);
    if (r != CUDA_SUCCESS) {
        agile__evpool_release(p, (uint64_t)(uintptr_t)ev);
        return agile_err_cuda((int)r);
    }
    *event = (uint64_t)(uintptr_t)ev;
    return AGILE_OK;
}

int agile__evpool_query(agile__evpool *p, uint64_t event)
{
    CUresult r = agile__cu.cuEventQuery((CUevent)(uintptr_t)event);
    (void)p;
    if (r == CUDA_SUCCESS) return AGILE_OK;
    return r == CUDA_ERROR_NOT_READY ? AGILE_EBUSY : agile_err_cuda((int)r);
}

void agile__evpool_release(agile__evpool *p, uint64_t event)
{
    bool kept = false;
    if (!event) return;
    pthread_mutex_lock(&p->mu);
    if (p->nfree < AGILE__EVPOOL_CAP) {
        p->free[p->nfree++] = event;
        kept = true;
    } else {
        p->destroyed++;
    }
    pthread_mutex_unlock(&p->mu);
    if (!kept) agile__cu.cuEventDestroy((CUevent)(uintptr_t)event);
}
