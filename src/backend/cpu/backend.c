/* The CPU backend's table, context and scratch memory. */
#include "cpu.h"

#include <omp.h>
#include <string.h>

int vr_cpu_threads(vr_backend *be) { return ((vr_cpu_ctx *)be->ctx)->threads; }

vr_status vr_cpu_scratch(vr_backend *be, size_t bytes, float **out)
{
    vr_cpu_ctx *c = be->ctx;
    if (bytes > c->scratch_bytes) {
        float *p = vr_alloc(bytes);
        if (!p) return vr_fail(VR_ERR_NOMEM, "cpu backend", "cannot allocate %zu bytes of scratch", bytes);
        vr_free(c->scratch);
        c->scratch = p;
        c->scratch_bytes = bytes;
    }
    *out = c->scratch;
    return VR_OK;
}

static vr_status cpu_alloc(vr_backend *be, size_t bytes, float **out)
{
    (void)be;
    *out = vr_alloc(bytes);
    if (!*out) return vr_fail(VR_ERR_NOMEM, "cpu backend", "cannot allocate %zu bytes", bytes);
    return VR_OK;
}

static void cpu_free(vr_backend *be, float *p)
{
    (void)be;
    vr_free(p);
}

static vr_status cpu_copy(vr_backend *be, float *dst, const float *src, size_t count)
{
    (void)be;
    if (count) memmove(dst, src, count * sizeof(float));
    return VR_OK;
}

static vr_status cpu_sync(vr_backend *be)
{
    (void)be;
    return VR_OK;
}

static void cpu_destroy(vr_backend *be)
{
    vr_cpu_ctx *c = be->ctx;
#ifdef VR_HAVE_DNNL
    vr_dnnl_destroy(c->dnnl);
#endif
    vr_free(c->scratch);
    free(c);
    free(be);
}

vr_status vr_cpu_backend_create(int threads, vr_backend **out)
{
#ifdef VR_HAVE_DNNL
    return vr_cpu_backend_create_conv(threads, VR_CPU_CONV_ONEDNN, out);
#else
    return vr_cpu_backend_create_conv(threads, VR_CPU_CONV_IM2COL, out);
#endif
}

vr_status vr_cpu_backend_create_conv(int threads, vr_cpu_conv conv, vr_backend **out)
{
    *out = NULL;
    vr_backend *be = calloc(1, sizeof *be);
    vr_cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return vr_fail(VR_ERR_NOMEM, "cpu backend", "cannot allocate the backend");
    }
    c->threads = threads > 0 ? threads : omp_get_max_threads();
    *be = (vr_backend){
        .name = "cpu",
        .device = VR_DEVICE_CPU,
        .ctx = c,
        .destroy = cpu_destroy,
        .alloc = cpu_alloc,
        .free = cpu_free,
        .upload = cpu_copy,
        .download = cpu_copy,
        .sync = cpu_sync,
        .conv_forward = vr_cpu_conv_forward,
        .conv_backward_data = vr_cpu_conv_backward_data,
        .conv_backward_weight = vr_cpu_conv_backward_weight,
        .bn_forward_train = vr_cpu_bn_forward_train,
        .bn_forward_eval = vr_cpu_bn_forward_eval,
        .bn_backward = vr_cpu_bn_backward,
        /* activations are float32 (N,C,H,W): the same kernels */
        .act_bn_forward_train = vr_cpu_bn_forward_train,
        .act_bn_forward_eval = vr_cpu_bn_forward_eval,
        .act_bn_backward = vr_cpu_bn_backward,
        .act_accumulate = vr_cpu_accumulate,
        .relu_forward = vr_cpu_relu_forward,
        .relu_backward = vr_cpu_relu_backward,
        .add = vr_cpu_add,
        .accumulate = vr_cpu_accumulate,
        .fill = vr_cpu_fill,
        .maxpool_forward = vr_cpu_maxpool_forward,
        .maxpool_backward = vr_cpu_maxpool_backward,
        .avgpool_forward = vr_cpu_avgpool_forward,
        .avgpool_backward = vr_cpu_avgpool_backward,
        .linear_forward = vr_cpu_linear_forward,
        .linear_backward = vr_cpu_linear_backward,
        .vicreg_loss = vr_cpu_vicreg_loss,
        .lars_step = vr_cpu_lars_step,
        .sgd_step = vr_cpu_sgd_step,
        .adamw_step = vr_cpu_adamw_step,
        .sum_squares = vr_cpu_sum_squares,
    };
    if (conv == VR_CPU_CONV_ONEDNN) {
#ifdef VR_HAVE_DNNL
        vr_status s = vr_dnnl_create(&c->dnnl);
        if (s != VR_OK) {
            cpu_destroy(be);
            return s;
        }
        be->name = "cpu-onednn";
        be->conv_forward = vr_dnnl_conv_forward;
        be->conv_backward_data = vr_dnnl_conv_backward_data;
        be->conv_backward_weight = vr_dnnl_conv_backward_weight;
#else
        cpu_destroy(be);
        return vr_fail(VR_ERR_UNSUPPORTED, "cpu backend", "this build has no oneDNN (libdnnl-dev)");
#endif
    }
    *out = be;
    return VR_OK;
}
