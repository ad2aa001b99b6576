/* backend_int.h — what the host and cuda backends share behind backend.h. Internal. */
#ifndef AGILE_BACKEND_INT_H
#define AGILE_BACKEND_INT_H

#include "backend.h"
#include "core.h"

/* One operations table per backend kind; backend.c validates arguments and dispatches. */
typedef struct agile__backend_ops {
    void (*close)(agile__backend *be);
    int (*device_count)(agile__backend *be);
    int (*device_info)(agile__backend *be, int dev, agile__devinfo *out);
    uint64_t (*granularity)(agile__backend *be, int dev);
    int (*window_create)(agile__window *w);   /* fields filled in; maps the sink */
    void (*window_destroy)(agile__window *w); /* unmaps and frees leases and sink */
    int (*lease_create)(agile__lease *l, int *fd);
    void (*lease_destroy)(agile__lease *l);
    int (*pmem_alloc)(agile__pmem *p);
    void (*pmem_free)(agile__pmem *p);
    int (*memset)(agile__backend *be, int dev, uint64_t addr, int value, uint64_t n);
    int (*memcpy)(agile__backend *be, int dev, uint64_t dst, uint64_t src, uint64_t n);
    int (*enter)(agile__backend *be, int dev);
    void (*leave)(agile__backend *be);
    void *(*cuda_context)(agile__backend *be, int dev);
    /* lease pool; NULL: the backend has none */
    int (*pool_config)(agile__backend *be, int dev, unsigned chunks, uint64_t chunk, int flags);
    int (*pool_fill)(agile__backend *be, int dev);
    void (*pool_stats)(agile__backend *be, int dev, agile__pool_stats *out);
    /* context reset after a sticky fault; NULL: the backend has no context to lose */
    int (*reset)(agile__backend *be, int dev, uint64_t *ns);
    unsigned (*generation)(agile__backend *be, int dev);
    int (*read)(agile__backend *be, int dev, void *dst, uint64_t src, uint64_t n);
    int (*write)(agile__backend *be, int dev, uint64_t dst, const void *src, uint64_t n);
    /* streams, events and kernels; NULL: the backend has no queues (backend.h) */
    const struct agile__queue_ops *queue;
} agile__backend_ops;

/* The queue operations of backend.h, one per call; backend.c checks the arguments. */
typedef struct agile__queue_ops {
    void (*caps)(agile__queue_caps *out);
    int (*stream_create)(agile__stream **out);
    void (*stream_destroy)(agile__stream *s);
    int (*stream_query)(agile__stream *s);
    int (*stream_sync)(agile__stream *s);
    int (*memcpy)(agile__stream *s, uint64_t dst, uint64_t src, uint64_t n);
    int (*memset8)(agile__stream *s, uint64_t dst, uint8_t value, uint64_t n);
    int (*wait32)(agile__stream *s, uint64_t addr, uint32_t value, int cond);
    int (*write32)(agile__stream *s, uint64_t addr, uint32_t value);
    int (*event_create)(agile__event **out);
    int (*event_record)(agile__event *e, agile__stream *s);
    int (*event_query)(agile__event *e);
    void (*event_destroy)(agile__event *e);
    int (*kmodule_load)(const void *image, agile__kmodule **out);
    void (*kmodule_unload)(agile__kmodule *m);
    int (*kmodule_function)(agile__kmodule *m, const char *name, agile__kfunc **out);
    int (*kfunc_set_dyn_smem)(agile__kfunc *f, uint32_t bytes);
    int (*launch)(agile__stream *s, agile__kfunc *f, const agile__launch_dims *d, void **params);
    int (*probe)(void);
    bool (*fault_take)(void);
} agile__queue_ops;

struct agile__backend {
    const agile__backend_ops *ops;
    int kind;
};

struct agile__lease {
    agile__window *w;
    agile__lease *prev, *next;
    uint64_t offset, size;
    uint64_t handle; /* cuda: CUmemGenericAllocationHandle */
    int keep_fd;     /* cuda: fd + 1 of a kept export, to map the lease again after a reset */
};

struct agile__window {
    agile__backend *be;
    int dev;
    uint64_t base;  /* worker-side address of offset 0 */
    uint64_t size;  /* W */
    uint64_t gap;   /* guard gap after the window, a multiple of gran */
    uint64_t gran;  /* granularity of leases and of the small sink */
    uint64_t chunk; /* sink chunk: clamp(W/1024, gran, 64 MiB) */
    agile__lease *leases;
    /* host */
    int sink_fd;
    uint64_t rsv_len; /* host: what is reserved at base (size + gap) */
    /* cuda */
    uint64_t sink_big, sink_small; /* CUmemGenericAllocationHandle; small == big if equal */
    uint8_t *gmap;                 /* per granule of window + gap: AGILE__G_* */
    bool broken;                   /* a failed rollback left the mappings unknown */
    /* cuda: leases whose unmap failed; their memory and mapping go with the window */
    struct agile__orphan {
        uint64_t offset, size, handle;
    } * orphans;
    size_t norphans;
};

struct agile__pmem {
    agile__backend *be;
    int dev;
    uint64_t addr, size;
    /* cuda with VMM: reserved + mapped (not cuMemAlloc), so a reset can restore it at addr */
    uint64_t handle, rsv;
};

/* agile__sink_chunk: the sink chunk size for a window of `size` with granularity gran. */
uint64_t agile__sink_chunk(uint64_t size, uint64_t gran);

extern const agile__backend_ops agile__host_ops;
extern const agile__backend_ops agile__cuda_ops;

/* backend_host.c / backend_cuda.c */
int agile__host_open(agile__backend **out, char *why, size_t whycap);
int agile__cuda_open(agile__backend **out, char *why, size_t whycap);

/* Host physical memory in bytes (sysconf), 0 when unknown. */
uint64_t agile__host_phys_mem(void);

#endif
