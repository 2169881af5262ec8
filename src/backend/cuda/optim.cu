/* Optimiser updates on the GPU over one parameter tensor: LARS (facebookresearch/vicreg
 * main_vicreg.py), SGD (torch.optim.SGD) and AdamW (torch.optim.AdamW, torch 1.13's formula
 * order), the formulas of the CPU backend's optim.c.
 *
 * The float arithmetic is written with round-to-nearest intrinsics (__fmul_rn, __fadd_rn, ...)
 * so the compiler does not contract it into fused multiply-adds: each update then rounds as
 * the CPU's does and the two backends agree to the last bit or so. The LARS norms are
 * fixed-order sums in double, left on the device: the update kernel forms the trust ratio
 * itself, so a step never waits for the host. */
#include "cuda.h"
#include "reduce.cuh"

#include <math.h>

/* at most this many partial sums per norm: the second stage is one block */
#define NORM_BLOCKS_MAX 1024

/* partials: |w|^2 of the block's share at [block], |g + wd*w|^2 at [gridDim + block], the
 * second with g' formed in float exactly as the update forms it */
static __global__ void lars_norms_k(size_t count, const float *w, const float *g, float wd,
                                    double *partials)
{
    __shared__ double sh[VR_CUDA_THREADS];
    double sw = 0.0, sd = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float dp = __fadd_rn(g[i], __fmul_rn(wd, w[i]));
        sw += (double)w[i] * (double)w[i];
        sd += (double)dp * (double)dp;
    }
    sw = vr_block_sum(sw, sh);
    sd = vr_block_sum(sd, sh);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = sw;
        partials[gridDim.x + blockIdx.x] = sd;
    }
}

/* norms (device) = {|w|^2, |g'|^2}, or NULL for q = 1 */
static __global__ void lars_update_k(size_t count, float *w, const float *g, float *mu, float lr,
                                     float wd, float momentum, float eta, const double *norms)
{
    /* main_vicreg.py: q = eta*|w|/|g'| where both norms are > 0, else 1 */
    float q = 1.0f;
    if (norms && norms[0] > 0.0 && norms[1] > 0.0)
        q = (float)((double)eta * sqrt(norms[0]) / sqrt(norms[1]));
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float dp = __fadd_rn(g[i], __fmul_rn(wd, w[i]));
        float m = __fadd_rn(__fmul_rn(momentum, mu[i]), __fmul_rn(q, dp));
        mu[i] = m;
        w[i] = __fsub_rn(w[i], __fmul_rn(lr, m));
    }
}

/* torch.optim.SGD, dampening 0, no Nesterov: the buffer is a copy of g' on the first step (or
 * without momentum), then momentum*buf + g'; mu may be NULL without momentum */
static __global__ void sgd_update_k(size_t count, float *w, const float *g, float *mu, float lr,
                                    float wd, float momentum, int copy)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float dp = __fadd_rn(g[i], __fmul_rn(wd, w[i]));
        float m = copy ? dp : __fadd_rn(__fmul_rn(momentum, mu[i]), dp);
        if (mu) mu[i] = m;
        w[i] = __fsub_rn(w[i], __fmul_rn(lr, m));
    }
}

/* the float constants are formed on the host, as the CPU forms them */
typedef struct adamw_k_args {
    float decay, beta1, beta2, a1, a2, bc2_sqrt, eps, step_size;
} adamw_k_args;

static __global__ void adamw_update_k(size_t count, float *w, const float *g, float *m, float *v,
                                      adamw_k_args a)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i];
        float wi = __fmul_rn(w[i], a.decay);
        float mi = __fadd_rn(__fmul_rn(a.beta1, m[i]), __fmul_rn(a.a1, gi));
        float vi = __fadd_rn(__fmul_rn(a.beta2, v[i]), __fmul_rn(__fmul_rn(a.a2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
        w[i] = __fsub_rn(wi, __fmul_rn(a.step_size, __fdiv_rn(mi, denom)));
    }
}

extern "C" vr_status vr_cuda_lars_step(vr_backend *be, size_t count, float *w, const float *g,
                                       float *mu, float lr, float weight_decay, float momentum,
                                       float eta, int trust)
{
    if (count == 0) return VR_OK;
    if (!w || !g || !mu) return vr_fail(VR_ERR_ARG, "lars", "w, g and mu must not be NULL");
    cudaStream_t s = vr_cuda(be)->stream;
    const double *norms = NULL;
    if (trust) {
        unsigned blocks = vr_cuda_blocks(count, VR_CUDA_THREADS * 4);
        if (blocks > NORM_BLOCKS_MAX) blocks = NORM_BLOCKS_MAX;
        void *scratch;
        VR_TRY(vr_cuda_scratch(be, (2 * (size_t)blocks + 2) * sizeof(double), &scratch));
        double *partials = (double *)scratch, *sums = partials + 2 * blocks;
        lars_norms_k<<<blocks, VR_CUDA_THREADS, 0, s>>>(count, w, g, weight_decay, partials);
        VR_TRY(vr_cuda_launched("lars_norms_k"));
        VR_CUDA_TRY(vr_cuda_sum_partials(s, partials, (int)blocks, &sums[0]));
        VR_CUDA_TRY(vr_cuda_sum_partials(s, partials + blocks, (int)blocks, &sums[1]));
        norms = sums;
    }
    lars_update_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0, s>>>(
        count, w, g, mu, lr, weight_decay, momentum, eta, norms);
    return vr_cuda_launched("lars_update_k");
}

extern "C" vr_status vr_cuda_sgd_step(vr_backend *be, size_t count, float *w, const float *g,
                                      float *mu, float lr, float weight_decay, float momentum,
                                      int first_step)
{
    if (count == 0) return VR_OK;
    if (!w || !g) return vr_fail(VR_ERR_ARG, "sgd", "w and g must not be NULL");
    if (!mu && momentum != 0.0f)
        return vr_fail(VR_ERR_ARG, "sgd", "momentum %g needs a momentum buffer", (double)momentum);
    int copy = first_step || momentum == 0.0f;
    sgd_update_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                   vr_cuda(be)->stream>>>(count, w, g, mu, lr, weight_decay, momentum, copy);
    return vr_cuda_launched("sgd_update_k");
}

extern "C" vr_status vr_cuda_adamw_step(vr_backend *be, size_t count, float *w, const float *g,
                                        float *m, float *v, float lr, float beta1, float beta2,
                                        float eps, float weight_decay, long step)
{
    if (step < 1) return vr_fail(VR_ERR_ARG, "adamw", "step must be >= 1, got %ld", step);
    if (count == 0) return VR_OK;
    if (!w || !g || !m || !v)
        return vr_fail(VR_ERR_ARG, "adamw", "w, g, m and v must not be NULL");
    /* torch 1.13 _single_tensor_adamw, the scalars in double then float, as the CPU */
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    adamw_k_args a;
    a.decay = (float)(1.0 - (double)lr * (double)weight_decay);
    a.beta1 = beta1;
    a.beta2 = beta2;
    a.a1 = (float)(1.0 - (double)beta1);
    a.a2 = (float)(1.0 - (double)beta2);
    a.bc2_sqrt = (float)sqrt(bc2);
    a.eps = eps;
    a.step_size = (float)((double)lr / bc1);
    adamw_update_k<<<vr_cuda_blocks(count, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                     vr_cuda(be)->stream>>>(count, w, g, m, v, a);
    return vr_cuda_launched("adamw_update_k");
}
