/* Backends by name, and the window arithmetic every backend shares. */
#include "vicreg/backend.h"

#include <string.h>

#include "vr_config.h"

#if VR_HAVE_CUDA
vr_status vr_cuda_backend_create(const char *name, vr_backend **out); /* cuda/backend.c */
#endif

vr_status vr_backend_create(const char *name, int threads, vr_backend **out)
{
    *out = NULL;
    if (!name || strcmp(name, "cpu") == 0) return vr_cpu_backend_create(threads, out);
    if (strcmp(name, "cpu-im2col") == 0) return vr_cpu_backend_create_conv(threads, VR_CPU_CONV_IM2COL, out);
    if (strcmp(name, "cpu-onednn") == 0) return vr_cpu_backend_create_conv(threads, VR_CPU_CONV_ONEDNN, out);
    if (strcmp(name, "cuda") == 0 || strcmp(name, "cuda-tf32") == 0 || strcmp(name, "cuda-bf16") == 0)
#if VR_HAVE_CUDA
        return vr_cuda_backend_create(name, out);
#else
        return vr_fail(VR_ERR_UNSUPPORTED, "backend", "%s: this build has no CUDA backend", name);
#endif
    return vr_fail(VR_ERR_ARG, "backend",
                   "unknown backend '%s' (known: cpu, cpu-im2col, cpu-onednn, cuda, cuda-tf32, cuda-bf16)",
                   name);
}

void vr_backend_destroy(vr_backend *be)
{
    if (be) be->destroy(be);
}

size_t vr_act_floats(const vr_backend *be, size_t count)
{
    return be->act == VR_ACT_BF16_NHWC ? (count + 1) / 2 : count;
}

vr_status vr_window_init(vr_window *w, int rank, int n, int c_in, int c_out, int h_in, int w_in,
                         const int *k, const int *stride, const int *pad)
{
    if (rank != 1 && rank != 2)
        return vr_fail(VR_ERR_ARG, "window", "spatial rank must be 1 or 2, got %d", rank);
    *w = (vr_window){.n = n, .c_in = c_in, .c_out = c_out, .h_in = rank == 1 ? 1 : h_in,
                     .w_in = w_in};
    w->kh = rank == 1 ? 1 : k[0];
    w->kw = k[rank - 1];
    w->sh = rank == 1 ? 1 : stride[0];
    w->sw = stride[rank - 1];
    w->ph = rank == 1 ? 0 : pad[0];
    w->pw = pad[rank - 1];
    if (n < 1 || c_in < 1 || c_out < 1 || w->h_in < 1 || w->w_in < 1 || w->kh < 1 || w->kw < 1 ||
        w->sh < 1 || w->sw < 1 || w->ph < 0 || w->pw < 0)
        return vr_fail(VR_ERR_SHAPE, "window",
                       "invalid window: n %d c %d->%d in %dx%d kernel %dx%d stride %dx%d pad %dx%d",
                       n, c_in, c_out, w->h_in, w->w_in, w->kh, w->kw, w->sh, w->sw, w->ph, w->pw);
    int hspan = w->h_in + 2 * w->ph - w->kh, wspan = w->w_in + 2 * w->pw - w->kw;
    if (hspan < 0 || wspan < 0)
        return vr_fail(VR_ERR_SHAPE, "window", "kernel %dx%d larger than padded input %dx%d",
                       w->kh, w->kw, w->h_in + 2 * w->ph, w->w_in + 2 * w->pw);
    w->h_out = hspan / w->sh + 1;
    w->w_out = wspan / w->sw + 1;
    return VR_OK;
}
