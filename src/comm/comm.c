/* The comm table's dispatch, the single-process comm, and device collectives staged through
 * the host for backends whose comm has no device path. */
#include "vicreg/comm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vr_config.h"
#include "vicreg/tensor.h"

size_t vr_comm_type_size(vr_comm_type t)
{
    switch (t) {
    case VR_COMM_F32: return 4;
    case VR_COMM_F64: return 8;
    case VR_COMM_I64: return 8;
    case VR_COMM_U8: return 1;
    }
    return 1;
}

int vr_comm_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

/* -- single process ------------------------------------------------------------------------ */

static vr_status single_allreduce(vr_comm *c, void *buf, size_t count, vr_comm_type t)
{
    (void)c, (void)buf, (void)count, (void)t;
    return VR_OK;
}

static vr_status single_allgather(vr_comm *c, const void *send, size_t count, vr_comm_type t,
                                  void *recv)
{
    (void)c;
    if (recv != send) memmove(recv, send, count * vr_comm_type_size(t));
    return VR_OK;
}

static vr_status single_broadcast(vr_comm *c, void *buf, size_t count, vr_comm_type t, int root)
{
    (void)c, (void)buf, (void)count, (void)t, (void)root;
    return VR_OK;
}

static vr_status single_barrier(vr_comm *c)
{
    (void)c;
    return VR_OK;
}

static void single_abort(vr_comm *c, int code)
{
    (void)c;
    exit(code);
}

static void single_destroy(vr_comm *c) { free(c); }

static vr_status single_create(vr_comm **out)
{
    vr_comm *c = calloc(1, sizeof *c);
    if (!c) return vr_fail(VR_ERR_NOMEM, "comm", "out of memory");
    c->name = "single";
    c->rank = 0;
    c->size = 1;
    c->allreduce = single_allreduce;
    c->allgather = single_allgather;
    c->broadcast = single_broadcast;
    c->barrier = single_barrier;
    c->abort = single_abort;
    c->destroy = single_destroy;
    *out = c;
    return VR_OK;
}

vr_status vr_comm_create(const char *kind, vr_backend *be, vr_comm **out)
{
    *out = NULL;
    if (!kind || !strcmp(kind, "auto")) kind = vr_comm_launched() ? "mpi" : "single";
    if (!strcmp(kind, "single")) return single_create(out);
    if (!strcmp(kind, "mpi")) return vr_comm_mpi_create(out);
    if (!strcmp(kind, "nccl")) return vr_comm_nccl_create(be, out);
    return vr_fail(VR_ERR_ARG, "comm", "unknown comm '%s' (single, mpi, nccl or auto)", kind);
}

void vr_comm_destroy(vr_comm *c)
{
    if (!c) return;
    vr_free(c->stage);
    c->stage = NULL;
    c->destroy(c);
}

void vr_comm_abort(vr_comm *c, int code) { c->abort(c, code); }

vr_status vr_comm_allreduce(vr_comm *c, void *buf, size_t count, vr_comm_type t)
{
    return c->size == 1 ? VR_OK : c->allreduce(c, buf, count, t);
}

vr_status vr_comm_allgather(vr_comm *c, const void *send, size_t count, vr_comm_type t, void *recv)
{
    return c->allgather(c, send, count, t, recv);
}

vr_status vr_comm_broadcast(vr_comm *c, void *buf, size_t count, vr_comm_type t, int root)
{
    return c->size == 1 ? VR_OK : c->broadcast(c, buf, count, t, root);
}

vr_status vr_comm_barrier(vr_comm *c) { return c->size == 1 ? VR_OK : c->barrier(c); }

/* -- device memory ------------------------------------------------------------------------- */

static vr_status stage(vr_comm *c, size_t count)
{
    if (c->stage_count >= count) return VR_OK;
    vr_free(c->stage);
    c->stage_count = 0;
    if (!(c->stage = vr_alloc(count * sizeof(float))))
        return vr_fail(VR_ERR_NOMEM, "comm", "no host memory to stage %zu floats", count);
    c->stage_count = count;
    return VR_OK;
}

vr_status vr_comm_allreduce_dev(vr_comm *c, vr_backend *be, float *buf, size_t count)
{
    if (c->size == 1) return VR_OK;
    if (c->dev_allreduce) return c->dev_allreduce(c, be, buf, count);
    if (be->device == VR_DEVICE_CPU) return c->allreduce(c, buf, count, VR_COMM_F32);
    VR_TRY(stage(c, count));
    VR_TRY(be->download(be, c->stage, buf, count));
    VR_TRY(c->allreduce(c, c->stage, count, VR_COMM_F32));
    return be->upload(be, buf, c->stage, count);
}

vr_status vr_comm_allgather_dev(vr_comm *c, vr_backend *be, const float *send, size_t count,
                                float *recv)
{
    if (c->dev_allgather) return c->dev_allgather(c, be, send, count, recv);
    if (be->device == VR_DEVICE_CPU) return c->allgather(c, send, count, VR_COMM_F32, recv);
    size_t all = count * (size_t)c->size;
    VR_TRY(stage(c, all + count));
    float *mine = c->stage + all;
    VR_TRY(be->download(be, mine, send, count));
    VR_TRY(c->allgather(c, mine, count, VR_COMM_F32, c->stage));
    return be->upload(be, recv, c->stage, all);
}

vr_status vr_comm_broadcast_dev(vr_comm *c, vr_backend *be, float *buf, size_t count, int root)
{
    if (c->size == 1) return VR_OK;
    if (c->dev_broadcast) return c->dev_broadcast(c, be, buf, count, root);
    if (be->device == VR_DEVICE_CPU) return c->broadcast(c, buf, count, VR_COMM_F32, root);
    VR_TRY(stage(c, count));
    if (c->rank == root) VR_TRY(be->download(be, c->stage, buf, count));
    VR_TRY(c->broadcast(c, c->stage, count, VR_COMM_F32, root));
    return c->rank == root ? VR_OK : be->upload(be, buf, c->stage, count);
}

/* NCCL's overlapping sums take device memory, MPI's host memory (a CPU backend's). */
int vr_comm_sum_overlaps(const vr_comm *c, const vr_backend *be)
{
    return c->size > 1 && c->sum_start && (c->dev_allreduce || be->device == VR_DEVICE_CPU);
}

vr_status vr_comm_sum_start(vr_comm *c, vr_backend *be, float *buf, size_t count)
{
    if (c->size == 1) return VR_OK;
    if (!vr_comm_sum_overlaps(c, be)) return vr_comm_allreduce_dev(c, be, buf, count);
    return c->sum_start(c, be, buf, count);
}

vr_status vr_comm_sum_progress(vr_comm *c, vr_backend *be)
{
    return vr_comm_sum_overlaps(c, be) && c->sum_progress ? c->sum_progress(c) : VR_OK;
}

vr_status vr_comm_sum_finish(vr_comm *c, vr_backend *be)
{
    return vr_comm_sum_overlaps(c, be) ? c->sum_finish(c, be) : VR_OK;
}

#if !VR_HAVE_MPI
vr_status vr_comm_mpi_create(vr_comm **out)
{
    *out = NULL;
    return vr_fail(VR_ERR_UNSUPPORTED, "comm",
                   "this build has no MPI (install libopenmpi-dev and reconfigure)");
}
#endif
