/* Model assembly: branches over one parameter block, one gradient block, one workspace. */
#include "vicreg/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vr_branch_config_image(vr_branch_config *c, int depth, const char *expander_tail)
{
    memset(c, 0, sizeof *c);
    vr_resnet_config_default(&c->encoder, depth, 2, 3);
    strcpy(c->encoder_prefix, "backbone.");
    strcpy(c->expander_prefix, "projector.");
    int out = c->encoder.widths[3] * (depth >= 50 ? 4 : 1);
    if (expander_tail && *expander_tail)
        snprintf(c->expander, sizeof c->expander, "%d-%s", out, expander_tail);
}

/* The audio recipe's waveform encoder: a 1-D ResNet-18 over raw samples, stem Conv1d(1->48,
 * kernel 80, stride 4, padding 38) + BN + ReLU + MaxPool1d(4), stages 48/96/192/384 -> 384. */
void vr_branch_config_wave(vr_branch_config *c, const char *expander_tail)
{
    memset(c, 0, sizeof *c);
    c->encoder = (vr_resnet_config){.depth = 18, .rank = 1, .in_channels = 1,
                                    .widths = {48, 96, 192, 384}, .stem_kernel = 80,
                                    .stem_stride = 4, .stem_pad = 38, .pool_kernel = 4,
                                    .pool_stride = 4, .pool_pad = 0, .zero_init_residual = 1};
    strcpy(c->encoder_prefix, "wave.backbone.");
    strcpy(c->expander_prefix, "wave.projector.");
    if (expander_tail && *expander_tail) snprintf(c->expander, sizeof c->expander, "384-%s", expander_tail);
}

/* The audio recipe's spectrogram encoder: torchvision's ResNet-18 with a 1-channel stem -> 512. */
void vr_branch_config_spec(vr_branch_config *c, const char *expander_tail)
{
    memset(c, 0, sizeof *c);
    vr_resnet_config_default(&c->encoder, 18, 2, 1);
    strcpy(c->encoder_prefix, "spec.backbone.");
    strcpy(c->expander_prefix, "spec.projector.");
    if (expander_tail && *expander_tail) snprintf(c->expander, sizeof c->expander, "512-%s", expander_tail);
}

vr_status vr_model_create(vr_model *m, vr_backend *be, int nbranches, const vr_branch_config *cfg)
{
    VR_TRY(vr_model_declare(m, be, nbranches, cfg));
    VR_TRY(be->alloc(be, m->params.total * sizeof(float), &m->p));
    VR_TRY(be->alloc(be, m->params.total * sizeof(float), &m->g));
    VR_TRY(be->alloc(be, (m->buffers.total ? m->buffers.total : 1) * sizeof(float), &m->buf));
    return VR_OK;
}

vr_status vr_model_declare(vr_model *m, vr_backend *be, int nbranches, const vr_branch_config *cfg)
{
    memset(m, 0, sizeof *m);
    if (nbranches < 1 || nbranches > VR_MAX_BRANCHES)
        return vr_fail(VR_ERR_ARG, "model", "%d branches (1 or 2 supported)", nbranches);
    m->be = be;
    m->nbranches = nbranches;
    for (int b = 0; b < nbranches; b++) {
        vr_branch *br = &m->branch[b];
        m->cfg[b] = cfg[b];
        VR_TRY(vr_resnet_declare(&br->enc, &cfg[b].encoder, cfg[b].encoder_prefix, &m->params,
                                 &m->buffers, &m->counts));
        if (cfg[b].expander[0]) {
            VR_TRY(vr_expander_declare(&br->exp, cfg[b].expander, cfg[b].expander_prefix,
                                       &m->params, &m->buffers, &m->counts));
            if (br->exp.dims[0] != br->enc.out_dim)
                return vr_fail(VR_ERR_SHAPE, "model",
                               "expander '%s' starts at %d but the encoder gives %d features",
                               cfg[b].expander, br->exp.dims[0], br->enc.out_dim);
            br->has_expander = 1;
        }
    }
    return VR_OK;
}

vr_status vr_model_init(vr_model *m, uint64_t seed)
{
    vr_rng rng;
    float *p = vr_alloc(m->params.total * sizeof(float));
    float *buf = vr_alloc((m->buffers.total + 1) * sizeof(float));
    if (!p || !buf) {
        vr_free(p);
        vr_free(buf);
        return vr_fail(VR_ERR_NOMEM, "model", "cannot allocate %zu parameters", m->params.total);
    }
    for (int b = 0; b < m->nbranches; b++) {
        vr_rng_seed_stream(&rng, seed, (uint64_t)b);
        vr_resnet_init(&m->branch[b].enc, p, buf, &rng);
        if (m->branch[b].has_expander) vr_expander_init(&m->branch[b].exp, p, buf, &rng);
    }
    vr_status s = m->be->upload(m->be, m->p, p, m->params.total);
    if (s == VR_OK) s = m->be->upload(m->be, m->buf, buf, m->buffers.total);
    for (int i = 0; i < m->counts.count; i++) m->counts.values[i] = 0;
    vr_free(p);
    vr_free(buf);
    return s;
}

vr_status vr_model_plan(vr_model *m, const int *n, const int *h, const int *w)
{
    VR_TRY(vr_model_plan_size(m, n, h, w));
    if (m->ws) m->be->free(m->be, m->ws);
    m->ws = NULL;
    return m->be->alloc(m->be, m->ws_floats * sizeof(float), &m->ws);
}

vr_status vr_model_plan_size(vr_model *m, const int *n, const int *h, const int *w)
{
    size_t cursor = 0;
    for (int b = 0; b < m->nbranches; b++) {
        vr_branch *br = &m->branch[b];
        if (n[b] < 1) return vr_fail(VR_ERR_ARG, "model", "batch %d", n[b]);
        VR_TRY(vr_resnet_plan(&br->enc, m->be, n[b], h[b], w[b], &cursor));
        if (br->has_expander) VR_TRY(vr_expander_plan(&br->exp, n[b], &cursor));
        br->plan_n = n[b];
        br->plan_h = h[b];
        br->plan_w = w[b];
    }
    m->ws_floats = cursor;
    return VR_OK;
}

void vr_model_free(vr_model *m)
{
    for (int b = 0; b < m->nbranches; b++) vr_resnet_free(&m->branch[b].enc);
    if (m->be) {
        m->be->free(m->be, m->p);
        m->be->free(m->be, m->g);
        m->be->free(m->be, m->buf);
        m->be->free(m->be, m->ws);
    }
    vr_paramset_free(&m->params);
    vr_paramset_free(&m->buffers);
    vr_counters_free(&m->counts);
    memset(m, 0, sizeof *m);
}

vr_ctx vr_model_ctx(const vr_model *m, int n, int groups, int train)
{
    return (vr_ctx){.be = m->be, .p = m->p, .g = m->g, .buf = m->buf,
                    .counts = m->counts.values, .ws = m->ws, .n = n, .groups = groups,
                    .train = train};
}

vr_status vr_model_zero_grad(vr_model *m)
{
    return m->be->fill(m->be, m->params.total, 0.0f, m->g);
}

size_t vr_model_bytes(const vr_model *m)
{
    return (2 * m->params.total + m->buffers.total + m->ws_floats) * sizeof(float);
}
