/* Collectives over the processes of a data-parallel run.
 *
 * One table, three implementations:
 *  - "single": one process; every collective is the identity (a gather copies).
 *  - "mpi":    processes started by mpirun (Debian's OpenMPI), one rank per process; the
 *              collectives take host memory.
 *  - "nccl":   one GPU per process; float collectives on the CUDA backend's stream, the
 *              communicator's unique id broadcast over MPI, host collectives over MPI (a
 *              process started without a launcher: one rank, no MPI).
 *
 * No collective waits forever: each gives up after `timeout_s` seconds with VR_ERR_COMM naming
 * the operation and the rank, and the same happens as soon as *interrupt becomes non-zero while
 * it waits (a signal handler's flag). A process that died or hangs thus stops the others within
 * a bounded time; vr_comm_abort then ends every process of the run. */
#ifndef VICREG_COMM_H
#define VICREG_COMM_H

#include <signal.h>
#include <stddef.h>

#include "vicreg/backend.h"

typedef enum vr_comm_type { VR_COMM_F32, VR_COMM_F64, VR_COMM_I64, VR_COMM_U8 } vr_comm_type;

typedef struct vr_comm vr_comm;

struct vr_comm {
    const char *name;   /* "single", "mpi", "nccl" */
    int rank, size;
    double timeout_s;   /* longest wait of one collective; <= 0: none */
    const volatile sig_atomic_t *interrupt; /* optional: ends a wait when non-zero */
    void *ctx;
    /* -- host memory -------------------------------------------------------------------- */
    /* buf (count) = sum over ranks, in place */
    vr_status (*allreduce)(vr_comm *c, void *buf, size_t count, vr_comm_type t);
    /* recv (size, count) = every rank's send (count), in rank order */
    vr_status (*allgather)(vr_comm *c, const void *send, size_t count, vr_comm_type t, void *recv);
    /* buf (count) = root's buf */
    vr_status (*broadcast)(vr_comm *c, void *buf, size_t count, vr_comm_type t, int root);
    vr_status (*barrier)(vr_comm *c);
    /* -- device memory of a backend (NULL where the host collectives serve: see below) --- */
    vr_status (*dev_allreduce)(vr_comm *c, vr_backend *be, float *buf, size_t count);
    vr_status (*dev_allgather)(vr_comm *c, vr_backend *be, const float *send, size_t count,
                               float *recv);
    vr_status (*dev_broadcast)(vr_comm *c, vr_backend *be, float *buf, size_t count, int root);
    /* -- sums that run while other work goes on (NULL where the comm has none) ------------
     * sum_start queues the in-place sum over the ranks of buf (count floats: host memory for
     * "mpi", device memory of be for "nccl") after the work queued on be so far, and returns;
     * sum_progress lets pending sums advance (MPI moves them only inside its calls);
     * sum_finish waits, within the timeout, for every sum started since the last finish, after
     * which buf may be read and written again. Every rank starts the same sums in the same
     * order. */
    vr_status (*sum_start)(vr_comm *c, vr_backend *be, float *buf, size_t count);
    vr_status (*sum_progress)(vr_comm *c);
    vr_status (*sum_finish)(vr_comm *c, vr_backend *be);
    /* ends every process of the run with exit status code (does not return for MPI) */
    void (*abort)(vr_comm *c, int code);
    void (*destroy)(vr_comm *c);
    float *stage;       /* host copy for device collectives without device support */
    size_t stage_count;
};

/* Whether this process was started by an MPI launcher (mpirun / srun with PMI). */
int vr_comm_launched(void);

/* kind: "single", "mpi", "nccl", or "auto" ("mpi" when launched by mpirun, else "single").
 * "nccl" binds the GPU of be (a CUDA backend) and needs MPI for its setup. VR_ERR_UNSUPPORTED
 * names what this build lacks. */
vr_status vr_comm_create(const char *kind, vr_backend *be, vr_comm **out);
void vr_comm_destroy(vr_comm *c);
/* Ends every process of the run (MPI_Abort); the single process just exits. */
void vr_comm_abort(vr_comm *c, int code);

/* Host collectives (see the table). */
vr_status vr_comm_allreduce(vr_comm *c, void *buf, size_t count, vr_comm_type t);
vr_status vr_comm_allgather(vr_comm *c, const void *send, size_t count, vr_comm_type t, void *recv);
vr_status vr_comm_broadcast(vr_comm *c, void *buf, size_t count, vr_comm_type t, int root);
vr_status vr_comm_barrier(vr_comm *c);

/* Float collectives on device memory of be: the device path where the comm has one (NCCL),
 * the host collectives directly on a CPU backend, else staged through a host copy. */
vr_status vr_comm_allreduce_dev(vr_comm *c, vr_backend *be, float *buf, size_t count);
vr_status vr_comm_allgather_dev(vr_comm *c, vr_backend *be, const float *send, size_t count,
                                float *recv);
vr_status vr_comm_broadcast_dev(vr_comm *c, vr_backend *be, float *buf, size_t count, int root);

/* Whether c's sums can overlap work on be: the comm has them for be's memory (NCCL: a CUDA
 * backend's; MPI: a CPU backend's host memory) and more than one rank. */
int vr_comm_sum_overlaps(const vr_comm *c, const vr_backend *be);
/* Sums of device floats of be that overlap the work queued after them: the table's sum_start,
 * sum_progress and sum_finish where they overlap; elsewhere (a device backend under MPI, staged
 * through the host) start sums at once, as vr_comm_allreduce_dev, and progress and finish have
 * nothing left to do. */
vr_status vr_comm_sum_start(vr_comm *c, vr_backend *be, float *buf, size_t count);
vr_status vr_comm_sum_progress(vr_comm *c, vr_backend *be);
vr_status vr_comm_sum_finish(vr_comm *c, vr_backend *be);

/* Bytes of one element of t. */
size_t vr_comm_type_size(vr_comm_type t);

/* The MPI and NCCL implementations (src/comm/mpi.c, nccl.c); VR_ERR_UNSUPPORTED where not
 * built. */
vr_status vr_comm_mpi_create(vr_comm **out);
vr_status vr_comm_nccl_create(vr_backend *be, vr_comm **out);

#endif
