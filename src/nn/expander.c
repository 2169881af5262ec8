/* The expander (projector) MLP: Linear -> BatchNorm1d -> ReLU per hidden layer, last Linear
 * without bias, named as the reference's nn.Sequential (prefix.0, prefix.1, prefix.3, ...). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convbn.h"

static vr_status parse_spec(vr_expander *e, const char *spec)
{
    const char *s = spec;
    e->nlayers = -1;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 1 || v > (1L << 20))
            return vr_fail(VR_ERR_ARG, "expander", "spec '%s': '%s' is not a positive width", spec, s);
        if (e->nlayers + 1 > VR_EXPANDER_MAX)
            return vr_fail(VR_ERR_ARG, "expander", "spec '%s': more than %d layers", spec, VR_EXPANDER_MAX);
        e->dims[++e->nlayers] = (int)v;
        if (*end == '-' && end[1]) end++;
        else if (*end) return vr_fail(VR_ERR_ARG, "expander", "spec '%s': unexpected '%s'", spec, end);
        s = end;
    }
    if (e->nlayers < 1)
        return vr_fail(VR_ERR_ARG, "expander", "spec '%s' needs at least two widths, as '512-2048'", spec);
    return VR_OK;
}

vr_status vr_expander_declare(vr_expander *e, const char *spec, const char *prefix,
                              vr_paramset *params, vr_paramset *buffers, vr_counters *counts)
{
    memset(e, 0, sizeof *e);
    VR_TRY(parse_spec(e, spec));
    char name[VR_NAME_MAX];
    for (int i = 0; i < e->nlayers; i++) {
        int in = e->dims[i], out = e->dims[i + 1], idx = 3 * i, last = i == e->nlayers - 1;
        int64_t wshape[2] = {out, in}, vshape[1] = {out};
        snprintf(name, sizeof name, "%s%d.weight", prefix, idx);
        VR_TRY(vr_paramset_add(params, name, 2, wshape, &e->layer[i].w));
        if (last) break;
        snprintf(name, sizeof name, "%s%d.bias", prefix, idx);
        VR_TRY(vr_paramset_add(params, name, 1, vshape, &e->layer[i].b));
        snprintf(name, sizeof name, "%s%d.weight", prefix, idx + 1);
        VR_TRY(vr_paramset_add(params, name, 1, vshape, &e->layer[i].gamma));
        snprintf(name, sizeof name, "%s%d.bias", prefix, idx + 1);
        VR_TRY(vr_paramset_add(params, name, 1, vshape, &e->layer[i].beta));
        snprintf(name, sizeof name, "%s%d.running_mean", prefix, idx + 1);
        VR_TRY(vr_paramset_add(buffers, name, 1, vshape, &e->layer[i].rmean));
        snprintf(name, sizeof name, "%s%d.running_var", prefix, idx + 1);
        VR_TRY(vr_paramset_add(buffers, name, 1, vshape, &e->layer[i].rvar));
        snprintf(name, sizeof name, "%s%d.num_batches_tracked", prefix, idx + 1);
        VR_TRY(vr_counters_add(counts, name, &e->layer[i].counter));
    }
    return VR_OK;
}

vr_status vr_expander_plan(vr_expander *e, int n, size_t *cursor)
{
    size_t widest = (size_t)e->dims[0];
    for (int i = 0; i < e->nlayers; i++) {
        size_t act = (size_t)n * e->dims[i + 1];
        e->layer[i].lin_out = vr_ws_take(cursor, act);
        if (i < e->nlayers - 1) {
            e->layer[i].out = vr_ws_take(cursor, act);
            e->layer[i].stats = vr_ws_take(cursor, (size_t)VR_MAX_GROUPS * 2 * e->dims[i + 1]);
        }
        if ((size_t)e->dims[i + 1] > widest) widest = (size_t)e->dims[i + 1];
    }
    e->grad[0] = vr_ws_take(cursor, (size_t)n * widest);
    e->grad[1] = vr_ws_take(cursor, (size_t)n * widest);
    e->plan_n = n;
    return VR_OK;
}

const float *vr_expander_output(const vr_expander *e, const vr_ctx *c)
{
    return c->ws + e->layer[e->nlayers - 1].lin_out;
}

vr_status vr_expander_forward(vr_expander *e, const vr_ctx *c, const float *x)
{
    if (c->n > e->plan_n)
        return vr_fail(VR_ERR_SHAPE, "expander", "batch %d exceeds the planned %d", c->n, e->plan_n);
    vr_backend *be = c->be;
    const float *h = x;
    int ng = c->n / c->groups;
    for (int i = 0; i < e->nlayers; i++) {
        int in = e->dims[i], out = e->dims[i + 1], last = i == e->nlayers - 1;
        float *lo = c->ws + e->layer[i].lin_out;
        VR_TRY(be->linear_forward(be, c->n, in, out, h, c->p + e->layer[i].w,
                                  last ? NULL : c->p + e->layer[i].b, lo));
        if (last) break;
        float *o = c->ws + e->layer[i].out;
        for (int g = 0; g < c->groups; g++) {
            size_t off = (size_t)g * ng * out;
            if (c->train) {
                float *mean = c->ws + e->layer[i].stats + (size_t)g * 2 * out;
                VR_TRY(be->bn_forward_train(be, c->sync, ng, out, 1, lo + off, c->p + e->layer[i].gamma,
                                            c->p + e->layer[i].beta, NULL, 1, o + off, mean,
                                            mean + out, c->buf + e->layer[i].rmean,
                                            c->buf + e->layer[i].rvar, 0.1f, 1e-5f));
                c->counts[e->layer[i].counter]++;
            } else {
                VR_TRY(be->bn_forward_eval(be, ng, out, 1, lo + off, c->p + e->layer[i].gamma,
                                           c->p + e->layer[i].beta, NULL, 1, o + off,
                                           c->buf + e->layer[i].rmean,
                                           c->buf + e->layer[i].rvar, 1e-5f));
            }
        }
        h = o;
    }
    return VR_OK;
}

vr_status vr_expander_backward(vr_expander *e, const vr_ctx *c, const float *x, const float *dz,
                               float *dx)
{
    vr_backend *be = c->be;
    float *A = c->ws + e->grad[0], *B = c->ws + e->grad[1];
    const float *dy = dz;
    int ng = c->n / c->groups;
    for (int i = e->nlayers - 1; i >= 0; i--) {
        int in = e->dims[i], out = e->dims[i + 1], last = i == e->nlayers - 1;
        const float *lin_dy = dy;
        if (!last) { /* through ReLU and BatchNorm, per group, into B */
            for (int g = 0; g < c->groups; g++) {
                size_t off = (size_t)g * ng * out;
                const float *mean = c->ws + e->layer[i].stats + (size_t)g * 2 * out;
                VR_TRY(be->bn_backward(be, c->sync, ng, out, 1, dy + off, c->ws + e->layer[i].out + off,
                                       c->ws + e->layer[i].lin_out + off,
                                       c->p + e->layer[i].gamma, mean, mean + out, B + off,
                                       c->g + e->layer[i].gamma, c->g + e->layer[i].beta, NULL));
            }
            lin_dy = B;
        }
        const float *xin = i > 0 ? c->ws + e->layer[i - 1].out : x;
        float *dxi = i > 0 ? A : dx;
        VR_TRY(be->linear_backward(be, c->n, in, out, lin_dy, xin, c->p + e->layer[i].w, dxi,
                                   c->g + e->layer[i].w, last ? NULL : c->g + e->layer[i].b));
        VR_TRY(vr_ctx_grads_ready(c, e->layer[i].w)); /* the layer's first parameter */
        dy = A;
    }
    return VR_OK;
}

void vr_expander_init(const vr_expander *e, float *p, float *buf, vr_rng *rng)
{
    for (int i = 0; i < e->nlayers; i++) {
        int in = e->dims[i], out = e->dims[i + 1], last = i == e->nlayers - 1;
        float bound = 1.0f / sqrtf((float)in); /* nn.Linear's kaiming_uniform(a=sqrt(5)) */
        for (size_t k = 0; k < (size_t)in * out; k++)
            p[e->layer[i].w + k] = vr_rng_range(rng, -bound, bound);
        if (last) break;
        for (int k = 0; k < out; k++) {
            p[e->layer[i].b + k] = vr_rng_range(rng, -bound, bound);
            p[e->layer[i].gamma + k] = 1.0f;
            p[e->layer[i].beta + k] = 0.0f;
            buf[e->layer[i].rmean + k] = 0.0f;
            buf[e->layer[i].rvar + k] = 1.0f;
        }
    }
}
