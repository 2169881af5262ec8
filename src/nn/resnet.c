/* The ResNet family (torchvision topology and parameter names) over 1-D or 2-D data. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convbn.h"

static const int stage_blocks[3][4] = {{2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}};

static int depth_index(int depth)
{
    return depth == 18 ? 0 : depth == 34 ? 1 : depth == 50 ? 2 : -1;
}

void vr_resnet_config_default(vr_resnet_config *c, int depth, int rank, int in_channels)
{
    *c = (vr_resnet_config){.depth = depth, .rank = rank, .in_channels = in_channels,
                            .widths = {64, 128, 256, 512}, .stem_kernel = 7, .stem_stride = 2,
                            .stem_pad = 3, .pool_kernel = 3, .pool_stride = 2, .pool_pad = 1,
                            .zero_init_residual = 1};
}

vr_status vr_resnet_declare(vr_resnet *r, const vr_resnet_config *cfg, const char *prefix,
                            vr_paramset *params, vr_paramset *buffers, vr_counters *counts)
{
    memset(r, 0, sizeof *r);
    int di = depth_index(cfg->depth);
    if (di < 0) return vr_fail(VR_ERR_ARG, "resnet", "depth %d not one of 18, 34, 50", cfg->depth);
    if (cfg->rank != 1 && cfg->rank != 2)
        return vr_fail(VR_ERR_ARG, "resnet", "spatial rank %d not 1 or 2", cfg->rank);
    for (int i = 0; i < 4; i++)
        if (cfg->widths[i] < 1) return vr_fail(VR_ERR_ARG, "resnet", "stage %d width %d", i + 1, cfg->widths[i]);
    if (cfg->in_channels < 1 || cfg->stem_kernel < 1 || cfg->stem_stride < 1 || cfg->stem_pad < 0)
        return vr_fail(VR_ERR_ARG, "resnet", "invalid stem (in %d, kernel %d, stride %d, pad %d)",
                       cfg->in_channels, cfg->stem_kernel, cfg->stem_stride, cfg->stem_pad);
    if (cfg->pool_kernel > 0 && (cfg->pool_stride < 1 || 2 * cfg->pool_pad > cfg->pool_kernel))
        return vr_fail(VR_ERR_ARG, "resnet", "invalid max pool (kernel %d, stride %d, pad %d)",
                       cfg->pool_kernel, cfg->pool_stride, cfg->pool_pad);
    r->cfg = *cfg;
    int bottleneck = cfg->depth >= 50, rank = cfg->rank;
    r->expansion = bottleneck ? 4 : 1;
    for (int s = 0; s < 4; s++) r->nblocks += stage_blocks[di][s];
    r->blocks = calloc((size_t)r->nblocks, sizeof *r->blocks);
    if (!r->blocks) return vr_fail(VR_ERR_NOMEM, "resnet", "cannot allocate %d blocks", r->nblocks);

    VR_TRY(vr_convbn_declare(&r->stem, prefix, "conv1", "bn1", rank, cfg->in_channels,
                             cfg->widths[0], cfg->stem_kernel, cfg->stem_stride, cfg->stem_pad,
                             params, buffers, counts));
    int inplanes = cfg->widths[0], bi = 0;
    char p[VR_NAME_MAX];
    for (int s = 0; s < 4; s++) {
        int planes = cfg->widths[s], out = planes * r->expansion;
        for (int j = 0; j < stage_blocks[di][s]; j++, bi++) {
            vr_block *b = &r->blocks[bi];
            int stride = (j == 0 && s > 0) ? 2 : 1;
            snprintf(p, sizeof p, "%slayer%d.%d.", prefix, s + 1, j);
            if (bottleneck) {
                b->nconv = 3;
                VR_TRY(vr_convbn_declare(&b->conv[0], p, "conv1", "bn1", rank, inplanes, planes, 1, 1, 0, params, buffers, counts));
                VR_TRY(vr_convbn_declare(&b->conv[1], p, "conv2", "bn2", rank, planes, planes, 3, stride, 1, params, buffers, counts));
                VR_TRY(vr_convbn_declare(&b->conv[2], p, "conv3", "bn3", rank, planes, out, 1, 1, 0, params, buffers, counts));
            } else {
                b->nconv = 2;
                VR_TRY(vr_convbn_declare(&b->conv[0], p, "conv1", "bn1", rank, inplanes, planes, 3, stride, 1, params, buffers, counts));
                VR_TRY(vr_convbn_declare(&b->conv[1], p, "conv2", "bn2", rank, planes, planes, 3, 1, 1, params, buffers, counts));
            }
            if (stride != 1 || inplanes != out) {
                b->has_down = 1;
                VR_TRY(vr_convbn_declare(&b->down, p, "downsample.0", "downsample.1", rank,
                                         inplanes, out, 1, stride, 0, params, buffers, counts));
            }
            inplanes = out;
        }
    }
    r->out_dim = inplanes;
    return VR_OK;
}

void vr_resnet_free(vr_resnet *r)
{
    free(r->blocks);
    r->blocks = NULL;
}

vr_status vr_resnet_plan(vr_resnet *r, const vr_backend *be, int n, int h, int w, size_t *cursor)
{
    int rank = r->cfg.rank;
    if (rank == 1) h = 1;
    r->imports = be->act != VR_ACT_F32;
    r->input = r->imports ? vr_ws_take(cursor, vr_act_floats(be, (size_t)n * r->cfg.in_channels * h * w)) : 0;
    VR_TRY(vr_convbn_plan(&r->stem, be, rank, n, h, w, cursor));
    size_t big = (size_t)n * vr_convbn_out_size(&r->stem), small = 0;
    int ch = r->stem.cout;
    h = r->stem.h_out;
    w = r->stem.w_out;
    if (r->cfg.pool_kernel > 0) {
        int k[2] = {r->cfg.pool_kernel, r->cfg.pool_kernel};
        int s[2] = {r->cfg.pool_stride, r->cfg.pool_stride};
        int p[2] = {r->cfg.pool_pad, r->cfg.pool_pad};
        vr_window win;
        VR_TRY(vr_window_init(&win, rank, n, ch, ch, h, w, k, s, p));
        h = win.h_out;
        w = win.w_out;
        r->pool_out = vr_ws_take(cursor, vr_act_floats(be, (size_t)n * ch * h * w));
        r->pool_arg = vr_ws_take(cursor, (size_t)n * ch * h * w);
    }
    r->pool_h = h;
    r->pool_w = w;
    small = (size_t)n * ch * h * w;
    for (int i = 0; i < r->nblocks; i++) {
        vr_block *b = &r->blocks[i];
        int bh = h, bw = w;
        for (int j = 0; j < b->nconv; j++) {
            VR_TRY(vr_convbn_plan(&b->conv[j], be, rank, n, bh, bw, cursor));
            bh = b->conv[j].h_out;
            bw = b->conv[j].w_out;
            size_t act = (size_t)n * vr_convbn_out_size(&b->conv[j]);
            if (act > big) big = act;
            if (act > small) small = act;
        }
        if (b->has_down) VR_TRY(vr_convbn_plan(&b->down, be, rank, n, h, w, cursor));
        h = bh;
        w = bw;
    }
    if (h * w < 1) return vr_fail(VR_ERR_SHAPE, "resnet", "input too small");
    r->repr = vr_ws_take(cursor, (size_t)n * r->out_dim);
    /* backward scratch: A and B hold any activation gradient, C and D those of block
     * inputs/outputs (the shortcut path), which are smaller than the stem's */
    r->grad[0] = vr_ws_take(cursor, vr_act_floats(be, big));
    r->grad[1] = vr_ws_take(cursor, vr_act_floats(be, big));
    r->grad[2] = vr_ws_take(cursor, vr_act_floats(be, small));
    r->grad[3] = vr_ws_take(cursor, vr_act_floats(be, small));
    r->plan_n = n;
    r->plan_h = rank == 1 ? 1 : r->stem.h_in;
    r->plan_w = r->stem.w_in;
    return VR_OK;
}

static const float *block_input(const vr_resnet *r, const vr_ctx *c, int i)
{
    if (i > 0) {
        const vr_block *p = &r->blocks[i - 1];
        return c->ws + p->conv[p->nconv - 1].out;
    }
    return c->ws + (r->cfg.pool_kernel > 0 ? r->pool_out : r->stem.out);
}

static vr_status pool_window(const vr_resnet *r, int n, vr_window *w)
{
    int k[2] = {r->cfg.pool_kernel, r->cfg.pool_kernel};
    int s[2] = {r->cfg.pool_stride, r->cfg.pool_stride};
    int p[2] = {r->cfg.pool_pad, r->cfg.pool_pad};
    return vr_window_init(w, r->cfg.rank, n, r->stem.cout, r->stem.cout, r->stem.h_out,
                          r->stem.w_out, k, s, p);
}

vr_status vr_resnet_forward(vr_resnet *r, const vr_ctx *c, const float *x)
{
    if (c->n > r->plan_n)
        return vr_fail(VR_ERR_SHAPE, "resnet", "batch %d exceeds the planned %d", c->n, r->plan_n);
    int rank = r->cfg.rank;
    vr_backend *be = c->be;
    if (r->imports) {
        VR_TRY(be->act_import(be, c->n, r->stem.cin, r->stem.h_in * r->stem.w_in, x,
                              c->ws + r->input));
        x = c->ws + r->input;
    }
    VR_TRY(vr_convbn_forward(&r->stem, c, rank, x, NULL, 1));
    if (r->cfg.pool_kernel > 0) {
        vr_window w;
        VR_TRY(pool_window(r, c->n, &w));
        VR_TRY(be->maxpool_forward(be, &w, c->ws + r->stem.out, c->ws + r->pool_out,
                                   (int32_t *)(c->ws + r->pool_arg)));
    }
    for (int i = 0; i < r->nblocks; i++) {
        const vr_block *b = &r->blocks[i];
        const float *in = block_input(r, c, i), *h = in;
        const float *shortcut = in;
        if (b->has_down) {
            VR_TRY(vr_convbn_forward(&b->down, c, rank, in, NULL, 0));
            shortcut = c->ws + b->down.out;
        }
        for (int j = 0; j < b->nconv; j++) {
            int last = j == b->nconv - 1;
            VR_TRY(vr_convbn_forward(&b->conv[j], c, rank, h, last ? shortcut : NULL, 1));
            h = c->ws + b->conv[j].out;
        }
    }
    const vr_block *lb = &r->blocks[r->nblocks - 1];
    const vr_convbn *l = &lb->conv[lb->nconv - 1];
    return be->avgpool_forward(be, c->n, r->out_dim, l->h_out * l->w_out, c->ws + l->out,
                               c->ws + r->repr);
}

vr_status vr_resnet_backward(vr_resnet *r, const vr_ctx *c, const float *x, const float *drepr,
                             float *dx)
{
    int rank = r->cfg.rank;
    vr_backend *be = c->be;
    float *A = c->ws + r->grad[0], *B = c->ws + r->grad[1];
    float *C = c->ws + r->grad[2], *D = c->ws + r->grad[3];
    const vr_block *lb = &r->blocks[r->nblocks - 1];
    const vr_convbn *l = &lb->conv[lb->nconv - 1];
    /* A: gradient of the current block's output */
    VR_TRY(be->avgpool_backward(be, c->n, r->out_dim, l->h_out * l->w_out, drepr, A));
    for (int i = r->nblocks - 1; i >= 0; i--) {
        const vr_block *b = &r->blocks[i];
        const float *in = block_input(r, c, i);
        /* the last conv carries the shortcut's gradient out in C; dx lands back in A */
        for (int j = b->nconv - 1; j >= 0; j--) {
            const float *xin = j > 0 ? c->ws + b->conv[j - 1].out : in;
            VR_TRY(vr_convbn_backward(&b->conv[j], c, rank, xin, A, 1, B,
                                      j == b->nconv - 1 ? C : NULL, A));
        }
        if (b->has_down) {
            VR_TRY(vr_convbn_backward(&b->down, c, rank, in, C, 0, B, NULL, D));
            VR_TRY(be->act_accumulate(be, (size_t)c->n * b->down.cin * b->down.h_in * b->down.w_in, D, A));
        } else {
            VR_TRY(be->act_accumulate(be, (size_t)c->n * b->conv[0].cin * b->conv[0].h_in * b->conv[0].w_in, C, A));
        }
        VR_TRY(vr_ctx_grads_ready(c, b->conv[0].w)); /* the block's first parameter */
    }
    const float *dstem = A;
    if (r->cfg.pool_kernel > 0) {
        vr_window w;
        VR_TRY(pool_window(r, c->n, &w));
        VR_TRY(be->maxpool_backward(be, &w, A, (const int32_t *)(c->ws + r->pool_arg), B));
        dstem = B;
    }
    /* the stem's conv-output gradient goes to whichever buffer dstem is not; an imported
     * input takes its own gradient in its place, then exported */
    if (r->imports) {
        float *in = c->ws + r->input;
        VR_TRY(vr_convbn_backward(&r->stem, c, rank, in, dstem, 1, dstem == A ? B : A, NULL,
                                  dx ? in : NULL));
        if (dx)
            VR_TRY(be->act_export(be, c->n, r->stem.cin, r->stem.h_in * r->stem.w_in, in, dx));
    } else {
        VR_TRY(vr_convbn_backward(&r->stem, c, rank, x, dstem, 1, dstem == A ? B : A, NULL, dx));
    }
    return vr_ctx_grads_ready(c, r->stem.w);
}

static void init_convbn(const vr_convbn *l, int rank, float *p, float *buf, vr_rng *rng,
                        float gamma)
{
    /* kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / (Cout * k^rank)) */
    size_t kk = rank == 2 ? (size_t)l->k * l->k : (size_t)l->k;
    size_t count = (size_t)l->cout * l->cin * kk;
    float std = sqrtf(2.0f / (float)((size_t)l->cout * kk));
    for (size_t i = 0; i < count; i++) p[l->w + i] = std * vr_rng_normal(rng);
    for (int i = 0; i < l->cout; i++) {
        p[l->gamma + i] = gamma;
        p[l->beta + i] = 0.0f;
        buf[l->rmean + i] = 0.0f;
        buf[l->rvar + i] = 1.0f;
    }
}

void vr_resnet_init(const vr_resnet *r, float *p, float *buf, vr_rng *rng)
{
    int rank = r->cfg.rank;
    init_convbn(&r->stem, rank, p, buf, rng, 1.0f);
    for (int i = 0; i < r->nblocks; i++) {
        const vr_block *b = &r->blocks[i];
        for (int j = 0; j < b->nconv; j++)
            init_convbn(&b->conv[j], rank, p, buf, rng,
                        (j == b->nconv - 1 && r->cfg.zero_init_residual) ? 0.0f : 1.0f);
        if (b->has_down) init_convbn(&b->down, rank, p, buf, rng, 1.0f);
    }
}
