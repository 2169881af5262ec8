/* Batch normalisation over (N,C,S) on the GPU: the training and evaluation forwards and the
 * backward, with the fusions of ResNet blocks (residual added after the affine step, then
 * ReLU), which cuDNN's batch norm does not offer in NCHW float32. The arithmetic is the CPU
 * backend's batchnorm.c (PyTorch's): statistics in double, running statistics with the
 * unbiased variance, y = (x - mean)*alpha + shift with alpha = gamma*invstd and
 * shift = beta + (float mean - exact mean)*alpha, and the backward written around x - mean.
 *
 * Element k of channel ch (0 <= k < N*S) is x[(k / S)*C*S + ch*S + k % S]. Each channel's
 * N*S elements are cut into chunks of equal length; one block reduces one chunk of one channel:
 *   forward:  the chunk's mean, then its sum of squared deviations (the second pass finds the
 *             chunk in cache), merged per channel in chunk order (Chan, Golub and LeVeque);
 *   backward: sum g and sum g*(x - mean) of the masked gradient g, added in chunk order.
 * A per-channel kernel then finishes the statistics and the coefficients of the elementwise
 * pass, and one thread per element applies them. Every reduction has a fixed shape, so a
 * given shape gives the same bits on every run.
 *
 * Activations in bfloat16 channels last (the act_bn_* entries of cuda-bf16): element k of
 * channel ch is x[k*C + ch]; a block of 32 x 8 threads reduces one chunk of rows for 32
 * channels, a warp reading 32 neighbouring channels of one row, and the 8 rows of threads are
 * summed in order. Loads and stores convert, the arithmetic is the same. */
#include "act.cuh"
#include "cuda.h"
#include "reduce.cuh"

/* Elements per chunk aimed at (32 per thread; channels last: rows, 128 per thread), and at
 * most this many chunks per channel. */
#define BN_CHUNK 8192
#define BN_CHUNK_ROWS 1024
#define BN_CHUNKS_MAX 1024

/* the channels-last blocks: channels by rows of threads */
#define BN_TILE 32
#define BN_ROWS 8

static vr_status bn_check(int n, int c, int s, int train)
{
    if (n <= 0 || c <= 0 || s <= 0)
        return vr_fail(VR_ERR_SHAPE, "batchnorm", "bad shape (%d,%d,%d)", n, c, s);
    /* as PyTorch's "Expected more than 1 value per channel when training" */
    if (train && (long long)n * s < 2)
        return vr_fail(VR_ERR_SHAPE, "batchnorm",
                       "training needs more than 1 value per channel, got (%d,%d,%d)", n, c, s);
    /* channels are a grid dimension (at most 65535); the index within one is 32-bit */
    if (c > 65535)
        return vr_fail(VR_ERR_SHAPE, "batchnorm", "%d channels exceed 65535", c);
    if ((long long)n * s >= (1LL << 31))
        return vr_fail(VR_ERR_SHAPE, "batchnorm", "%lld values per channel exceed 2^31",
                       (long long)n * s);
    return VR_OK;
}

/* How a channel's m = N*S elements are cut: `chunks` of `len`, the last possibly shorter,
 * none empty. */
typedef struct bn_cut {
    unsigned m, len, chunks;
} bn_cut;

static bn_cut bn_plan(int n, int s, int nhwc)
{
    bn_cut p;
    p.m = (unsigned)n * (unsigned)s;
    const unsigned chunk = nhwc ? BN_CHUNK_ROWS : BN_CHUNK;
    unsigned chunks = (p.m + chunk - 1) / chunk;
    if (chunks > BN_CHUNKS_MAX) chunks = BN_CHUNKS_MAX;
    p.len = (p.m + chunks - 1) / chunks;
    p.chunks = (p.m + p.len - 1) / p.len;
    return p;
}

/* Where element k of channel ch is. */
static __device__ __forceinline__ size_t bn_at(unsigned k, int c, int s, int ch)
{
    unsigned i = k / (unsigned)s;
    return ((size_t)i * c + ch) * s + (k - i * (unsigned)s);
}

/* grid (chunks, C): part[(ch*chunks + chunk)*2] = the chunk's mean, [+1] = its sum of squared
 * deviations from that mean */
static __global__ void bn_stats_k(bn_cut p, int c, int s, const float *x, double *part)
{
    __shared__ double sh[VR_CUDA_THREADS];
    const int ch = blockIdx.y;
    const unsigned k0 = blockIdx.x * p.len;
    const unsigned k1 = k0 + p.len < p.m ? k0 + p.len : p.m;
    double sum = 0.0;
    for (unsigned k = k0 + threadIdx.x; k < k1; k += VR_CUDA_THREADS) sum += x[bn_at(k, c, s, ch)];
    const double mean = vr_block_sum(sum, sh) / (double)(k1 - k0);
    double dev = 0.0;
    for (unsigned k = k0 + threadIdx.x; k < k1; k += VR_CUDA_THREADS) {
        double d = x[bn_at(k, c, s, ch)] - mean;
        dev += d * d;
    }
    dev = vr_block_sum(dev, sh);
    if (threadIdx.x == 0) {
        double *o = part + ((size_t)ch * p.chunks + blockIdx.x) * 2;
        o[0] = mean;
        o[1] = dev;
    }
}

/* The sum of v over the BN_ROWS rows of threads of a channels-last block, per column (channel),
 * in row order, returned to every thread of the column. */
static __device__ __forceinline__ double bn_rows_sum(double v, double (*sh)[BN_TILE])
{
    sh[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    double r = 0.0;
    for (int i = 0; i < BN_ROWS; i++) r += sh[i][threadIdx.x];
    __syncthreads();
    return r;
}

/* bn_stats_k over channels last: grid (chunks, ceil(C/32)), block (32, 8) */
static __global__ void bn_stats_nhwc_k(bn_cut p, int c, const vr_bf16 *x, double *part)
{
    __shared__ double sh[BN_ROWS][BN_TILE];
    const int ch = blockIdx.y * BN_TILE + threadIdx.x;
    const unsigned k0 = blockIdx.x * p.len;
    const unsigned k1 = k0 + p.len < p.m ? k0 + p.len : p.m;
    double sum = 0.0;
    if (ch < c)
        for (unsigned k = k0 + threadIdx.y; k < k1; k += BN_ROWS) sum += vr_ld(x + (size_t)k * c + ch);
    const double mean = bn_rows_sum(sum, sh) / (double)(k1 - k0);
    double dev = 0.0;
    if (ch < c)
        for (unsigned k = k0 + threadIdx.y; k < k1; k += BN_ROWS) {
            double d = vr_ld(x + (size_t)k * c + ch) - mean;
            dev += d * d;
        }
    dev = bn_rows_sum(dev, sh);
    if (threadIdx.y == 0 && ch < c) {
        double *o = part + ((size_t)ch * p.chunks + blockIdx.x) * 2;
        o[0] = mean;
        o[1] = dev;
    }
}

/* What the training forward reads and writes per channel besides x and y. */
typedef struct bn_train_args {
    const float *gamma, *beta;                              /* (C) */
    float *mean, *invstd, *running_mean, *running_var;      /* (C) */
    float *alpha, *shift;                                   /* (C), scratch */
    double momentum, eps;
} bn_train_args;

/* Merges channel ch's chunks (q: (chunks,2) means and sums of squared deviations) in order
 * (Chan et al.): the mean, m2 and count of all of them. */
static __device__ void bn_merge_chunks(bn_cut p, const double *q, double *mean_out, double *m2_out,
                                       double *cnt_out)
{
    double cnt = 0.0, mean = 0.0, m2 = 0.0;
    for (unsigned j = 0; j < p.chunks; j++) {
        unsigned k0 = j * p.len;
        double nb = (double)((k0 + p.len < p.m ? k0 + p.len : p.m) - k0);
        double delta = q[2 * j] - mean, tot = cnt + nb;
        mean += delta * nb / tot;
        m2 += q[2 * j + 1] + delta * delta * cnt * nb / tot;
        cnt = tot;
    }
    *mean_out = mean;
    *m2_out = m2;
    *cnt_out = cnt;
}

/* SyncBN: one thread per channel, this process's (mean, m2) of the channel into st (C,2). */
static __global__ void bn_local_stats_k(bn_cut p, int c, const double *part, double *st)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += gridDim.x * blockDim.x) {
        double cnt;
        bn_merge_chunks(p, part + (size_t)ch * p.chunks * 2, &st[2 * ch], &st[2 * ch + 1], &cnt);
    }
}

/* One thread per channel: merges the chunks in order, then as the CPU's bn_finish: saves mean
 * and invstd, updates the running statistics, and gives the affine coefficients around the
 * saved (float) mean. Under SyncBN the "chunks" are the ranks. */
static __global__ void bn_finish_k(bn_cut p, int c, const double *part, bn_train_args a)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += gridDim.x * blockDim.x) {
        double cnt, mean, m2;
        bn_merge_chunks(p, part + (size_t)ch * p.chunks * 2, &mean, &m2, &cnt);
        double invstd = 1.0 / sqrt(m2 / cnt + a.eps);
        double unbiased = m2 / (cnt - 1.0);
        a.mean[ch] = (float)mean;
        a.invstd[ch] = (float)invstd;
        a.running_mean[ch] =
            (float)((1.0 - a.momentum) * a.running_mean[ch] + a.momentum * mean);
        a.running_var[ch] =
            (float)((1.0 - a.momentum) * a.running_var[ch] + a.momentum * unbiased);
        double al = (double)a.gamma[ch] * invstd;
        a.alpha[ch] = (float)al;
        a.shift[ch] = (float)(a.beta[ch] + ((double)a.mean[ch] - mean) * al);
    }
}

/* evaluation: alpha = gamma / sqrt(running_var + eps); the shift is beta itself, since the
 * running mean is held exactly */
static __global__ void bn_eval_alpha_k(int c, const float *gamma, const float *rvar, double eps,
                                       float *alpha)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += gridDim.x * blockDim.x)
        alpha[ch] = (float)(gamma[ch] / sqrt((double)rvar[ch] + eps));
}

/* y = relu?((x - m)*alpha + shift [+ res]) per element; v < 0 ? 0 : v lets NaN through */
template <typename I, typename T>
static __global__ void bn_apply_k(I total, int c, int s, const T *x, const T *res,
                                  const float *m, const float *alpha, const float *shift,
                                  int relu, T *y)
{
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
        const int ch = vr_act_channel<T>(i, c, s);
        float v = fmaf(vr_ld(x + i) - m[ch], alpha[ch], shift[ch]);
        if (res) v += vr_ld(res + i);
        vr_st(y + i, relu && v < 0.0f ? 0.0f : v);
    }
}

/* grid (chunks, C): g = dy masked by y_relu > 0 (copied to dres when given);
 * part[(ch*chunks + chunk)*2] = sum g, [+1] = sum g*(x - mean) */
static __global__ void bn_grad_sums_k(bn_cut p, int c, int s, const float *dy,
                                      const float *y_relu, const float *x, const float *mean,
                                      float *dres, double *part)
{
    __shared__ double sh[VR_CUDA_THREADS];
    const int ch = blockIdx.y;
    const unsigned k0 = blockIdx.x * p.len;
    const unsigned k1 = k0 + p.len < p.m ? k0 + p.len : p.m;
    const double mu = mean[ch];
    double sg = 0.0, sgx = 0.0;
    for (unsigned k = k0 + threadIdx.x; k < k1; k += VR_CUDA_THREADS) {
        const size_t o = bn_at(k, c, s, ch);
        float g = dy[o];
        if (y_relu && !(y_relu[o] > 0.0f)) g = 0.0f;
        if (dres) dres[o] = g;
        sg += g;
        sgx += (double)g * ((double)x[o] - mu);
    }
    sg = vr_block_sum(sg, sh);
    sgx = vr_block_sum(sgx, sh);
    if (threadIdx.x == 0) {
        double *o = part + ((size_t)ch * p.chunks + blockIdx.x) * 2;
        o[0] = sg;
        o[1] = sgx;
    }
}

/* bn_grad_sums_k over channels last: grid (chunks, ceil(C/32)), block (32, 8) */
static __global__ void bn_grad_sums_nhwc_k(bn_cut p, int c, const vr_bf16 *dy,
                                           const vr_bf16 *y_relu, const vr_bf16 *x,
                                           const float *mean, vr_bf16 *dres, double *part)
{
    __shared__ double sh[BN_ROWS][BN_TILE];
    const int ch = blockIdx.y * BN_TILE + threadIdx.x;
    const unsigned k0 = blockIdx.x * p.len;
    const unsigned k1 = k0 + p.len < p.m ? k0 + p.len : p.m;
    const double mu = ch < c ? (double)mean[ch] : 0.0;
    double sg = 0.0, sgx = 0.0;
    if (ch < c)
        for (unsigned k = k0 + threadIdx.y; k < k1; k += BN_ROWS) {
            const size_t o = (size_t)k * c + ch;
            float g = vr_ld(dy + o);
            if (y_relu && !(vr_ld(y_relu + o) > 0.0f)) g = 0.0f;
            if (dres) vr_st(dres + o, g);
            sg += g;
            sgx += (double)g * ((double)vr_ld(x + o) - mu);
        }
    sg = bn_rows_sum(sg, sh);
    sgx = bn_rows_sum(sgx, sh);
    if (threadIdx.y == 0 && ch < c) {
        double *o = part + ((size_t)ch * p.chunks + blockIdx.x) * 2;
        o[0] = sg;
        o[1] = sgx;
    }
}

/* The sums of g and g*(x - mean) of channel ch over its chunks, in order. */
static __device__ void bn_sum_chunks(const double *q, unsigned chunks, double *sg, double *sgx)
{
    double a = 0.0, b = 0.0;
    for (unsigned j = 0; j < chunks; j++) {
        a += q[2 * j];
        b += q[2 * j + 1];
    }
    *sg = a;
    *sgx = b;
}

/* SyncBN: one thread per channel, this process's sums into loc (C,2). */
static __global__ void bn_local_sums_k(unsigned chunks, int c, const double *part, double *loc)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += gridDim.x * blockDim.x)
        bn_sum_chunks(part + (size_t)ch * chunks * 2, chunks, &loc[2 * ch], &loc[2 * ch + 1]);
}

/* One thread per channel: dbeta += sum g, dgamma += invstd * sum g(x - mean) of this process
 * (part, (C,chunks,2)); the coefficients of dx = a*(g - ((x - mean)*k + gm)) from the sums over
 * the whole batch of `count` values (glob, (C,gchunks,2): part itself, or under SyncBN the
 * sums over the ranks). */
static __global__ void bn_grad_finish_k(unsigned chunks, int c, const double *part,
                                        unsigned gchunks, const double *glob, double count,
                                        const float *gamma, const float *invstd, float *dgamma,
                                        float *dbeta, float *a, float *gm, float *k)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += gridDim.x * blockDim.x) {
        double sg, sgx, gsg, gsgx;
        bn_sum_chunks(part + (size_t)ch * chunks * 2, chunks, &sg, &sgx);
        bn_sum_chunks(glob + (size_t)ch * gchunks * 2, gchunks, &gsg, &gsgx);
        const double is = invstd[ch];
        dbeta[ch] += (float)sg;
        dgamma[ch] += (float)(sgx * is);
        a[ch] = (float)(gamma[ch] * is);
        gm[ch] = (float)(gsg / count);
        k[ch] = (float)(gsgx * is * is / count);
    }
}

/* dx = a*(g - fmaf(x - mean, k, gm)) with g the masked dy; dx may alias dy */
template <typename I, typename T>
static __global__ void bn_grad_apply_k(I total, int c, int s, const T *dy, const T *y_relu,
                                       const T *x, const float *mean, const float *a,
                                       const float *gm, const float *k, T *dx)
{
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
        const int ch = vr_act_channel<T>(i, c, s);
        float g = vr_ld(dy + i);
        if (y_relu && !(vr_ld(y_relu + i) > 0.0f)) g = 0.0f;
        vr_st(dx + i, a[ch] * (g - fmaf(vr_ld(x + i) - mean[ch], k[ch], gm[ch])));
    }
}

static size_t align256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* Scratch of one call: the partial sums (C, chunks, 2), three per-channel float arrays, and
 * under SyncBN `extra` doubles. */
typedef struct bn_work {
    double *part;
    float *f[3];
    double *extra;
} bn_work;

static vr_status bn_scratch(vr_backend *be, int c, const bn_cut *p, size_t extra, bn_work *w)
{
    size_t part_bytes = align256((size_t)c * p->chunks * 2 * sizeof(double));
    size_t coef_bytes = align256((size_t)c * sizeof(float));
    void *base;
    VR_TRY(vr_cuda_scratch(be, part_bytes + 3 * coef_bytes + extra * sizeof(double), &base));
    char *b = (char *)base;
    w->part = (double *)b;
    for (int i = 0; i < 3; i++) w->f[i] = (float *)(b + part_bytes + i * coef_bytes);
    w->extra = (double *)(b + part_bytes + 3 * coef_bytes);
    return VR_OK;
}

/* SyncBN's host step: `count` doubles of dev to the host, through fn (gather: out has `ranks`
 * times as many; reduce: in place), back to the device at dev_out. */
static vr_status bn_sync_host(vr_backend *be, const vr_bn_sync *sync, const double *dev,
                              size_t count, int gather, double *dev_out)
{
    vr_cuda_ctx *x = vr_cuda(be);
    size_t need = gather ? count * (1 + 2 * (size_t)sync->ranks) : count;
    if (x->sync_host_count < need) {
        double *h = (double *)realloc(x->sync_host, need * sizeof(double));
        if (!h) return vr_fail(VR_ERR_NOMEM, "batchnorm", "no host memory for SyncBN");
        x->sync_host = h;
        x->sync_host_count = need;
    }
    /* mine (count) | all (ranks, count) | the transposed all */
    double *mine = x->sync_host, *all = mine + count, *out = all + count * sync->ranks;
    VR_CUDA_TRY(cudaMemcpyAsync(mine, dev, count * sizeof(double), cudaMemcpyDeviceToHost, x->stream));
    VR_TRY(vr_cuda_wait(be, "batchnorm statistics"));
    if (!gather) {
        VR_TRY(sync->reduce(sync->ctx, mine, count));
        VR_CUDA_TRY(cudaMemcpyAsync(dev_out, mine, count * sizeof(double), cudaMemcpyHostToDevice,
                                    x->stream));
        return vr_cuda_wait(be, "batchnorm statistics");
    }
    VR_TRY(sync->gather(sync->ctx, mine, count, all));
    /* (ranks, C, 2) -> (C, ranks, 2), the layout bn_finish_k merges */
    const size_t c = count / 2;
    for (size_t ch = 0; ch < c; ch++)
        for (int r = 0; r < sync->ranks; r++) {
            out[(ch * sync->ranks + r) * 2] = all[((size_t)r * c + ch) * 2];
            out[(ch * sync->ranks + r) * 2 + 1] = all[((size_t)r * c + ch) * 2 + 1];
        }
    VR_CUDA_TRY(cudaMemcpyAsync(dev_out, out, count * sync->ranks * sizeof(double),
                                cudaMemcpyHostToDevice, x->stream));
    return vr_cuda_wait(be, "batchnorm statistics");
}

/* The elementwise pass, with 32-bit indices where they suffice (cheaper division). */
template <typename T>
static vr_status bn_apply(cudaStream_t st, int n, int c, int s, const T *x, const T *res,
                          const float *m, const float *alpha, const float *shift, int relu, T *y)
{
    const size_t total = (size_t)n * c * s;
    const unsigned blocks = vr_cuda_blocks(total, VR_CUDA_THREADS);
    if (total < (1u << 31))
        bn_apply_k<unsigned, T><<<blocks, VR_CUDA_THREADS, 0, st>>>((unsigned)total, c, s, x, res,
                                                                   m, alpha, shift, relu, y);
    else
        bn_apply_k<size_t, T><<<blocks, VR_CUDA_THREADS, 0, st>>>(total, c, s, x, res, m, alpha,
                                                                 shift, relu, y);
    return vr_cuda_launched("bn_apply_k");
}

template <typename T>
static vr_status bn_grad_apply(cudaStream_t st, int n, int c, int s, const T *dy,
                               const T *y_relu, const T *x, const float *mean, const float *a,
                               const float *gm, const float *k, T *dx)
{
    const size_t total = (size_t)n * c * s;
    const unsigned blocks = vr_cuda_blocks(total, VR_CUDA_THREADS);
    if (total < (1u << 31))
        bn_grad_apply_k<unsigned, T><<<blocks, VR_CUDA_THREADS, 0, st>>>(
            (unsigned)total, c, s, dy, y_relu, x, mean, a, gm, k, dx);
    else
        bn_grad_apply_k<size_t, T><<<blocks, VR_CUDA_THREADS, 0, st>>>(total, c, s, dy, y_relu, x,
                                                                      mean, a, gm, k, dx);
    return vr_cuda_launched("bn_grad_apply_k");
}

/* The per-chunk statistics of x into part: float32 (N,C,S) or bfloat16 channels last. */
static vr_status bn_stats(cudaStream_t st, const bn_cut *p, int c, int s, const float *x,
                          int nhwc, double *part)
{
    if (nhwc) {
        dim3 grid(p->chunks, (unsigned)((c + BN_TILE - 1) / BN_TILE));
        bn_stats_nhwc_k<<<grid, dim3(BN_TILE, BN_ROWS), 0, st>>>(*p, c, (const vr_bf16 *)x, part);
        return vr_cuda_launched("bn_stats_nhwc_k");
    }
    bn_stats_k<<<dim3(p->chunks, (unsigned)c), VR_CUDA_THREADS, 0, st>>>(*p, c, s, x, part);
    return vr_cuda_launched("bn_stats_k");
}

/* The per-chunk gradient sums into part (dres receives the masked dy when not NULL). */
static vr_status bn_grad_sums(cudaStream_t st, const bn_cut *p, int c, int s, const float *dy,
                              const float *y_relu, const float *x, const float *mean,
                              float *dres, int nhwc, double *part)
{
    if (nhwc) {
        dim3 grid(p->chunks, (unsigned)((c + BN_TILE - 1) / BN_TILE));
        bn_grad_sums_nhwc_k<<<grid, dim3(BN_TILE, BN_ROWS), 0, st>>>(
            *p, c, (const vr_bf16 *)dy, (const vr_bf16 *)y_relu, (const vr_bf16 *)x, mean,
            (vr_bf16 *)dres, part);
        return vr_cuda_launched("bn_grad_sums_nhwc_k");
    }
    bn_grad_sums_k<<<dim3(p->chunks, (unsigned)c), VR_CUDA_THREADS, 0, st>>>(
        *p, c, s, dy, y_relu, x, mean, dres, part);
    return vr_cuda_launched("bn_grad_sums_k");
}

/* The three passes, with x, residual, y, dy, y_relu, dx, dres float32 (N,C,S) or, when nhwc,
 * bfloat16 channels last. */
static vr_status bn_train(vr_backend *be, const vr_bn_sync *sync, int nhwc, int n, int c, int s,
                          const float *x, const float *gamma, const float *beta,
                          const float *residual, int relu, float *y, float *mean, float *invstd,
                          float *running_mean, float *running_var, float momentum, float eps)
{
    VR_TRY(bn_check(n, c, s, 1));
    const int ranks = sync ? sync->ranks : 1;
    if ((long long)n * s * ranks >= (1LL << 31))
        return vr_fail(VR_ERR_SHAPE, "batchnorm", "%lld values per channel over %d ranks exceed 2^31",
                       (long long)n * s * ranks, ranks);
    const bn_cut p = bn_plan(n, s, nhwc);
    bn_work w;
    /* SyncBN: st (C,2) | the ranks' statistics (C,ranks,2) */
    VR_TRY(bn_scratch(be, c, &p, sync ? (size_t)c * 2 * (1 + ranks) : 0, &w));
    float *alpha = w.f[0], *shift = w.f[1];
    cudaStream_t st = vr_cuda(be)->stream;
    VR_TRY(bn_stats(st, &p, c, s, x, nhwc, w.part));
    bn_train_args a = {gamma, beta, mean, invstd, running_mean, running_var, alpha, shift,
                       (double)momentum, (double)eps};
    if (sync) {
        double *local = w.extra, *ranked = w.extra + (size_t)c * 2;
        bn_local_stats_k<<<vr_cuda_blocks((size_t)c, 64), 64, 0, st>>>(p, c, w.part, local);
        VR_TRY(vr_cuda_launched("bn_local_stats_k"));
        VR_TRY(bn_sync_host(be, sync, local, (size_t)c * 2, 1, ranked));
        /* the ranks take the place of the chunks: n*s values each */
        bn_cut pr;
        pr.m = (unsigned)((long long)n * s * ranks);
        pr.len = (unsigned)n * (unsigned)s;
        pr.chunks = (unsigned)ranks;
        bn_finish_k<<<vr_cuda_blocks((size_t)c, 64), 64, 0, st>>>(pr, c, ranked, a);
    } else {
        bn_finish_k<<<vr_cuda_blocks((size_t)c, 64), 64, 0, st>>>(p, c, w.part, a);
    }
    VR_TRY(vr_cuda_launched("bn_finish_k"));
    if (nhwc)
        return bn_apply(st, n, c, s, (const vr_bf16 *)x, (const vr_bf16 *)residual, mean, alpha,
                        shift, relu, (vr_bf16 *)y);
    return bn_apply(st, n, c, s, x, residual, mean, alpha, shift, relu, y);
}

static vr_status bn_eval(vr_backend *be, int nhwc, int n, int c, int s, const float *x,
                         const float *gamma, const float *beta, const float *residual, int relu,
                         float *y, const float *running_mean, const float *running_var, float eps)
{
    VR_TRY(bn_check(n, c, s, 0));
    const bn_cut no_chunks = {0, 0, 0}; /* no partial sums: alpha alone */
    bn_work w;
    VR_TRY(bn_scratch(be, c, &no_chunks, 0, &w));
    float *alpha = w.f[0];
    cudaStream_t st = vr_cuda(be)->stream;
    bn_eval_alpha_k<<<vr_cuda_blocks((size_t)c, 64), 64, 0, st>>>(c, gamma, running_var,
                                                                   (double)eps, alpha);
    VR_TRY(vr_cuda_launched("bn_eval_alpha_k"));
    if (nhwc)
        return bn_apply(st, n, c, s, (const vr_bf16 *)x, (const vr_bf16 *)residual, running_mean,
                        alpha, beta, relu, (vr_bf16 *)y);
    return bn_apply(st, n, c, s, x, residual, running_mean, alpha, beta, relu, y);
}

static vr_status bn_back(vr_backend *be, const vr_bn_sync *sync, int nhwc, int n, int c, int s,
                         const float *dy, const float *y_relu, const float *x,
                         const float *gamma, const float *mean, const float *invstd, float *dx,
                         float *dgamma, float *dbeta, float *dres)
{
    VR_TRY(bn_check(n, c, s, 1));
    const bn_cut p = bn_plan(n, s, nhwc);
    bn_work w;
    /* SyncBN: this process's sums (C,2) | the sums over the ranks (C,2) */
    VR_TRY(bn_scratch(be, c, &p, sync ? (size_t)c * 4 : 0, &w));
    float *a = w.f[0], *gm = w.f[1], *k = w.f[2];
    cudaStream_t st = vr_cuda(be)->stream;
    VR_TRY(bn_grad_sums(st, &p, c, s, dy, y_relu, x, mean, dres, nhwc, w.part));
    const double *glob = w.part;
    unsigned gchunks = p.chunks;
    double count = (double)p.m;
    if (sync) {
        double *local = w.extra, *summed = w.extra + (size_t)c * 2;
        bn_local_sums_k<<<vr_cuda_blocks((size_t)c, 64), 64, 0, st>>>(p.chunks, c, w.part, local);
        VR_TRY(vr_cuda_launched("bn_local_sums_k"));
        VR_TRY(bn_sync_host(be, sync, local, (size_t)c * 2, 0, summed));
        glob = summed;
        gchunks = 1;
        count *= sync->ranks;
    }
    bn_grad_finish_k<<<vr_cuda_blocks((size_t)c, 64), 64, 0, st>>>(
        p.chunks, c, w.part, gchunks, glob, count, gamma, invstd, dgamma, dbeta, a, gm, k);
    VR_TRY(vr_cuda_launched("bn_grad_finish_k"));
    if (nhwc)
        return bn_grad_apply(st, n, c, s, (const vr_bf16 *)dy, (const vr_bf16 *)y_relu,
                             (const vr_bf16 *)x, mean, a, gm, k, (vr_bf16 *)dx);
    return bn_grad_apply(st, n, c, s, dy, y_relu, x, mean, a, gm, k, dx);
}

extern "C" vr_status vr_cuda_bn_forward_train(vr_backend *be, const vr_bn_sync *sync, int n,
                                              int c, int s, const float *x, const float *gamma,
                                              const float *beta, const float *residual, int relu,
                                              float *y, float *mean, float *invstd,
                                              float *running_mean, float *running_var,
                                              float momentum, float eps)
{
    return bn_train(be, sync, 0, n, c, s, x, gamma, beta, residual, relu, y, mean, invstd,
                    running_mean, running_var, momentum, eps);
}

extern "C" vr_status vr_cuda_bn_forward_eval(vr_backend *be, int n, int c, int s, const float *x,
                                             const float *gamma, const float *beta,
                                             const float *residual, int relu, float *y,
                                             const float *running_mean,
                                             const float *running_var, float eps)
{
    return bn_eval(be, 0, n, c, s, x, gamma, beta, residual, relu, y, running_mean, running_var,
                   eps);
}

extern "C" vr_status vr_cuda_bn_backward(vr_backend *be, const vr_bn_sync *sync, int n, int c,
                                         int s, const float *dy, const float *y_relu,
                                         const float *x, const float *gamma, const float *mean,
                                         const float *invstd, float *dx, float *dgamma,
                                         float *dbeta, float *dres)
{
    return bn_back(be, sync, 0, n, c, s, dy, y_relu, x, gamma, mean, invstd, dx, dgamma, dbeta,
                   dres);
}

extern "C" vr_status vr_cuda_nhwc_bn_forward_train(vr_backend *be, const vr_bn_sync *sync, int n,
                                                   int c, int s, const float *x,
                                                   const float *gamma, const float *beta,
                                                   const float *residual, int relu, float *y,
                                                   float *mean, float *invstd,
                                                   float *running_mean, float *running_var,
                                                   float momentum, float eps)
{
    return bn_train(be, sync, 1, n, c, s, x, gamma, beta, residual, relu, y, mean, invstd,
                    running_mean, running_var, momentum, eps);
}

extern "C" vr_status vr_cuda_nhwc_bn_forward_eval(vr_backend *be, int n, int c, int s,
                                                  const float *x, const float *gamma,
                                                  const float *beta, const float *residual,
                                                  int relu, float *y, const float *running_mean,
                                                  const float *running_var, float eps)
{
    return bn_eval(be, 1, n, c, s, x, gamma, beta, residual, relu, y, running_mean, running_var,
                   eps);
}

extern "C" vr_status vr_cuda_nhwc_bn_backward(vr_backend *be, const vr_bn_sync *sync, int n,
                                              int c, int s, const float *dy, const float *y_relu,
                                              const float *x, const float *gamma,
                                              const float *mean, const float *invstd, float *dx,
                                              float *dgamma, float *dbeta, float *dres)
{
    return bn_back(be, sync, 1, n, c, s, dy, y_relu, x, gamma, mean, invstd, dx, dgamma, dbeta,
                   dres);
}
