/* Elementwise kernels over flat float arrays (and the sum of bfloat16 activations), the sum of
 * squares behind gradient norms, and the fixed-order sum of partials every reduction of the
 * backend ends with. Same semantics as the
 * CPU backend's elementwise.c: ReLU lets NaN through, as torch.relu. */
#include "act.cuh"
#include "cuda.h"
#include "reduce.cuh"

static __global__ void relu_forward_k(size_t n, const float *x, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

/* each element is read before it is written, so dx may be dy */
static __global__ void relu_backward_k(size_t n, const float *dy, const float *y, float *dx)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

static __global__ void add_k(size_t n, const float *a, const float *b, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

static __global__ void accumulate_k(size_t n, const float *a, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += a[i];
}

/* accumulate_k over bfloat16 activations: the sum in float, rounded once */
static __global__ void accumulate_bf16_k(size_t n, const vr_bf16 *a, vr_bf16 *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        vr_st(y + i, vr_ld(y + i) + vr_ld(a + i));
}

static __global__ void fill_k(size_t n, float value, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = value;
}

/* partials[block] = sum of x^2 over the block's grid-stride share, in double */
static __global__ void sum_squares_k(size_t n, const float *x, double *partials)
{
    __shared__ double sh[VR_CUDA_THREADS];
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * (double)x[i];
    s = vr_block_sum(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

/* one block: thread t sums partials t, t + 256, ... in order, then the block sums the threads */
static __global__ void sum_partials_k(const double *partials, int count, double *out)
{
    __shared__ double sh[VR_CUDA_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += VR_CUDA_THREADS) s += partials[i];
    s = vr_block_sum(s, sh);
    if (threadIdx.x == 0) *out = s;
}

extern "C" cudaError_t vr_cuda_sum_partials(cudaStream_t s, const double *partials, int count,
                                            double *out)
{
    sum_partials_k<<<1, VR_CUDA_THREADS, 0, s>>>(partials, count, out);
    return cudaGetLastError();
}

extern "C" vr_status vr_cuda_relu_forward(vr_backend *be, size_t count, const float *x, float *y)
{
    if (!count) return VR_OK;
    relu_forward_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                     vr_cuda(be)->stream>>>(count, x, y);
    return vr_cuda_launched("relu_forward_k");
}

extern "C" vr_status vr_cuda_relu_backward(vr_backend *be, size_t count, const float *dy,
                                           const float *y, float *dx)
{
    if (!count) return VR_OK;
    relu_backward_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                      vr_cuda(be)->stream>>>(count, dy, y, dx);
    return vr_cuda_launched("relu_backward_k");
}

extern "C" vr_status vr_cuda_add(vr_backend *be, size_t count, const float *a, const float *b,
                                 float *y)
{
    if (!count) return VR_OK;
    add_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0, vr_cuda(be)->stream>>>(
        count, a, b, y);
    return vr_cuda_launched("add_k");
}

extern "C" vr_status vr_cuda_accumulate(vr_backend *be, size_t count, const float *a, float *y)
{
    if (!count) return VR_OK;
    accumulate_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                   vr_cuda(be)->stream>>>(count, a, y);
    return vr_cuda_launched("accumulate_k");
}

extern "C" vr_status vr_cuda_nhwc_accumulate(vr_backend *be, size_t count, const float *a,
                                             float *y)
{
    if (!count) return VR_OK;
    accumulate_bf16_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                        vr_cuda(be)->stream>>>(count, (const vr_bf16 *)a, (vr_bf16 *)y);
    return vr_cuda_launched("accumulate_bf16_k");
}

extern "C" vr_status vr_cuda_fill(vr_backend *be, size_t count, float value, float *y)
{
    if (!count) return VR_OK;
    fill_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0, vr_cuda(be)->stream>>>(
        count, value, y);
    return vr_cuda_launched("fill_k");
}

/* At most this many partial sums: the second stage is one block. */
#define SS_BLOCKS_MAX 1024

extern "C" vr_status vr_cuda_sum_squares(vr_backend *be, size_t count, const float *x,
                                         double *out)
{
    if (!count) {
        *out = 0.0;
        return VR_OK;
    }
    unsigned blocks = vr_cuda_blocks(count, VR_CUDA_THREADS * 4);
    if (blocks > SS_BLOCKS_MAX) blocks = SS_BLOCKS_MAX;
    void *scratch;
    VR_TRY(vr_cuda_scratch(be, (blocks + 1) * sizeof(double), &scratch));
    double *partials = (double *)scratch, *sum = partials + blocks;
    cudaStream_t s = vr_cuda(be)->stream;
    sum_squares_k<<<blocks, VR_CUDA_THREADS, 0, s>>>(count, x, partials);
    VR_TRY(vr_cuda_launched("sum_squares_k"));
    VR_CUDA_TRY(vr_cuda_sum_partials(s, partials, (int)blocks, sum));
    const double *host;
    VR_TRY(vr_cuda_read_doubles(be, sum, 1, &host));
    *out = host[0];
    return VR_OK;
}
