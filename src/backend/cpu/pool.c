/* Pooling on the CPU: max pooling with saved argmax (PyTorch's semantics) and global average
 * pooling. Both are threaded over the N*C planes with a static schedule; every plane is owned
 * by one thread, so the overlapping-window sums of the max-pool backward need no atomics and
 * any thread count gives the same bits. */
#include "cpu.h"

#include <math.h>
#include <string.h>

/* PyTorch rejects padding beyond half the kernel, which guarantees every window holds at least
 * one real element (so the argmax is always a position inside the plane). */
static vr_status check_maxpool(const vr_window *d)
{
    if (d->c_out != d->c_in || 2 * d->ph > d->kh || 2 * d->pw > d->kw)
        return vr_fail(VR_ERR_SHAPE, "maxpool",
                       "channels %d->%d must match and padding %dx%d be at most half the "
                       "kernel %dx%d", d->c_in, d->c_out, d->ph, d->pw, d->kh, d->kw);
    return VR_OK;
}

vr_status vr_cpu_maxpool_forward(vr_backend *be, const vr_window *d, const float *x, float *y,
                                 int32_t *argmax)
{
    VR_TRY(check_maxpool(d));
    const long planes = (long)d->n * d->c_in;
    const int h = d->h_in, w = d->w_in, ohw = d->h_out * d->w_out;

#pragma omp parallel for schedule(static) num_threads(vr_cpu_threads(be))
    for (long pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * h * w;
        float *yp = y + (size_t)pl * ohw;
        int32_t *ap = argmax + (size_t)pl * ohw;
        for (int oh = 0; oh < d->h_out; oh++) {
            /* the window clipped to the plane: padding is -inf and can never win */
            int h0 = oh * d->sh - d->ph, h1 = h0 + d->kh;
            if (h0 < 0) h0 = 0;
            if (h1 > h) h1 = h;
            for (int ow = 0; ow < d->w_out; ow++) {
                int w0 = ow * d->sw - d->pw, w1 = w0 + d->kw;
                if (w0 < 0) w0 = 0;
                if (w1 > w) w1 = w;
                /* as PyTorch: the first maximum in row-major order wins, a NaN wins and
                 * propagates */
                float best = -INFINITY;
                int at = h0 * w + w0;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) {
                        float v = xp[ih * w + iw];
                        if (v > best || isnan(v)) {
                            best = v;
                            at = ih * w + iw;
                        }
                    }
                yp[oh * d->w_out + ow] = best;
                ap[oh * d->w_out + ow] = at;
            }
        }
    }
    return VR_OK;
}

vr_status vr_cpu_maxpool_backward(vr_backend *be, const vr_window *d, const float *dy,
                                  const int32_t *argmax, float *dx)
{
    VR_TRY(check_maxpool(d));
    const long planes = (long)d->n * d->c_in;
    const int hw = d->h_in * d->w_in, ohw = d->h_out * d->w_out;

#pragma omp parallel for schedule(static) num_threads(vr_cpu_threads(be))
    for (long pl = 0; pl < planes; pl++) {
        float *dxp = dx + (size_t)pl * hw;
        const float *dyp = dy + (size_t)pl * ohw;
        const int32_t *ap = argmax + (size_t)pl * ohw;
        memset(dxp, 0, (size_t)hw * sizeof *dxp);
        /* overlapping windows may pick the same input: their gradients add */
        for (int i = 0; i < ohw; i++) dxp[ap[i]] += dyp[i];
    }
    return VR_OK;
}

vr_status vr_cpu_avgpool_forward(vr_backend *be, int n, int c, int s, const float *x, float *y)
{
    const long planes = (long)n * c;

#pragma omp parallel for schedule(static) num_threads(vr_cpu_threads(be))
    for (long pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * s;
        double sum = 0.0; /* in double: the mean of a large plane keeps float precision */
        for (int i = 0; i < s; i++) sum += xp[i];
        y[pl] = (float)(sum / s);
    }
    return VR_OK;
}

vr_status vr_cpu_avgpool_backward(vr_backend *be, int n, int c, int s, const float *dy, float *dx)
{
    const long planes = (long)n * c;

#pragma omp parallel for schedule(static) num_threads(vr_cpu_threads(be))
    for (long pl = 0; pl < planes; pl++) {
        float g = dy[pl] / (float)s;
        float *dxp = dx + (size_t)pl * s;
        for (int i = 0; i < s; i++) dxp[i] = g;
    }
    return VR_OK;
}
