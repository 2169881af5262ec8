/* Pooling on the GPU: max pooling with saved argmax (PyTorch's semantics, as the CPU backend's
 * pool.c) and global average pooling.
 *
 * cuDNN's pooling backward wants x and y instead of an argmax, so both directions are kernels
 * of our own. The max-pool backward gathers instead of scattering: each input position sums the
 * gradients of the windows whose argmax it is, visiting them in the order the CPU adds them
 * (row-major over the outputs), so it needs no atomics and gives the CPU's bits.
 *
 * The vr_cuda_nhwc_* kernels do the same over bfloat16 channels-last activations (cuda-bf16):
 * consecutive threads take consecutive channels of one position, and the argmax is the same
 * plane index, stored per output element in channels-last order. */
#include "act.cuh"
#include "cuda.h"
#include "reduce.cuh"

#include <math.h>

/* as the CPU: padding at most half the kernel, so every window holds a real element */
static vr_status check_maxpool(const vr_window *d)
{
    if (d->c_out != d->c_in || 2 * d->ph > d->kh || 2 * d->pw > d->kw)
        return vr_fail(VR_ERR_SHAPE, "maxpool",
                       "channels %d->%d must match and padding %dx%d be at most half the "
                       "kernel %dx%d", d->c_in, d->c_out, d->ph, d->pw, d->kh, d->kw);
    return VR_OK;
}

static vr_status check_avgpool(int n, int c, int s)
{
    if (n < 1 || c < 1 || s < 1)
        return vr_fail(VR_ERR_SHAPE, "avgpool", "bad shape (%d,%d,%d)", n, c, s);
    return VR_OK;
}

/* The maximum of window (oh, ow) of a plane whose element p lies at xp[p * stride]: the
 * window clipped to the plane (padding is -inf and can never win), the first maximum in
 * row-major order winning and a NaN winning and propagating; *at receives its plane index. */
template <typename T>
static __device__ __forceinline__ float window_max(const vr_window &d, int oh, int ow, const T *xp,
                                                   size_t stride, int32_t *at)
{
    int h0 = oh * d.sh - d.ph, h1 = h0 + d.kh;
    int w0 = ow * d.sw - d.pw, w1 = w0 + d.kw;
    if (h0 < 0) h0 = 0;
    if (h1 > d.h_in) h1 = d.h_in;
    if (w0 < 0) w0 = 0;
    if (w1 > d.w_in) w1 = d.w_in;
    float best = -INFINITY;
    *at = h0 * d.w_in + w0;
    for (int ih = h0; ih < h1; ih++)
        for (int iw = w0; iw < w1; iw++) {
            float v = vr_ld(xp + (size_t)(ih * d.w_in + iw) * stride);
            if (v > best || isnan(v)) {
                best = v;
                *at = ih * d.w_in + iw;
            }
        }
    return best;
}

/* First and last output index along one axis whose window covers input position `in`:
 * o*stride - pad <= in < o*stride - pad + k, clipped to [0, out). */
static __device__ __forceinline__ void covering(int in, int k, int stride, int pad, int out,
                                                int *lo, int *hi)
{
    int a = in + pad - k + 1; /* o*stride >= a */
    *lo = a <= 0 ? 0 : (a + stride - 1) / stride;
    int h = (in + pad) / stride;
    *hi = h < out - 1 ? h : out - 1;
}

/* The gradient of input position (ih, iw) of a plane whose output o lies at dyp[o * stride]
 * and ap[o * stride]: dy summed, in the CPU's order, over the windows whose argmax it is. */
template <typename T>
static __device__ __forceinline__ float window_grad(const vr_window &d, int ih, int iw,
                                                   const T *dyp, const int32_t *ap, size_t stride)
{
    const int32_t me = ih * d.w_in + iw;
    int oh0, oh1, ow0, ow1;
    covering(ih, d.kh, d.sh, d.ph, d.h_out, &oh0, &oh1);
    covering(iw, d.kw, d.sw, d.pw, d.w_out, &ow0, &ow1);
    float g = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++) {
            size_t o = (size_t)(oh * d.w_out + ow) * stride;
            if (ap[o] == me) g += vr_ld(dyp + o);
        }
    return g;
}

/* Element i of an (N,C,h,w) tensor, or of an (N,h,w,C) one when last: its row and column, and
 * the offset of the first element of its plane in a tensor of the same layout whose planes hold
 * `other` elements (the plane's elements then lie c apart when last, else 1). */
static __device__ __forceinline__ size_t plane_of(size_t i, int last, int c, int h, int w,
                                                  size_t other, int *row, int *col)
{
    int ch = 0;
    if (last) ch = (int)(i % c), i /= c;
    *col = (int)(i % w);
    i /= w;
    *row = (int)(i % h);
    i /= h; /* the plane (N,C); channels last: the sample */
    return last ? i * other * c + ch : i * other;
}

/* One thread per output element: (N,C,OH,OW) float32, or (N,OH,OW,C) bfloat16 channels last. */
template <typename T>
static __global__ void maxpool_forward_k(vr_window d, size_t total, const T *x, T *y,
                                         int32_t *argmax)
{
    const int last = sizeof(T) == 2, c = d.c_in;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int oh, ow;
        size_t at0 = plane_of(i, last, c, d.h_out, d.w_out, (size_t)d.h_in * d.w_in, &oh, &ow);
        int32_t at;
        vr_st(y + i, window_max(d, oh, ow, x + at0, last ? (size_t)c : 1, &at));
        argmax[i] = at;
    }
}

/* One thread per input element, laid out as the forward's. */
template <typename T>
static __global__ void maxpool_backward_k(vr_window d, size_t total, const T *dy,
                                          const int32_t *argmax, T *dx)
{
    const int last = sizeof(T) == 2, c = d.c_in;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int ih, iw;
        size_t base = plane_of(i, last, c, d.h_in, d.w_in, (size_t)d.h_out * d.w_out, &ih, &iw);
        vr_st(dx + i, window_grad(d, ih, iw, dy + base, argmax + base, last ? (size_t)c : 1));
    }
}

/* one warp per plane of s floats: y = mean, summed in double */
static __global__ void avgpool_forward_k(size_t planes, int s, const float *x, float *y)
{
    const unsigned lane = threadIdx.x % 32;
    const size_t warps = (size_t)gridDim.x * blockDim.x / 32;
    for (size_t pl = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32; pl < planes;
         pl += warps) {
        const float *xp = x + pl * s;
        double sum = 0.0;
        for (int j = (int)lane; j < s; j += 32) sum += xp[j];
        for (int off = 16; off > 0; off /= 2) sum += __shfl_down_sync(0xffffffffu, sum, off);
        if (lane == 0) y[pl] = (float)(sum / s);
    }
}

static __global__ void avgpool_backward_k(size_t total, int s, const float *dy, float *dx)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] = dy[i / s] / (float)s;
}

/* over bfloat16 channels last: one thread per (n, ch), neighbouring threads on neighbouring
 * channels; y = mean summed in double */
static __global__ void avgpool_forward_nhwc_k(size_t planes, int c, int s, const vr_bf16 *x,
                                              float *y)
{
    for (size_t pl = blockIdx.x * (size_t)blockDim.x + threadIdx.x; pl < planes;
         pl += (size_t)gridDim.x * blockDim.x) {
        const size_t n = pl / c;
        const vr_bf16 *xp = x + n * s * c + pl % c;
        double sum = 0.0;
        for (int j = 0; j < s; j++) sum += vr_ld(xp + (size_t)j * c);
        y[pl] = (float)(sum / s);
    }
}

static __global__ void avgpool_backward_nhwc_k(size_t total, int c, int s, const float *dy,
                                               vr_bf16 *dx)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        vr_st(dx + i, dy[i / ((size_t)s * c) * c + i % c] / (float)s);
}

extern "C" vr_status vr_cuda_maxpool_forward(vr_backend *be, const vr_window *d, const float *x,
                                             float *y, int32_t *argmax)
{
    VR_TRY(check_maxpool(d));
    size_t total = (size_t)d->n * d->c_in * d->h_out * d->w_out;
    maxpool_forward_k<float><<<vr_cuda_blocks(total, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                               vr_cuda(be)->stream>>>(*d, total, x, y, argmax);
    return vr_cuda_launched("maxpool_forward_k");
}

extern "C" vr_status vr_cuda_maxpool_backward(vr_backend *be, const vr_window *d,
                                              const float *dy, const int32_t *argmax, float *dx)
{
    VR_TRY(check_maxpool(d));
    size_t total = (size_t)d->n * d->c_in * d->h_in * d->w_in;
    maxpool_backward_k<float><<<vr_cuda_blocks(total, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                                vr_cuda(be)->stream>>>(*d, total, dy, argmax, dx);
    return vr_cuda_launched("maxpool_backward_k");
}

extern "C" vr_status vr_cuda_avgpool_forward(vr_backend *be, int n, int c, int s, const float *x,
                                             float *y)
{
    VR_TRY(check_avgpool(n, c, s));
    size_t planes = (size_t)n * c;
    avgpool_forward_k<<<vr_cuda_blocks(planes * 32, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                        vr_cuda(be)->stream>>>(planes, s, x, y);
    return vr_cuda_launched("avgpool_forward_k");
}

extern "C" vr_status vr_cuda_avgpool_backward(vr_backend *be, int n, int c, int s,
                                              const float *dy, float *dx)
{
    VR_TRY(check_avgpool(n, c, s));
    size_t total = (size_t)n * c * s;
    avgpool_backward_k<<<vr_cuda_blocks(total, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                         vr_cuda(be)->stream>>>(total, s, dy, dx);
    return vr_cuda_launched("avgpool_backward_k");
}

extern "C" vr_status vr_cuda_nhwc_maxpool_forward(vr_backend *be, const vr_window *d,
                                                  const float *x, float *y, int32_t *argmax)
{
    VR_TRY(check_maxpool(d));
    size_t total = (size_t)d->n * d->c_in * d->h_out * d->w_out;
    maxpool_forward_k<vr_bf16><<<vr_cuda_blocks(total, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                                 vr_cuda(be)->stream>>>(*d, total, (const vr_bf16 *)x,
                                                        (vr_bf16 *)y, argmax);
    return vr_cuda_launched("maxpool_forward_k (bfloat16)");
}

extern "C" vr_status vr_cuda_nhwc_maxpool_backward(vr_backend *be, const vr_window *d,
                                                   const float *dy, const int32_t *argmax,
                                                   float *dx)
{
    VR_TRY(check_maxpool(d));
    size_t total = (size_t)d->n * d->c_in * d->h_in * d->w_in;
    maxpool_backward_k<vr_bf16><<<vr_cuda_blocks(total, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                                  vr_cuda(be)->stream>>>(*d, total, (const vr_bf16 *)dy, argmax,
                                                         (vr_bf16 *)dx);
    return vr_cuda_launched("maxpool_backward_k (bfloat16)");
}

extern "C" vr_status vr_cuda_nhwc_avgpool_forward(vr_backend *be, int n, int c, int s,
                                                  const float *x, float *y)
{
    VR_TRY(check_avgpool(n, c, s));
    size_t planes = (size_t)n * c;
    avgpool_forward_nhwc_k<<<vr_cuda_blocks(planes, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                             vr_cuda(be)->stream>>>(planes, c, s, (const vr_bf16 *)x, y);
    return vr_cuda_launched("avgpool_forward_nhwc_k");
}

extern "C" vr_status vr_cuda_nhwc_avgpool_backward(vr_backend *be, int n, int c, int s,
                                                   const float *dy, float *dx)
{
    VR_TRY(check_avgpool(n, c, s));
    size_t total = (size_t)n * c * s;
    avgpool_backward_nhwc_k<<<vr_cuda_blocks(total, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                              vr_cuda(be)->stream>>>(total, c, s, dy, (vr_bf16 *)dx);
    return vr_cuda_launched("avgpool_backward_nhwc_k");
}
