/* The VICReg training step over one shared branch or two non-shared ones. */
#include "vicreg/trainer.h"

#include <math.h>
#include <string.h>
#include <time.h>

/* the gradient sum's buckets: 25 MB, as PyTorch's DDP's */
#define VR_BUCKET_FLOATS ((size_t)25 << 18)

static int embed_dim(const vr_branch *b)
{
    return b->has_expander ? b->exp.dims[b->exp.nlayers] : b->enc.out_dim;
}

vr_status vr_trainer_create(vr_trainer *t, vr_model *m, const vr_optim_config *opt, int n,
                            const int *h, const int *w)
{
    memset(t, 0, sizeof *t);
    t->model = m;
    t->n = n;
    t->shared = m->nbranches == 1;
    t->coeffs = (vr_vicreg_coeffs){25.0f, 25.0f, 1.0f};
    if (n < 2) return vr_fail(VR_ERR_ARG, "trainer", "batch of %d pairs: VICReg needs at least 2", n);
    if (!t->shared && embed_dim(&m->branch[0]) != embed_dim(&m->branch[1]))
        return vr_fail(VR_ERR_SHAPE, "trainer", "branch embeddings differ: %d vs %d",
                       embed_dim(&m->branch[0]), embed_dim(&m->branch[1]));
    int rows[VR_MAX_BRANCHES] = {t->shared ? 2 * n : n, n};
    VR_TRY(vr_model_plan(m, rows, h, w));
    vr_backend *be = m->be;
    VR_TRY(be->alloc(be, (size_t)2 * n * embed_dim(&m->branch[0]) * sizeof(float), &t->dz));
    for (int b = 0; b < m->nbranches; b++)
        VR_TRY(be->alloc(be, (size_t)rows[b] * m->branch[b].enc.out_dim * sizeof(float), &t->drepr[b]));
    return vr_optim_create(&t->optim, opt, be, &m->params);
}

void vr_trainer_free(vr_trainer *t)
{
    vr_backend *be = t->model ? t->model->be : NULL;
    if (be) {
        if (t->zg) be->free(be, t->zg);
        if (t->dzg) be->free(be, t->dzg);
        be->free(be, t->dz);
        for (int b = 0; b < VR_MAX_BRANCHES; b++)
            if (t->drepr[b]) be->free(be, t->drepr[b]);
        vr_optim_free(&t->optim);
    }
    memset(t, 0, sizeof *t);
}

static vr_status sync_gather(void *ctx, const double *mine, size_t count, double *all)
{
    return vr_comm_allgather(ctx, mine, count, VR_COMM_F64, all);
}

static vr_status sync_reduce(void *ctx, double *sums, size_t count)
{
    return vr_comm_allreduce(ctx, sums, count, VR_COMM_F64);
}

vr_status vr_trainer_distribute(vr_trainer *t, vr_comm *comm, int gather, int sync_bn)
{
    vr_backend *be = t->model->be;
    t->comm = comm;
    t->gather = gather;
    t->sync_bn = sync_bn && comm->size > 1;
    t->bn_sync = (vr_bn_sync){.ctx = comm, .ranks = comm->size, .gather = sync_gather,
                              .reduce = sync_reduce};
    t->bucket = VR_BUCKET_FLOATS;
    vr_model *m = t->model;
    for (int b = 0; b < m->nbranches; b++) {
        t->lo[b] = m->branch[b].enc.stem.w; /* a branch's first parameter */
        t->hi[b] = b + 1 < m->nbranches ? m->branch[b + 1].enc.stem.w : m->params.total;
    }
    if (gather && comm->size > 1) {
        size_t all = (size_t)2 * comm->size * t->n * embed_dim(&t->model->branch[0]);
        VR_TRY(be->alloc(be, all * sizeof(float), &t->zg));
        VR_TRY(be->alloc(be, all * sizeof(float), &t->dzg));
    }
    return VR_OK;
}

vr_status vr_trainer_broadcast(vr_trainer *t)
{
    vr_comm *c = t->comm;
    if (!c || c->size == 1) return VR_OK;
    vr_model *m = t->model;
    vr_backend *be = m->be;
    VR_TRY(vr_comm_broadcast_dev(c, be, m->p, m->params.total, 0));
    if (m->buffers.total) VR_TRY(vr_comm_broadcast_dev(c, be, m->buf, m->buffers.total, 0));
    for (int i = 0; i < t->optim.nstate; i++)
        VR_TRY(vr_comm_broadcast_dev(c, be, t->optim.state[i], m->params.total, 0));
    if (m->counts.count)
        VR_TRY(vr_comm_broadcast(c, m->counts.values, (size_t)m->counts.count, VR_COMM_I64, 0));
    int64_t steps[2] = {t->step, t->optim.step};
    VR_TRY(vr_comm_broadcast(c, steps, 2, VR_COMM_I64, 0));
    t->step = (long)steps[0];
    t->optim.step = (long)steps[1];
    return VR_OK;
}

static const float *branch_output(const vr_branch *b, const vr_ctx *c)
{
    return b->has_expander ? vr_expander_output(&b->exp, c) : c->ws + b->enc.repr;
}

static vr_status branch_forward(vr_branch *b, const vr_ctx *c, const float *x)
{
    VR_TRY(vr_resnet_forward(&b->enc, c, x));
    if (b->has_expander) VR_TRY(vr_expander_forward(&b->exp, c, c->ws + b->enc.repr));
    return VR_OK;
}

static vr_status branch_backward(vr_branch *b, const vr_ctx *c, const float *x, const float *dz,
                                 float *drepr)
{
    const float *dr = dz;
    if (b->has_expander) {
        VR_TRY(vr_expander_backward(&b->exp, c, c->ws + b->enc.repr, dz, drepr));
        dr = drepr;
    }
    return vr_resnet_backward(&b->enc, c, x, dr, NULL);
}

void vr_trainer_embeddings(const vr_trainer *t, const float **z1, const float **z2)
{
    const vr_model *m = t->model;
    int d = embed_dim(&m->branch[0]);
    vr_ctx c = vr_model_ctx(m, t->n, 1, 1);
    *z1 = branch_output(&m->branch[0], &c);
    *z2 = t->shared ? *z1 + (size_t)t->n * d : branch_output(&m->branch[1], &c);
}

static const char *bad_term(const vr_vicreg_terms *r)
{
    if (!isfinite(r->invariance)) return "invariance";
    if (!isfinite(r->variance)) return "variance";
    if (!isfinite(r->covariance)) return "covariance";
    return isfinite(r->loss) ? NULL : "loss";
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* dst (count) = src, with the backend's elementwise ops */
static vr_status copy_dev(vr_backend *be, size_t count, const float *src, float *dst)
{
    VR_TRY(be->fill(be, count, 0.0f, dst));
    return be->accumulate(be, count, src, dst);
}

/* The loss of a step and d loss / d z of this rank's rows into dz1, dz2 (N, D).
 *
 * Gather: the loss over the gathered (ranks*N, D) embeddings is the single-process loss of the
 * global batch; its gradient with respect to this rank's rows is what the reference's gather
 * backward yields (the sum over the ranks of identical gradients, ranks times this one) after
 * the gradient average divides by the ranks, so the rows are taken as they are and the
 * gradient all-reduce only sums. Without the gather each rank's loss is scaled by 1/ranks so
 * that the summed gradients are the average, and the terms are averaged for the report. */
static vr_status loss(vr_trainer *t, const float *z1, const float *z2, float *dz1, float *dz2,
                      vr_vicreg_terms *terms)
{
    vr_backend *be = t->model->be;
    vr_comm *c = t->comm;
    int n = t->n, d = embed_dim(&t->model->branch[0]);
    if (!c || c->size == 1) return be->vicreg_loss(be, n, d, z1, z2, t->coeffs, terms, dz1, dz2);
    const size_t mine = (size_t)n * d, all = mine * c->size;
    if (t->gather) {
        float *g1 = t->zg, *g2 = t->zg + all, *dg1 = t->dzg, *dg2 = t->dzg + all;
        VR_TRY(vr_comm_allgather_dev(c, be, z1, mine, g1));
        VR_TRY(vr_comm_allgather_dev(c, be, z2, mine, g2));
        VR_TRY(be->vicreg_loss(be, n * c->size, d, g1, g2, t->coeffs, terms, dg1, dg2));
        VR_TRY(copy_dev(be, mine, dg1 + (size_t)c->rank * mine, dz1));
        return copy_dev(be, mine, dg2 + (size_t)c->rank * mine, dz2);
    }
    const float w = 1.0f / (float)c->size;
    vr_vicreg_coeffs k = {t->coeffs.sim * w, t->coeffs.std * w, t->coeffs.cov * w};
    VR_TRY(be->vicreg_loss(be, n, d, z1, z2, k, terms, dz1, dz2));
    double v[3] = {terms->invariance, terms->variance, terms->covariance};
    VR_TRY(vr_comm_allreduce(c, v, 3, VR_COMM_F64));
    terms->invariance = v[0] / c->size;
    terms->variance = v[1] / c->size;
    terms->covariance = v[2] / c->size;
    terms->loss = (double)t->coeffs.sim * terms->invariance +
                  (double)t->coeffs.std * terms->variance +
                  (double)t->coeffs.cov * terms->covariance;
    return VR_OK;
}

/* Starts the sums of branch b's buckets that lie wholly at offsets >= from, the last bucket
 * first; `during` counts them as started while the backward still runs. */
static vr_status start_buckets(vr_trainer *t, int b, size_t from, int during)
{
    vr_model *m = t->model;
    while (t->next[b] > t->lo[b]) {
        size_t end = t->next[b];
        size_t start = end - t->lo[b] > t->bucket ? end - t->bucket : t->lo[b];
        if (start < from) break;
        VR_TRY(vr_comm_sum_start(t->comm, m->be, m->g + start, end - start));
        t->next[b] = start;
        t->buckets++;
        t->buckets_overlapped += during;
    }
    return vr_comm_sum_progress(t->comm, m->be);
}

/* vr_ctx's grads_ready during a data-parallel backward of branch t->current */
static vr_status grads_ready(void *ctx, size_t from)
{
    vr_trainer *t = ctx;
    int b = t->current, last = b == t->model->nbranches - 1 && from <= t->lo[b];
    return start_buckets(t, b, from, !last);
}

/* The backward's context for branch b: n rows in groups, SyncBN, and the gradient sum's
 * buckets started during the backward where the comm's sums overlap it (else all after it:
 * a sum staged through the host would hold up the device at every bucket). */
static vr_ctx backward_ctx(vr_trainer *t, int b, int n, int groups, const vr_bn_sync *sync)
{
    vr_ctx c = vr_model_ctx(t->model, n, groups, 1);
    c.sync = sync;
    if (t->comm && vr_comm_sum_overlaps(t->comm, t->model->be)) {
        t->current = b;
        c.grads_ready = grads_ready;
        c.grads_ctx = t;
    }
    return c;
}

/* After the backward: the buckets not yet started (all of them where the sums do not overlap,
 * none where every module reported), then the wait for all of them (comm_seconds). */
static vr_status finish_sums(vr_trainer *t)
{
    double t0 = seconds();
    for (int b = 0; b < t->model->nbranches; b++) VR_TRY(start_buckets(t, b, t->lo[b], 0));
    VR_TRY(vr_comm_sum_finish(t->comm, t->model->be));
    t->comm_seconds = seconds() - t0;
    return VR_OK;
}

vr_status vr_trainer_step(vr_trainer *t, const float *const *x, float lr, vr_vicreg_terms *terms)
{
    vr_model *m = t->model;
    int n = t->n, d = embed_dim(&m->branch[0]);
    const vr_bn_sync *sync = t->sync_bn ? &t->bn_sync : NULL;
    VR_TRY(vr_model_zero_grad(m));
    const float *z1, *z2;
    if (t->shared) {
        vr_ctx c = vr_model_ctx(m, 2 * n, 2, 1);
        c.sync = sync;
        VR_TRY(branch_forward(&m->branch[0], &c, x[0]));
    } else {
        for (int b = 0; b < 2; b++) {
            vr_ctx c = vr_model_ctx(m, n, 1, 1);
            c.sync = sync;
            VR_TRY(branch_forward(&m->branch[b], &c, x[b]));
        }
    }
    vr_trainer_embeddings(t, &z1, &z2);
    float *dz1 = t->dz, *dz2 = t->dz + (size_t)n * d;
    VR_TRY(loss(t, z1, z2, dz1, dz2, terms));
    const char *bad = bad_term(terms);
    if (bad)
        return vr_fail(VR_ERR_NUMERIC, "train",
                       "step %ld: the %s term is not finite (invariance %g, variance %g, "
                       "covariance %g); the step's update was not applied",
                       t->step + 1, bad, terms->invariance, terms->variance, terms->covariance);
    const int parallel = t->comm && t->comm->size > 1;
    if (parallel) {
        for (int b = 0; b < m->nbranches; b++) t->next[b] = t->hi[b];
        t->buckets = t->buckets_overlapped = 0;
    }
    if (t->shared) {
        vr_ctx c = backward_ctx(t, 0, 2 * n, 2, sync);
        VR_TRY(branch_backward(&m->branch[0], &c, x[0], t->dz, t->drepr[0]));
    } else {
        for (int b = 0; b < 2; b++) {
            vr_ctx c = backward_ctx(t, b, n, 1, sync);
            VR_TRY(branch_backward(&m->branch[b], &c, x[b], b ? dz2 : dz1, t->drepr[b]));
        }
    }
    if (parallel) VR_TRY(finish_sums(t));
    VR_TRY(vr_optim_step(&t->optim, m->p, m->g, lr));
    t->step++;
    return VR_OK;
}
