/* The conv + BatchNorm unit: a bias-free convolution, then BatchNorm with statistics per group
 * of samples, with the residual add and ReLU fused into the BatchNorm kernel. */
#include "convbn.h"

#include <stdio.h>

size_t vr_ws_take(size_t *cursor, size_t floats)
{
    size_t at = *cursor;
    *cursor += (floats + 15) / 16 * 16;
    return at;
}

static vr_status declare_bn(const char *prefix, const char *bn, int c, size_t *gamma, size_t *beta,
                            size_t *rmean, size_t *rvar, int *counter, vr_paramset *params,
                            vr_paramset *buffers, vr_counters *counts)
{
    char name[VR_NAME_MAX];
    int64_t shape[1] = {c};
    snprintf(name, sizeof name, "%s%s.weight", prefix, bn);
    VR_TRY(vr_paramset_add(params, name, 1, shape, gamma));
    snprintf(name, sizeof name, "%s%s.bias", prefix, bn);
    VR_TRY(vr_paramset_add(params, name, 1, shape, beta));
    snprintf(name, sizeof name, "%s%s.running_mean", prefix, bn);
    VR_TRY(vr_paramset_add(buffers, name, 1, shape, rmean));
    snprintf(name, sizeof name, "%s%s.running_var", prefix, bn);
    VR_TRY(vr_paramset_add(buffers, name, 1, shape, rvar));
    snprintf(name, sizeof name, "%s%s.num_batches_tracked", prefix, bn);
    return vr_counters_add(counts, name, counter);
}

vr_status vr_convbn_declare(vr_convbn *l, const char *prefix, const char *conv, const char *bn,
                            int rank, int cin, int cout, int k, int stride, int pad,
                            vr_paramset *params, vr_paramset *buffers, vr_counters *counts)
{
    *l = (vr_convbn){.cin = cin, .cout = cout, .k = k, .stride = stride, .pad = pad};
    char name[VR_NAME_MAX];
    int64_t shape[4] = {cout, cin, k, k};
    snprintf(name, sizeof name, "%s%s.weight", prefix, conv);
    VR_TRY(vr_paramset_add(params, name, 2 + rank, shape, &l->w));
    return declare_bn(prefix, bn, cout, &l->gamma, &l->beta, &l->rmean, &l->rvar, &l->counter,
                      params, buffers, counts);
}

static vr_status window(const vr_convbn *l, int rank, int n, vr_window *w)
{
    int k[2] = {l->k, l->k}, s[2] = {l->stride, l->stride}, p[2] = {l->pad, l->pad};
    return vr_window_init(w, rank, n, l->cin, l->cout, l->h_in, l->w_in, k, s, p);
}

size_t vr_convbn_out_size(const vr_convbn *l) { return (size_t)l->cout * l->h_out * l->w_out; }

vr_status vr_convbn_plan(vr_convbn *l, const vr_backend *be, int rank, int n, int h, int w,
                         size_t *cursor)
{
    l->h_in = h;
    l->w_in = w;
    vr_window win;
    VR_TRY(window(l, rank, n, &win));
    l->h_out = win.h_out;
    l->w_out = win.w_out;
    size_t act = vr_act_floats(be, (size_t)n * vr_convbn_out_size(l));
    l->conv_out = vr_ws_take(cursor, act);
    l->out = vr_ws_take(cursor, act);
    l->stats = vr_ws_take(cursor, (size_t)VR_MAX_GROUPS * 2 * l->cout);
    return VR_OK;
}

vr_status vr_convbn_forward(const vr_convbn *l, const vr_ctx *c, int rank, const float *x,
                            const float *residual, int relu)
{
    VR_ASSERT(c->groups >= 1 && c->groups <= VR_MAX_GROUPS && c->n % c->groups == 0);
    vr_backend *be = c->be;
    vr_window w;
    VR_TRY(window(l, rank, c->n, &w));
    float *co = c->ws + l->conv_out, *out = c->ws + l->out;
    VR_TRY(be->conv_forward(be, &w, x, c->p + l->w, NULL, co));
    int s = l->h_out * l->w_out, ng = c->n / c->groups;
    /* a group's samples are contiguous in every activation layout */
    size_t per = (size_t)ng * l->cout * s;
    for (int g = 0; g < c->groups; g++) {
        const float *res = residual ? vr_act_at(be, residual, g * per) : NULL;
        const float *xg = vr_act_at(be, co, g * per);
        float *yg = vr_act_at(be, out, g * per);
        if (c->train) {
            float *mean = c->ws + l->stats + (size_t)g * 2 * l->cout;
            VR_TRY(be->act_bn_forward_train(be, c->sync, ng, l->cout, s, xg, c->p + l->gamma,
                                            c->p + l->beta, res, relu, yg, mean, mean + l->cout,
                                            c->buf + l->rmean, c->buf + l->rvar, 0.1f, 1e-5f));
            c->counts[l->counter]++;
        } else {
            VR_TRY(be->act_bn_forward_eval(be, ng, l->cout, s, xg, c->p + l->gamma,
                                           c->p + l->beta, res, relu, yg, c->buf + l->rmean,
                                           c->buf + l->rvar, 1e-5f));
        }
    }
    return VR_OK;
}

vr_status vr_convbn_backward(const vr_convbn *l, const vr_ctx *c, int rank, const float *x,
                             const float *dy, int relu, float *tmp, float *dres, float *dx)
{
    vr_backend *be = c->be;
    vr_window w;
    VR_TRY(window(l, rank, c->n, &w));
    const float *co = c->ws + l->conv_out, *out = c->ws + l->out;
    int s = l->h_out * l->w_out, ng = c->n / c->groups;
    size_t per = (size_t)ng * l->cout * s;
    for (int g = 0; g < c->groups; g++) {
        const float *mean = c->ws + l->stats + (size_t)g * 2 * l->cout;
        VR_TRY(be->act_bn_backward(be, c->sync, ng, l->cout, s, vr_act_at(be, dy, g * per),
                                   relu ? vr_act_at(be, out, g * per) : NULL,
                                   vr_act_at(be, co, g * per), c->p + l->gamma, mean,
                                   mean + l->cout, vr_act_at(be, tmp, g * per), c->g + l->gamma,
                                   c->g + l->beta, dres ? vr_act_at(be, dres, g * per) : NULL));
    }
    VR_TRY(be->conv_backward_weight(be, &w, x, tmp, c->g + l->w, NULL));
    if (dx) VR_TRY(be->conv_backward_data(be, &w, tmp, c->p + l->w, dx));
    return VR_OK;
}
