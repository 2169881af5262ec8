/* The NCCL comm: one GPU per process. Float collectives run on the CUDA backend's stream; the
 * host collectives and the communicator's setup go over an MPI comm held inside (a process
 * started without a launcher is one rank, its host collectives those of "single").
 *
 * The communicator is non-blocking (ncclConfig_t.blocking = 0), so no NCCL call can hang the
 * process: a collective is queued, then its completion is polled (the communicator's
 * asynchronous error and the stream) against the comm's deadline, and a rank that died or
 * hangs makes the wait end in ncclCommAbort and VR_ERR_COMM, as with MPI. Waiting for each
 * collective serialises it with the host, which the training step does anyway after its
 * gradient all-reduce.
 *
 * The sums that overlap the backward (sum_start) run on a side stream of their own: each waits
 * on the GPU for the compute stream's work queued before it (an event), so NCCL's kernels run
 * beside the rest of the backward; sum_finish waits for the side stream within the timeout. */
#include "vr_config.h"

#include "vicreg/comm.h"

#if VR_HAVE_NCCL

#include <mpi.h>
#include <nccl.h>
#include <string.h>
#include <time.h>

#include "../backend/cuda/cuda.h"

typedef struct nccl_ctx {
    vr_comm *host;   /* the MPI comm */
    ncclComm_t comm;
    cudaStream_t stream;  /* the backend's compute stream */
    cudaStream_t side;    /* the overlapping sums */
    cudaEvent_t queued;   /* the compute stream's work up to a sum's start */
} nccl_ctx;

static nccl_ctx *ctx_of(vr_comm *c) { return (nccl_ctx *)c->ctx; }

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Waits for the communicator's pending call and then, unless NULL, for *stream, within the
 * timeout. */
static vr_status nccl_wait(vr_comm *c, const char *what, const cudaStream_t *stream)
{
    nccl_ctx *x = ctx_of(c);
    double t0 = now();
    for (;;) {
        ncclResult_t r = ncclSuccess;
        ncclCommGetAsyncError(x->comm, &r);
        if (r != ncclSuccess && r != ncclInProgress) {
            ncclCommAbort(x->comm);
            x->comm = NULL;
            return vr_fail(VR_ERR_COMM, "comm", "rank %d of %d: nccl %s failed: %s", c->rank,
                           c->size, what, ncclGetErrorString(r));
        }
        if (r == ncclSuccess) {
            if (!stream) return VR_OK;
            cudaError_t e = cudaStreamQuery(*stream);
            if (e == cudaSuccess) return VR_OK;
            if (e != cudaErrorNotReady) return vr_cuda_check(e, what);
        }
        double waited = now() - t0;
        int interrupted = c->interrupt && *c->interrupt;
        if (interrupted || (c->timeout_s > 0 && waited > c->timeout_s)) {
            ncclCommAbort(x->comm);
            x->comm = NULL;
            return interrupted
                       ? vr_fail(VR_ERR_COMM, "comm", "rank %d of %d: interrupted by a signal "
                                 "while waiting for the other ranks in nccl %s", c->rank, c->size, what)
                       : vr_fail(VR_ERR_COMM, "comm", "rank %d of %d: nccl %s did not complete "
                                 "within %g s: another rank has died or hangs", c->rank, c->size,
                                 what, c->timeout_s);
        }
        struct timespec ts = {0, 20000L};
        nanosleep(&ts, NULL);
    }
}

static vr_status nccl_called(vr_comm *c, ncclResult_t r, const char *what,
                             const cudaStream_t *stream)
{
    if (r != ncclSuccess && r != ncclInProgress)
        return vr_fail(VR_ERR_COMM, "comm", "rank %d of %d: nccl %s: %s", c->rank, c->size, what,
                       ncclGetErrorString(r));
    return nccl_wait(c, what, stream);
}

static vr_status usable(vr_comm *c)
{
    if (!ctx_of(c)->comm)
        return vr_fail(VR_ERR_COMM, "comm", "rank %d: the NCCL communicator was aborted", c->rank);
    return VR_OK;
}

static vr_status nccl_dev_allreduce(vr_comm *c, vr_backend *be, float *buf, size_t count)
{
    (void)be;
    VR_TRY(usable(c));
    nccl_ctx *x = ctx_of(c);
    return nccl_called(c, ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, x->comm, x->stream),
                       "all-reduce", &x->stream);
}

static vr_status nccl_dev_allgather(vr_comm *c, vr_backend *be, const float *send, size_t count,
                                    float *recv)
{
    (void)be;
    VR_TRY(usable(c));
    nccl_ctx *x = ctx_of(c);
    return nccl_called(c, ncclAllGather(send, recv, count, ncclFloat, x->comm, x->stream),
                       "all-gather", &x->stream);
}

static vr_status nccl_dev_broadcast(vr_comm *c, vr_backend *be, float *buf, size_t count,
                                    int root)
{
    (void)be;
    VR_TRY(usable(c));
    nccl_ctx *x = ctx_of(c);
    return nccl_called(c, ncclBroadcast(buf, buf, count, ncclFloat, root, x->comm, x->stream),
                       "broadcast", &x->stream);
}

static vr_status nccl_sum_start(vr_comm *c, vr_backend *be, float *buf, size_t count)
{
    (void)be;
    VR_TRY(usable(c));
    nccl_ctx *x = ctx_of(c);
    VR_CUDA_TRY(cudaEventRecord(x->queued, x->stream));
    VR_CUDA_TRY(cudaStreamWaitEvent(x->side, x->queued, 0));
    /* waits for the call to be queued, not for the sum */
    return nccl_called(c, ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, x->comm, x->side),
                       "all-reduce", NULL);
}

static vr_status nccl_sum_finish(vr_comm *c, vr_backend *be)
{
    (void)be;
    VR_TRY(usable(c));
    return nccl_wait(c, "all-reduce", &ctx_of(c)->side);
}

/* the host collectives are the MPI comm's, under this comm's timeout and interrupt */
static vr_comm *host_of(vr_comm *c)
{
    vr_comm *h = ctx_of(c)->host;
    h->timeout_s = c->timeout_s;
    h->interrupt = c->interrupt;
    return h;
}

static vr_status nccl_allreduce(vr_comm *c, void *buf, size_t count, vr_comm_type t)
{
    vr_comm *h = host_of(c);
    return h->allreduce(h, buf, count, t);
}

static vr_status nccl_allgather(vr_comm *c, const void *send, size_t count, vr_comm_type t,
                                void *recv)
{
    vr_comm *h = host_of(c);
    return h->allgather(h, send, count, t, recv);
}

static vr_status nccl_broadcast(vr_comm *c, void *buf, size_t count, vr_comm_type t, int root)
{
    vr_comm *h = host_of(c);
    return h->broadcast(h, buf, count, t, root);
}

static vr_status nccl_barrier(vr_comm *c)
{
    vr_comm *h = host_of(c);
    return h->barrier(h);
}

static void nccl_abort(vr_comm *c, int code)
{
    nccl_ctx *x = ctx_of(c);
    if (x->comm) ncclCommAbort(x->comm);
    x->comm = NULL;
    x->host->abort(x->host, code);
}

static void nccl_destroy(vr_comm *c)
{
    nccl_ctx *x = ctx_of(c);
    if (x->comm) {
        ncclCommFinalize(x->comm);
        ncclResult_t r = ncclInProgress;
        double t0 = now();
        struct timespec ts = {0, 1000000L};
        while (r == ncclInProgress && now() - t0 < 10.0) {
            ncclCommGetAsyncError(x->comm, &r);
            if (r == ncclInProgress) nanosleep(&ts, NULL);
        }
        if (r == ncclSuccess) ncclCommDestroy(x->comm);
        else ncclCommAbort(x->comm);
    }
    if (x->queued) cudaEventDestroy(x->queued);
    if (x->side) cudaStreamDestroy(x->side);
    vr_comm_destroy(x->host);
    free(x);
    free(c);
}

/* NCCL takes one GPU per rank; two ranks on one device (more ranks on a machine than devices it
 * shows them) would hang or fail late in its setup. Every rank compares all the ranks' device
 * UUIDs, so all of them stop here alike. */
static vr_status distinct_devices(vr_comm *c, int device)
{
    if (c->size == 1) return VR_OK;
    nccl_ctx *x = ctx_of(c);
    struct cudaDeviceProp prop;
    VR_TRY(vr_cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"));
    const size_t u = sizeof prop.uuid.bytes;
    unsigned char *all = malloc((size_t)c->size * u);
    if (!all) return vr_fail(VR_ERR_NOMEM, "comm", "out of memory");
    vr_status s = vr_comm_allgather(x->host, prop.uuid.bytes, u, VR_COMM_U8, all);
    for (int i = 0; s == VR_OK && i < c->size; i++)
        for (int j = i + 1; s == VR_OK && j < c->size; j++)
            if (!memcmp(all + i * u, all + j * u, u))
                s = vr_fail(VR_ERR_ARG, "comm", "rank %d of %d: ranks %d and %d would share one GPU; "
                            "nccl needs a GPU per rank: start at most as many ranks on a machine as "
                            "it has GPUs (CUDA_VISIBLE_DEVICES shows %s)", c->rank, c->size, i, j,
                            getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "all");
    free(all);
    return s;
}

vr_status vr_comm_nccl_create(vr_backend *be, vr_comm **out)
{
    *out = NULL;
    if (!be || be->device != VR_DEVICE_CUDA)
        return vr_fail(VR_ERR_ARG, "comm", "nccl needs a CUDA backend (backend = cuda, "
                       "cuda-tf32 or cuda-bf16)");
    vr_comm *c = calloc(1, sizeof *c);
    nccl_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c);
        free(x);
        return vr_fail(VR_ERR_NOMEM, "comm", "out of memory");
    }
    c->ctx = x;
    c->name = "nccl";
    c->timeout_s = 300;
    c->destroy = nccl_destroy;
    /* under a launcher the ranks meet over MPI; a process started alone is one rank */
    vr_status s = vr_comm_launched() ? vr_comm_mpi_create(&x->host)
                                     : vr_comm_create("single", NULL, &x->host);
    if (s != VR_OK) {
        free(x);
        free(c);
        return s;
    }
    c->rank = x->host->rank;
    c->size = x->host->size;
    x->stream = vr_cuda(be)->stream;
    s = vr_cuda_check(cudaStreamCreateWithFlags(&x->side, cudaStreamNonBlocking),
                      "cudaStreamCreateWithFlags");
    if (s == VR_OK)
        s = vr_cuda_check(cudaEventCreateWithFlags(&x->queued, cudaEventDisableTiming),
                          "cudaEventCreateWithFlags");
    if (s != VR_OK) {
        nccl_destroy(c);
        return s;
    }
    x->host->timeout_s = c->timeout_s; /* the setup's waits too are bounded */
    if (s == VR_OK) s = distinct_devices(c, vr_cuda(be)->device);
    /* rank 0's id, or its failure to make one, which every rank then reports */
    struct {
        ncclUniqueId id;
        int32_t result;
    } offer;
    memset(&offer, 0, sizeof offer);
    if (s == VR_OK && c->rank == 0) offer.result = ncclGetUniqueId(&offer.id);
    if (s == VR_OK) s = vr_comm_broadcast(x->host, &offer, sizeof offer, VR_COMM_U8, 0);
    if (s == VR_OK && offer.result != ncclSuccess)
        s = vr_fail(VR_ERR_COMM, "comm", "rank %d of %d: ncclGetUniqueId on rank 0: %s", c->rank,
                    c->size, ncclGetErrorString((ncclResult_t)offer.result));
    if (s == VR_OK) {
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;
        ncclResult_t r = ncclCommInitRankConfig(&x->comm, c->size, offer.id, c->rank, &cfg);
        if (r != ncclSuccess && r != ncclInProgress) {
            x->comm = NULL;
            s = vr_fail(VR_ERR_COMM, "comm", "rank %d of %d: ncclCommInitRank: %s", c->rank,
                        c->size, ncclGetErrorString(r));
        } else {
            s = nccl_wait(c, "communicator setup", NULL);
        }
    }
    if (s != VR_OK) {
        nccl_destroy(c);
        return s;
    }
    c->allreduce = nccl_allreduce;
    c->allgather = nccl_allgather;
    c->broadcast = nccl_broadcast;
    c->barrier = nccl_barrier;
    c->dev_allreduce = nccl_dev_allreduce;
    c->dev_allgather = nccl_dev_allgather;
    c->dev_broadcast = nccl_dev_broadcast;
    c->sum_start = nccl_sum_start;
    c->sum_finish = nccl_sum_finish;
    c->abort = nccl_abort;
    *out = c;
    return VR_OK;
}

#else

vr_status vr_comm_nccl_create(vr_backend *be, vr_comm **out)
{
    (void)be;
    *out = NULL;
    return vr_fail(VR_ERR_UNSUPPORTED, "comm",
                   "this build has no NCCL (it needs CUDA, NCCL and MPI at configure time)");
}

#endif
