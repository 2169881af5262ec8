/* The MPI comm: one rank per process, collectives on host memory over MPI_COMM_WORLD.
 *
 * Every collective is the non-blocking form (MPI_Iallreduce, ...) completed by polling
 * MPI_Test against a deadline, so a rank that died or stopped answering turns into VR_ERR_COMM
 * after the comm's timeout instead of a wait without end. The poll spins for a moment (a
 * collective between busy ranks completes in microseconds) and then sleeps between tests so a
 * waiting rank leaves its core to the others. Large reductions go in pieces of at most
 * VR_MPI_PIECE elements: the counts stay within MPI's int, and the deadline applies per piece.
 *
 * Sums that overlap other work (sum_start) are MPI_Iallreduce requests kept until sum_finish;
 * sum_progress tests them all, which is where MPI moves them along. */
#include "vr_config.h"

#if VR_HAVE_MPI

#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vicreg/comm.h"

#define VR_MPI_PIECE ((size_t)1 << 26) /* 64 Mi elements */

/* the polling: spin this long, then sleep this long between tests */
#define SPIN_SECONDS 0.002
#define SLEEP_NS 50000L

/* the requests of the sums started and not yet finished */
typedef struct mpi_ctx {
    MPI_Request *pending;
    int npending, cap;
} mpi_ctx;

static MPI_Datatype mpi_type(vr_comm_type t)
{
    switch (t) {
    case VR_COMM_F32: return MPI_FLOAT;
    case VR_COMM_F64: return MPI_DOUBLE;
    case VR_COMM_I64: return MPI_INT64_T;
    case VR_COMM_U8: return MPI_UINT8_T;
    }
    return MPI_BYTE;
}

static vr_status mpi_error(const vr_comm *c, const char *what, int err)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", err);
    return vr_fail(VR_ERR_COMM, "comm", "rank %d of %d: %s failed: %s", c->rank, c->size, what, msg);
}

/* Completes request q of operation `what` within the comm's timeout. */
static vr_status comm_wait(vr_comm *c, MPI_Request *q, const char *what)
{
    double t0 = MPI_Wtime();
    for (;;) {
        int done = 0;
        int err = MPI_Test(q, &done, MPI_STATUS_IGNORE);
        if (err != MPI_SUCCESS) return mpi_error(c, what, err);
        if (done) return VR_OK;
        double waited = MPI_Wtime() - t0;
        if (c->interrupt && *c->interrupt)
            return vr_fail(VR_ERR_COMM, "comm",
                           "rank %d of %d: interrupted by a signal while waiting %.1f s for the "
                           "other ranks in %s", c->rank, c->size, waited, what);
        if (c->timeout_s > 0 && waited > c->timeout_s)
            return vr_fail(VR_ERR_COMM, "comm",
                           "rank %d of %d: %s did not complete within %g s: another rank has "
                           "died or hangs", c->rank, c->size, what, c->timeout_s);
        if (waited > SPIN_SECONDS) {
            struct timespec ts = {0, SLEEP_NS};
            nanosleep(&ts, NULL);
        }
    }
}

static vr_status mpi_allreduce(vr_comm *c, void *buf, size_t count, vr_comm_type t)
{
    size_t es = vr_comm_type_size(t);
    for (size_t o = 0; o < count; o += VR_MPI_PIECE) {
        int n = (int)(count - o < VR_MPI_PIECE ? count - o : VR_MPI_PIECE);
        MPI_Request q;
        int err = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + o * es, n, mpi_type(t), MPI_SUM,
                                 MPI_COMM_WORLD, &q);
        if (err != MPI_SUCCESS) return mpi_error(c, "all-reduce", err);
        VR_TRY(comm_wait(c, &q, "an all-reduce"));
    }
    return VR_OK;
}

static vr_status mpi_allgather(vr_comm *c, const void *send, size_t count, vr_comm_type t,
                               void *recv)
{
    if (count > (size_t)INT32_MAX)
        return vr_fail(VR_ERR_ARG, "comm", "all-gather of %zu elements per rank: at most %d",
                       count, INT32_MAX);
    MPI_Request q;
    int err = MPI_Iallgather(send, (int)count, mpi_type(t), recv, (int)count, mpi_type(t),
                             MPI_COMM_WORLD, &q);
    if (err != MPI_SUCCESS) return mpi_error(c, "all-gather", err);
    return comm_wait(c, &q, "an all-gather");
}

static vr_status mpi_broadcast(vr_comm *c, void *buf, size_t count, vr_comm_type t, int root)
{
    size_t es = vr_comm_type_size(t);
    for (size_t o = 0; o < count; o += VR_MPI_PIECE) {
        int n = (int)(count - o < VR_MPI_PIECE ? count - o : VR_MPI_PIECE);
        MPI_Request q;
        int err = MPI_Ibcast((char *)buf + o * es, n, mpi_type(t), root, MPI_COMM_WORLD, &q);
        if (err != MPI_SUCCESS) return mpi_error(c, "broadcast", err);
        VR_TRY(comm_wait(c, &q, "a broadcast"));
    }
    return VR_OK;
}

static vr_status mpi_barrier(vr_comm *c)
{
    MPI_Request q;
    int err = MPI_Ibarrier(MPI_COMM_WORLD, &q);
    if (err != MPI_SUCCESS) return mpi_error(c, "barrier", err);
    return comm_wait(c, &q, "a barrier");
}

static vr_status mpi_sum_start(vr_comm *c, vr_backend *be, float *buf, size_t count)
{
    (void)be;
    mpi_ctx *x = c->ctx;
    for (size_t o = 0; o < count; o += VR_MPI_PIECE) {
        int n = (int)(count - o < VR_MPI_PIECE ? count - o : VR_MPI_PIECE);
        if (x->npending == x->cap) {
            int cap = x->cap ? 2 * x->cap : 64;
            MPI_Request *grown = realloc(x->pending, (size_t)cap * sizeof *grown);
            if (!grown) return vr_fail(VR_ERR_NOMEM, "comm", "cannot keep %d pending sums", cap);
            x->pending = grown;
            x->cap = cap;
        }
        int err = MPI_Iallreduce(MPI_IN_PLACE, buf + o, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                 &x->pending[x->npending]);
        if (err != MPI_SUCCESS) return mpi_error(c, "all-reduce", err);
        x->npending++;
    }
    return VR_OK;
}

static vr_status mpi_sum_progress(vr_comm *c)
{
    mpi_ctx *x = c->ctx;
    if (!x->npending) return VR_OK;
    int done = 0;
    int err = MPI_Testall(x->npending, x->pending, &done, MPI_STATUSES_IGNORE);
    if (err != MPI_SUCCESS) return mpi_error(c, "all-reduce", err);
    if (done) x->npending = 0;
    return VR_OK;
}

static vr_status mpi_sum_finish(vr_comm *c, vr_backend *be)
{
    (void)be;
    mpi_ctx *x = c->ctx;
    for (int i = 0; i < x->npending; i++) VR_TRY(comm_wait(c, &x->pending[i], "an all-reduce"));
    x->npending = 0;
    return VR_OK;
}

static void mpi_abort(vr_comm *c, int code)
{
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

static void mpi_destroy(vr_comm *c)
{
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
    mpi_ctx *x = c->ctx;
    free(x->pending);
    free(x);
    free(c);
}

vr_status vr_comm_mpi_create(vr_comm **out)
{
    *out = NULL;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return vr_fail(VR_ERR_COMM, "comm", "MPI_Init failed");
    }
    /* errors come back as codes, to be reported with the rank, not as an abort inside MPI */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    vr_comm *c = calloc(1, sizeof *c);
    mpi_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c);
        free(x);
        return vr_fail(VR_ERR_NOMEM, "comm", "out of memory");
    }
    c->ctx = x;
    c->name = "mpi";
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->allreduce = mpi_allreduce;
    c->allgather = mpi_allgather;
    c->broadcast = mpi_broadcast;
    c->barrier = mpi_barrier;
    c->sum_start = mpi_sum_start;
    c->sum_progress = mpi_sum_progress;
    c->sum_finish = mpi_sum_finish;
    c->abort = mpi_abort;
    c->destroy = mpi_destroy;
    *out = c;
    return VR_OK;
}

#endif
