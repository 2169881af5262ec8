/* The VICReg loss and its gradient on the GPU: the CPU backend's vicreg.c step for step (the
 * derivation of every gradient is in its comments), with the D x D products in cuBLAS and the
 * rest in kernels of our own. The loss is float32 in every math mode: its products are exact
 * float32 GEMMs whatever the backend lets the layers use.
 *
 * Per view Z (N,D): column statistics (one thread per column, in double) give the centred Zc,
 * the variance hinge per column and its gradient factor; C = Zc^T Zc / (N-1) is a full D x D
 * GEMM (the CPU's ssyrk fills one triangle; on the GPU the plain GEMM is the simpler right
 * thing); the covariance term sums C^2 off the diagonal; its gradient, 4/(D(N-1)) Zc Coff, is
 * a second GEMM after the diagonal is zeroed. Where 2N <= D the covariance goes through the
 * Gram matrix G = Zc Zc^T (N,N) as on the CPU: the term is |G|_F^2/(N-1)^2 - sum var^2, the
 * gradient 4/(D(N-1)) (G Zc/(N-1) - Zc diag(var)), its second part joined to the variance's
 * column factor. Every sum is a fixed-order reduction in double; the seven sums reach the host
 * together and the terms are formed there as the CPU forms them.
 *
 * Scratch: C (D,D) or G (N,N), and Zc (N,D) floats, reused for the second view, 3 D doubles of
 * column factors and a few thousand doubles of partial sums. dz1/dz2 must not alias z1/z2. */
#include "cuda.h"
#include "reduce.cuh"

#define VR_STD_EPS 1e-4
/* at most this many partial sums per reduction: the second stage is one block */
#define PARTIALS_MAX 1024

static size_t align256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* partials[block] = sum of (z1-z2)^2 over its share; dz1 = g (z1-z2), dz2 = -dz1 when given */
static __global__ void invariance_k(size_t nd, const float *z1, const float *z2, double g,
                                    float *dz1, float *dz2, double *partials)
{
    __shared__ double sh[VR_CUDA_THREADS];
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nd;
         i += (size_t)gridDim.x * blockDim.x) {
        double e = (double)z1[i] - (double)z2[i];
        s += e * e;
        if (dz1) dz1[i] = (float)(g * e);
        if (dz2) dz2[i] = (float)(-g * e);
    }
    s = vr_block_sum(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

/* One thread per column j of z (N,D): zc = z - mean (float), the variance hinge
 * hinge[j] = relu(1 - std_j), var2[j] = var_j^2 and the factor col[j] of Zc_ij in the variance
 * gradient (times k_std) less cov_g var_j (the Gram path's share of the covariance gradient; 0
 * otherwise), with std_j = sqrt(var_j + 1e-4), var unbiased. */
static __global__ void column_stats_k(int n, int d, const float *z, float *zc, double *hinge,
                                      double *var2, double *col, float k_std, double cov_g)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < d; j += gridDim.x * blockDim.x) {
        double mean = 0.0;
        for (int i = 0; i < n; i++) mean += z[(size_t)i * d + j];
        mean /= n;
        double var = 0.0;
        for (int i = 0; i < n; i++) {
            double e = (double)z[(size_t)i * d + j] - mean;
            var += e * e;
            zc[(size_t)i * d + j] = (float)e;
        }
        var /= (n - 1);
        double sd = sqrt(var + VR_STD_EPS), h = 1.0 - sd;
        hinge[j] = h > 0.0 ? h : 0.0;
        var2[j] = var * var;
        col[j] = (h > 0.0 ? -(double)k_std / (2.0 * d * (n - 1) * sd) : 0.0) - cov_g * var;
    }
}

/* dz (N,D) += col[j] * zc */
static __global__ void variance_grad_k(size_t nd, int d, const double *col, const float *zc,
                                       float *dz)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nd;
         i += (size_t)gridDim.x * blockDim.x)
        dz[i] = (float)((double)dz[i] + col[i % d] * (double)zc[i]);
}

/* partials[block] = sum of c^2 over its share of c (M,M), the diagonal left out when off */
static __global__ void squares_k(int m, int off, const float *c, double *partials)
{
    __shared__ double sh[VR_CUDA_THREADS];
    const size_t mm = (size_t)m * m;
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < mm;
         i += (size_t)gridDim.x * blockDim.x)
        if (!off || i / m != i % m) s += (double)c[i] * (double)c[i];
    s = vr_block_sum(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

static __global__ void zero_diagonal_k(int d, float *c)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < d; j += gridDim.x * blockDim.x)
        c[(size_t)j * d + j] = 0.0f;
}

static unsigned partial_blocks(size_t n)
{
    unsigned b = vr_cuda_blocks(n, VR_CUDA_THREADS * 4);
    return b < PARTIALS_MAX ? b : PARTIALS_MAX;
}

/* Whether the covariance of an (N,D) view goes through G (N,N) rather than C (D,D), as on
 * the CPU. */
static int through_gram(int n, int d) { return 2 * (size_t)n <= (size_t)d; }

typedef struct loss_scratch {
    float *c, *zc;              /* (D,D) or (N,N), (N,D) */
    double *hinge, *var2, *col; /* (D) */
    double *partials;           /* (PARTIALS_MAX) */
    double *sums; /* (7): invariance, then per view the hinge sum, the sum of C^2 off the
                     diagonal or of G^2, and sum var^2 (Gram path only) */
} loss_scratch;

/* Adds the sums of view z into sums[0..2] and, when dz, the gradients of its variance and
 * covariance terms (times the coefficients) into dz. */
static vr_status view_terms(vr_backend *be, int n, int d, const float *z, vr_vicreg_coeffs k,
                            float *dz, const loss_scratch *w, double *sums)
{
    cudaStream_t s = vr_cuda(be)->stream;
    const size_t nd = (size_t)n * d;
    const int gram = through_gram(n, d); /* n >= 2, so d >= 4 there */
    const double cov_g = 4.0 * (double)k.cov / ((double)d * (double)(n - 1));
    column_stats_k<<<vr_cuda_blocks((size_t)d, VR_CUDA_THREADS), VR_CUDA_THREADS, 0, s>>>(
        n, d, z, w->zc, w->hinge, w->var2, w->col, k.std, gram ? cov_g : 0.0);
    VR_TRY(vr_cuda_launched("column_stats_k"));
    VR_CUDA_TRY(vr_cuda_sum_partials(s, w->hinge, d, &sums[0]));
    if (gram) VR_CUDA_TRY(vr_cuda_sum_partials(s, w->var2, d, &sums[2]));
    if (dz && (k.std != 0.0f || (gram && k.cov != 0.0f))) {
        variance_grad_k<<<vr_cuda_blocks(nd, VR_CUDA_THREADS), VR_CUDA_THREADS, 0, s>>>(
            nd, d, w->col, w->zc, dz);
        VR_TRY(vr_cuda_launched("variance_grad_k"));
    }
    if (d < 2) return VR_OK; /* no off-diagonal entries: the term and its gradient are 0 */

    if (gram) {
        /* G (N,N) = Zc Zc^T: with A = zc read column-major, Zc^T (D,N), G = A^T A is
         * gemm(T, N); then dz^T (D,N) += cov_g/(N-1) Zc^T G = A G (G symmetric) */
        VR_TRY(vr_cuda_gemm(be, 1, CUBLAS_OP_T, CUBLAS_OP_N, n, n, d, 1.0f, w->zc, d, w->zc, d,
                            0.0f, w->c, n));
        unsigned blocks = partial_blocks((size_t)n * n);
        squares_k<<<blocks, VR_CUDA_THREADS, 0, s>>>(n, 0, w->c, w->partials);
        VR_TRY(vr_cuda_launched("squares_k"));
        VR_CUDA_TRY(vr_cuda_sum_partials(s, w->partials, (int)blocks, &sums[1]));
        if (dz && k.cov != 0.0f)
            VR_TRY(vr_cuda_gemm(be, 1, CUBLAS_OP_N, CUBLAS_OP_N, d, n, n,
                                (float)(cov_g / (n - 1)), w->zc, d, w->c, n, 1.0f, dz, d));
        return VR_OK;
    }

    /* C (D,D) = Zc^T Zc / (N-1): row-major zc (N,D) is column-major Zc^T (D,N), so
     * C = Zc^T (Zc^T)^T is gemm(N, T) */
    VR_TRY(vr_cuda_gemm(be, 1, CUBLAS_OP_N, CUBLAS_OP_T, d, d, n, 1.0f / (float)(n - 1), w->zc,
                        d, w->zc, d, 0.0f, w->c, d));
    unsigned blocks = partial_blocks((size_t)d * d);
    squares_k<<<blocks, VR_CUDA_THREADS, 0, s>>>(d, 1, w->c, w->partials);
    VR_TRY(vr_cuda_launched("squares_k"));
    VR_CUDA_TRY(vr_cuda_sum_partials(s, w->partials, (int)blocks, &sums[1]));

    /* dz (N,D) += 4k/(D(N-1)) Zc Coff; transposed, dz^T (D,N) += Coff Zc^T (Coff symmetric) */
    if (dz && k.cov != 0.0f) {
        zero_diagonal_k<<<vr_cuda_blocks((size_t)d, VR_CUDA_THREADS), VR_CUDA_THREADS, 0, s>>>(
            d, w->c);
        VR_TRY(vr_cuda_launched("zero_diagonal_k"));
        VR_TRY(vr_cuda_gemm(be, 1, CUBLAS_OP_N, CUBLAS_OP_N, d, n, d, (float)cov_g, w->c, d,
                            w->zc, d, 1.0f, dz, d));
    }
    return VR_OK;
}

extern "C" vr_status vr_cuda_vicreg_loss(vr_backend *be, int n, int d, const float *z1,
                                         const float *z2, vr_vicreg_coeffs coeffs,
                                         vr_vicreg_terms *terms, float *dz1, float *dz2)
{
    if (n < 2 || d < 1)
        return vr_fail(VR_ERR_SHAPE, "vicreg loss", "need N >= 2 and D >= 1, got N %d D %d", n, d);
    if (!z1 || !z2 || !terms)
        return vr_fail(VR_ERR_ARG, "vicreg loss", "z1, z2 and terms must not be NULL");

    const size_t nd = (size_t)n * d;
    const size_t cc = through_gram(n, d) ? (size_t)n * n : (size_t)d * d;
    const size_t off_zc = align256(cc * sizeof(float));
    const size_t off_hinge = off_zc + align256(nd * sizeof(float));
    const size_t off_var2 = off_hinge + align256((size_t)d * sizeof(double));
    const size_t off_col = off_var2 + align256((size_t)d * sizeof(double));
    const size_t off_part = off_col + align256((size_t)d * sizeof(double));
    const size_t off_sums = off_part + align256(PARTIALS_MAX * sizeof(double));
    const size_t bytes = off_sums + align256(7 * sizeof(double));
    void *base;
    VR_TRY(vr_cuda_scratch(be, bytes, &base));
    char *p = (char *)base;
    const loss_scratch w = {(float *)p, (float *)(p + off_zc), (double *)(p + off_hinge),
                            (double *)(p + off_var2), (double *)(p + off_col),
                            (double *)(p + off_part), (double *)(p + off_sums)};
    cudaStream_t s = vr_cuda(be)->stream;
    VR_CUDA_TRY(cudaMemsetAsync(w.sums, 0, 7 * sizeof(double), s));

    /* invariance = mean over N*D of (z1-z2)^2; d/dz1 = 2 (z1-z2) / (N D) */
    double g = 2.0 * (double)coeffs.sim / (double)nd;
    unsigned blocks = partial_blocks(nd);
    invariance_k<<<blocks, VR_CUDA_THREADS, 0, s>>>(nd, z1, z2, g, dz1, dz2, w.partials);
    VR_TRY(vr_cuda_launched("invariance_k"));
    VR_CUDA_TRY(vr_cuda_sum_partials(s, w.partials, (int)blocks, &w.sums[0]));

    VR_TRY(view_terms(be, n, d, z1, coeffs, dz1, &w, &w.sums[1]));
    VR_TRY(view_terms(be, n, d, z2, coeffs, dz2, &w, &w.sums[4]));

    const double *h;
    VR_TRY(vr_cuda_read_doubles(be, w.sums, 7, &h));
    /* as the CPU: variance (1/(2D)) sum relu(1 - std) per view; covariance (1/D) sum of the
     * off-diagonal C^2 per view, through G |G|^2/(N-1)^2 - sum var^2 */
    const double g2 = through_gram(n, d) ? 1.0 / ((double)(n - 1) * (double)(n - 1)) : 1.0;
    terms->invariance = h[0] / (double)nd;
    terms->variance = h[1] / (2.0 * d) + h[4] / (2.0 * d);
    terms->covariance = (h[2] * g2 - h[3]) / d + (h[5] * g2 - h[6]) / d;
    terms->loss = (double)coeffs.sim * terms->invariance + (double)coeffs.std * terms->variance +
                  (double)coeffs.cov * terms->covariance;
    return VR_OK;
}
