/* The VICReg training step over one shared branch or two non-shared ones. */
#include "vicreg/trainer.h"

#include <math.h>
#include <string.h>

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
        be->free(be, t->dz);
        for (int b = 0; b < VR_MAX_BRANCHES; b++)
            if (t->drepr[b]) be->free(be, t->drepr[b]);
        vr_optim_free(&t->optim);
    }
    memset(t, 0, sizeof *t);
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

vr_status vr_trainer_step(vr_trainer *t, const float *const *x, float lr, vr_vicreg_terms *terms)
{
    vr_model *m = t->model;
    vr_backend *be = m->be;
    int n = t->n, d = embed_dim(&m->branch[0]);
    VR_TRY(vr_model_zero_grad(m));
    const float *z1, *z2;
    if (t->shared) {
        vr_ctx c = vr_model_ctx(m, 2 * n, 2, 1);
        VR_TRY(branch_forward(&m->branch[0], &c, x[0]));
    } else {
        for (int b = 0; b < 2; b++) {
            vr_ctx c = vr_model_ctx(m, n, 1, 1);
            VR_TRY(branch_forward(&m->branch[b], &c, x[b]));
        }
    }
    vr_trainer_embeddings(t, &z1, &z2);
    float *dz1 = t->dz, *dz2 = t->dz + (size_t)n * d;
    VR_TRY(be->vicreg_loss(be, n, d, z1, z2, t->coeffs, terms, dz1, dz2));
    const char *bad = bad_term(terms);
    if (bad)
        return vr_fail(VR_ERR_NUMERIC, "train",
                       "step %ld: the %s term is not finite (invariance %g, variance %g, "
                       "covariance %g); parameters left as they were before the step",
                       t->step + 1, bad, terms->invariance, terms->variance, terms->covariance);
    if (t->shared) {
        vr_ctx c = vr_model_ctx(m, 2 * n, 2, 1);
        VR_TRY(branch_backward(&m->branch[0], &c, x[0], t->dz, t->drepr[0]));
    } else {
        for (int b = 0; b < 2; b++) {
            vr_ctx c = vr_model_ctx(m, n, 1, 1);
            VR_TRY(branch_backward(&m->branch[b], &c, x[b], b ? dz2 : dz1, t->drepr[b]));
        }
    }
    VR_TRY(vr_optim_step(&t->optim, m->p, m->g, lr));
    t->step++;
    return VR_OK;
}
