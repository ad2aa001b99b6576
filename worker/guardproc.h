/* The guard's work for one module load (parse and fence, verify, compile) runs in a child
 * process of its own, not in the worker's threads:
 *  - its own address space: its page faults and large allocations never take the worker's
 *    mmap lock, which lease mapping needs, so one tenant's loads do not hold up another's
 *    leases while a loaded CPU keeps the load from running (priority inversion: the guard
 *    work runs at nice 19 on a --shared worker);
 *  - its own fate: a guard or nvJitLink crash, or PTX that makes them run away, ends the
 *    child (CPU time and wall-time limits), and the load fails with AGILE_EGUARD; the worker
 *    and its tenants go on.
 * The child is the running program itself started again (/proc/self/exe) with
 * AGILE_GUARD_CHILD in its environment: a constructor in guardproc.c serves the one job on
 * stdin/stdout before main() runs, so every program linking the worker core (the worker, its
 * tests and fuzzers) can run guard jobs without another binary to find. */
#ifndef AGILE_WORKER_GUARDPROC_H
#define AGILE_WORKER_GUARDPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What failed, when a job fails. */
enum { AGILE_GJ_GUARD = 1, AGILE_GJ_VERIFY, AGILE_GJ_COMPILE, AGILE_GJ_CHILD };

typedef struct agile__guard_job {
    /* in */
    const char *ptx;
    size_t len;
    bool strict;
    uint64_t guard_gap;
    const char *arch;      /* "sm_90": compile for it ("sm_90a" when the PTX targets that);
                            * NULL: guard and verify only (host backend) */
    const char *cache_dir; /* the compile cache, or NULL */
    bool nice;             /* run the child at nice 19 */
    bool raw;              /* no guard, no verifier: compile the PTX as it is (the test-only
                            * AGILE_MODULE_LOAD_TEST_UNGUARDED route) */
    /* out */
    int stage;       /* AGILE_GJ_* of a failure, 0 on success */
    bool record;     /* the entries take the violation record */
    unsigned nsites; /* fenced sites */
    bool hit;        /* the image came from the compile cache */
    void *image;     /* malloc()ed cubin, when compiled */
    size_t image_len;
    char msg[1024]; /* the reason of a failure; the JIT log on success */
} agile__guard_job;

/* Runs the job in a child process. AGILE_OK, or the guard's error (AGILE_EREJECT for PTX the
 * guard refuses, AGILE_EGUARD for a verifier refusal or a child that died or ran past its
 * limits, a compile error), with j->stage and j->msg saying which and why. */
int agile__guard_job_run(agile__guard_job *j);
void agile__guard_job_fini(agile__guard_job *j);
/* on: every job in progress or started later fails at once (the worker is shutting down and
 * must not wait up to 300 s for a guard); off: jobs run (a worker starting). */
void agile__guard_jobs_cancel(bool on);

#endif
