/* Convolution on the CPU through oneDNN (Debian's libdnnl), the library whose JIT kernels use
 * every vector width the processor has (AVX-512 here) whatever OpenBLAS is told to use.
 *
 * Tensors stay in the backend's plain layouts: x, y (N,C,H,W) as nchw, w (Cout,Cin,KH,KW) as
 * oihw; a 1-D convolution is the 2-D one with H = 1. Each convolution lets oneDNN choose its
 * own layouts (format "any", typically channel blocks of 16) and reorders in and out of them,
 * as PyTorch does for its NCHW tensors. Primitives are made once per shape and direction and
 * kept in the backend's cache; the reordered copies and oneDNN's scratchpad (user-managed)
 * live in the backend's scratch, so the step path allocates nothing beyond a few small handles.
 *
 *   forward       y = conv(x, w) (+ b)
 *   backward data dx = conv^T(dy, w)                              (overwritten)
 *   backward w.   dw += conv_w(x, dy), through a reorder that adds into dw; db += sum of dy
 *
 * Direct algorithm only (no Winograd), so the rounding stays that of a plain sum. */
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_WEIGHTS, NDIR };

/* One argument of a primitive: its plain layout, the primitive's, and the reorder between them
 * (NULL when they agree). */
typedef struct conv_arg {
    int arg;                       /* DNNL_ARG_... */
    int output;
    dnnl_memory_desc_t user, prim;
    dnnl_primitive_t reorder;      /* user -> prim for inputs, prim -> user for outputs */
    size_t offset;                 /* of the prim copy in the scratch, bytes */
} conv_arg;

struct vr_dnnl_conv {
    vr_window d;
    int dir, bias;
    dnnl_primitive_t prim;
    int nargs;
    conv_arg a[4];
    dnnl_memory_desc_t scratchpad;
    size_t scratchpad_offset, total_bytes;
};

struct vr_dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    vr_dnnl_conv **cache;
    int count, cap;
};

static vr_status dnnl_check(dnnl_status_t st, const char *what)
{
    if (st == dnnl_success) return VR_OK;
    return vr_fail(st == dnnl_out_of_memory ? VR_ERR_NOMEM : VR_ERR_UNSUPPORTED, "onednn", "%s failed (status %d)",
                   what, (int)st);
}

vr_status vr_dnnl_create(vr_dnnl **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return vr_fail(VR_ERR_NOMEM, "onednn", "cannot allocate the context");
    vr_status s = dnnl_check(dnnl_engine_create(&(*out)->engine, dnnl_cpu, 0), "engine");
    if (s == VR_OK) s = dnnl_check(dnnl_stream_create(&(*out)->stream, (*out)->engine, dnnl_stream_default_flags), "stream");
    if (s != VR_OK) {
        vr_dnnl_destroy(*out);
        *out = NULL;
    }
    return s;
}

static void conv_free(vr_dnnl_conv *c)
{
    if (!c) return;
    if (c->prim) dnnl_primitive_destroy(c->prim);
    for (int i = 0; i < c->nargs; i++)
        if (c->a[i].reorder) dnnl_primitive_destroy(c->a[i].reorder);
    free(c);
}

void vr_dnnl_destroy(vr_dnnl *dn)
{
    if (!dn) return;
    for (int i = 0; i < dn->count; i++) conv_free(dn->cache[i]);
    free(dn->cache);
    if (dn->stream) dnnl_stream_destroy(dn->stream);
    if (dn->engine) dnnl_engine_destroy(dn->engine);
    free(dn);
}

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* The reorder from `from` to `to`; with accumulate, it adds into its destination. */
static vr_status make_reorder(vr_dnnl *dn, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                              int accumulate, dnnl_primitive_t *out)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    vr_status s = VR_OK;
    if (accumulate) {
        s = dnnl_check(dnnl_primitive_attr_create(&attr), "reorder attributes");
        if (s == VR_OK) s = dnnl_check(dnnl_post_ops_create(&ops), "post-ops");
        if (s == VR_OK) s = dnnl_check(dnnl_post_ops_append_sum(ops, 1.0f), "sum post-op");
        if (s == VR_OK) s = dnnl_check(dnnl_primitive_attr_set_post_ops(attr, ops), "reorder post-ops");
    }
    dnnl_primitive_desc_t pd = NULL;
    if (s == VR_OK) s = dnnl_check(dnnl_reorder_primitive_desc_create(&pd, from, dn->engine, to, dn->engine, attr), "reorder");
    if (s == VR_OK) s = dnnl_check(dnnl_primitive_create(out, pd), "reorder primitive");
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return s;
}

/* Adds argument `arg` whose plain layout is `user`, reading the primitive's chosen layout
 * from pd. The prim copy of the weight gradient is always separate (it is added into dw). */
static vr_status add_arg(vr_dnnl *dn, vr_dnnl_conv *c, dnnl_primitive_desc_t pd, dnnl_query_t q, int index,
                         int arg, int output, const dnnl_memory_desc_t *user, int accumulate)
{
    conv_arg *a = &c->a[c->nargs++];
    a->arg = arg;
    a->output = output;
    a->user = *user;
    a->prim = *dnnl_primitive_desc_query_md(pd, q, index);
    if (!accumulate && dnnl_memory_desc_equal(&a->user, &a->prim)) return VR_OK;
    a->offset = c->total_bytes;
    c->total_bytes += round64(dnnl_memory_desc_get_size(&a->prim));
    return output ? make_reorder(dn, &a->prim, &a->user, accumulate, &a->reorder)
                  : make_reorder(dn, &a->user, &a->prim, 0, &a->reorder);
}

static vr_status build(vr_dnnl *dn, vr_dnnl_conv *c)
{
    const vr_window *d = &c->d;
    dnnl_dims_t xd = {d->n, d->c_in, d->h_in, d->w_in}, yd = {d->n, d->c_out, d->h_out, d->w_out},
                wd = {d->c_out, d->c_in, d->kh, d->kw}, bd = {d->c_out};
    dnnl_dims_t strides = {d->sh, d->sw}, pad_l = {d->ph, d->pw};
    /* oneDNN's right padding makes the output size come out as ours */
    dnnl_dims_t pad_r = {(d->h_out - 1) * d->sh + d->kh - d->h_in - d->ph,
                         (d->w_out - 1) * d->sw + d->kw - d->w_in - d->pw};
    dnnl_memory_desc_t x_user, y_user, w_user, b_user, x_any, y_any, w_any;
    dnnl_memory_desc_init_by_tag(&x_user, 4, xd, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&y_user, 4, yd, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&w_user, 4, wd, dnnl_f32, dnnl_oihw);
    dnnl_memory_desc_init_by_tag(&b_user, 1, bd, dnnl_f32, dnnl_x);
    dnnl_memory_desc_init_by_tag(&x_any, 4, xd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&y_any, 4, yd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dnnl_f32, dnnl_format_tag_any);

    dnnl_convolution_desc_t fwd, op;
    VR_TRY(dnnl_check(dnnl_convolution_forward_desc_init(&fwd, dnnl_forward_training, dnnl_convolution_direct, &x_any,
                                                         &w_any, c->dir == DIR_FWD && c->bias ? &b_user : NULL,
                                                         &y_any, strides, pad_l, pad_r),
                      "convolution"));
    if (c->dir == DIR_BWD_DATA)
        VR_TRY(dnnl_check(dnnl_convolution_backward_data_desc_init(&op, dnnl_convolution_direct, &x_any, &w_any,
                                                                   &y_any, strides, pad_l, pad_r),
                          "convolution backward data"));
    if (c->dir == DIR_BWD_WEIGHTS)
        VR_TRY(dnnl_check(dnnl_convolution_backward_weights_desc_init(&op, dnnl_convolution_direct, &x_any, &w_any,
                                                                      NULL, &y_any, strides, pad_l, pad_r),
                          "convolution backward weights"));
    dnnl_primitive_attr_t attr;
    VR_TRY(dnnl_check(dnnl_primitive_attr_create(&attr), "attributes"));
    vr_status s = dnnl_check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad");
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    if (s == VR_OK && c->dir != DIR_FWD)
        s = dnnl_check(dnnl_primitive_desc_create(&hint, &fwd, NULL, dn->engine, NULL), "convolution hint");
    if (s == VR_OK)
        s = dnnl_check(dnnl_primitive_desc_create(&pd, c->dir == DIR_FWD ? &fwd : &op, attr, dn->engine, hint),
                       "convolution descriptor");
    if (s == VR_OK) s = dnnl_check(dnnl_primitive_create(&c->prim, pd), "convolution primitive");
    if (s == VR_OK && c->dir == DIR_FWD) {
        s = add_arg(dn, c, pd, dnnl_query_src_md, 0, DNNL_ARG_SRC, 0, &x_user, 0);
        if (s == VR_OK) s = add_arg(dn, c, pd, dnnl_query_weights_md, 0, DNNL_ARG_WEIGHTS, 0, &w_user, 0);
        if (s == VR_OK) s = add_arg(dn, c, pd, dnnl_query_dst_md, 0, DNNL_ARG_DST, 1, &y_user, 0);
        if (s == VR_OK && c->bias) s = add_arg(dn, c, pd, dnnl_query_weights_md, 1, DNNL_ARG_BIAS, 0, &b_user, 0);
    } else if (s == VR_OK && c->dir == DIR_BWD_DATA) {
        s = add_arg(dn, c, pd, dnnl_query_diff_dst_md, 0, DNNL_ARG_DIFF_DST, 0, &y_user, 0);
        if (s == VR_OK) s = add_arg(dn, c, pd, dnnl_query_weights_md, 0, DNNL_ARG_WEIGHTS, 0, &w_user, 0);
        if (s == VR_OK) s = add_arg(dn, c, pd, dnnl_query_diff_src_md, 0, DNNL_ARG_DIFF_SRC, 1, &x_user, 0);
    } else if (s == VR_OK) {
        s = add_arg(dn, c, pd, dnnl_query_src_md, 0, DNNL_ARG_SRC, 0, &x_user, 0);
        if (s == VR_OK) s = add_arg(dn, c, pd, dnnl_query_diff_dst_md, 0, DNNL_ARG_DIFF_DST, 0, &y_user, 0);
        if (s == VR_OK) s = add_arg(dn, c, pd, dnnl_query_diff_weights_md, 0, DNNL_ARG_DIFF_WEIGHTS, 1, &w_user, 1);
    }
    if (s == VR_OK) {
        c->scratchpad = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        c->scratchpad_offset = c->total_bytes;
        c->total_bytes += round64(dnnl_memory_desc_get_size(&c->scratchpad)) + 64;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (hint) dnnl_primitive_desc_destroy(hint);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

/* The cached primitive of (window, direction, bias), made on first use. */
static vr_status lookup(vr_dnnl *dn, const vr_window *d, int dir, int bias, vr_dnnl_conv **out)
{
    for (int i = 0; i < dn->count; i++) {
        vr_dnnl_conv *c = dn->cache[i];
        if (c->dir == dir && c->bias == bias && !memcmp(&c->d, d, sizeof *d)) return *out = c, VR_OK;
    }
    if (dn->count == dn->cap) {
        int cap = dn->cap ? 2 * dn->cap : 32;
        vr_dnnl_conv **grown = realloc(dn->cache, (size_t)cap * sizeof *grown);
        if (!grown) return vr_fail(VR_ERR_NOMEM, "onednn", "cannot grow the primitive cache");
        dn->cache = grown;
        dn->cap = cap;
    }
    vr_dnnl_conv *c = calloc(1, sizeof *c);
    if (!c) return vr_fail(VR_ERR_NOMEM, "onednn", "cannot allocate a primitive");
    c->d = *d;
    c->dir = dir;
    c->bias = bias;
    vr_status s = build(dn, c);
    if (s != VR_OK) {
        conv_free(c);
        return s;
    }
    dn->cache[dn->count++] = c;
    *out = c;
    return VR_OK;
}

/* Runs c on the plain buffers ptr[i] of its arguments, through the reorders and the scratch. */
static vr_status run(vr_backend *be, vr_dnnl *dn, vr_dnnl_conv *c, void *const *ptr)
{
    char *scratch;
    VR_TRY(vr_cpu_scratch(be, c->total_bytes, (float **)&scratch));
    scratch = (char *)round64((size_t)scratch);
    dnnl_memory_t user[4] = {0}, prim[4] = {0}, pad = NULL;
    dnnl_exec_arg_t args[5];
    vr_status s = VR_OK;
    for (int i = 0; i < c->nargs && s == VR_OK; i++) {
        conv_arg *a = &c->a[i];
        s = dnnl_check(dnnl_memory_create(&user[i], &a->user, dn->engine, ptr[i]), "memory");
        if (s == VR_OK && a->reorder)
            s = dnnl_check(dnnl_memory_create(&prim[i], &a->prim, dn->engine, scratch + a->offset), "memory");
        args[i] = (dnnl_exec_arg_t){a->arg, a->reorder ? prim[i] : user[i]};
        if (s == VR_OK && a->reorder && !a->output) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, user[i]}, {DNNL_ARG_TO, prim[i]}};
            s = dnnl_check(dnnl_primitive_execute(a->reorder, dn->stream, 2, r), "reorder");
        }
    }
    if (s == VR_OK)
        s = dnnl_check(dnnl_memory_create(&pad, &c->scratchpad, dn->engine, scratch + c->scratchpad_offset), "memory");
    args[c->nargs] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, pad};
    if (s == VR_OK) s = dnnl_check(dnnl_primitive_execute(c->prim, dn->stream, c->nargs + 1, args), "convolution");
    for (int i = 0; i < c->nargs && s == VR_OK; i++) {
        conv_arg *a = &c->a[i];
        if (!a->reorder || !a->output) continue;
        dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, prim[i]}, {DNNL_ARG_TO, user[i]}};
        s = dnnl_check(dnnl_primitive_execute(a->reorder, dn->stream, 2, r), "reorder");
    }
    if (s == VR_OK) s = dnnl_check(dnnl_stream_wait(dn->stream), "stream");
    for (int i = 0; i < c->nargs; i++) {
        if (user[i]) dnnl_memory_destroy(user[i]);
        if (prim[i]) dnnl_memory_destroy(prim[i]);
    }
    if (pad) dnnl_memory_destroy(pad);
    return s;
}

vr_status vr_dnnl_conv_forward(vr_backend *be, const vr_window *d, const float *x, const float *w, const float *b,
                               float *y)
{
    vr_dnnl *dn = vr_cpu_dnnl(be);
    vr_dnnl_conv *c;
    VR_TRY(lookup(dn, d, DIR_FWD, b != NULL, &c));
    void *ptr[4] = {(void *)x, (void *)w, y, (void *)b};
    return run(be, dn, c, ptr);
}

vr_status vr_dnnl_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy, const float *w,
                                     float *dx)
{
    vr_dnnl *dn = vr_cpu_dnnl(be);
    vr_dnnl_conv *c;
    VR_TRY(lookup(dn, d, DIR_BWD_DATA, 0, &c));
    void *ptr[3] = {(void *)dy, (void *)w, dx};
    return run(be, dn, c, ptr);
}

vr_status vr_dnnl_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x, const float *dy,
                                       float *dw, float *db)
{
    vr_dnnl *dn = vr_cpu_dnnl(be);
    vr_dnnl_conv *c;
    VR_TRY(lookup(dn, d, DIR_BWD_WEIGHTS, 0, &c));
    void *ptr[3] = {(void *)x, (void *)dy, dw};
    VR_TRY(run(be, dn, c, ptr));
    if (!db) return VR_OK;
    size_t plane = (size_t)d->h_out * d->w_out;
    /* db (Cout) += sum over samples and positions of dy; channels in parallel, each summed in
     * a fixed order */
#pragma omp parallel for num_threads(vr_cpu_threads(be)) schedule(static)
    for (int co = 0; co < d->c_out; co++) {
        double sum = 0;
        for (int i = 0; i < d->n; i++) {
            const float *p = dy + ((size_t)i * d->c_out + co) * plane;
            for (size_t k = 0; k < plane; k++) sum += p[k];
        }
        db[co] += (float)sum;
    }
    return VR_OK;
}
