/* Matrix products on the GPU: the one cuBLAS entry the backend uses, and the fully connected
 * layer as nn.Linear, y (N,out) = x (N,in) w^T + b with w (out,in).
 *
 * cuBLAS is column-major: a row-major (R,C) matrix is its column-major (C,R) transpose with
 * leading dimension C, so each row-major product below is written as the product of the
 * transposes, e.g. y^T (out,N) = w (out,in) x^T (in,N) is gemm(T, N, out, N, in, w, x). */
#include "cuda.h"
#include "reduce.cuh"

extern "C" vr_status vr_cuda_gemm(vr_backend *be, int exact, cublasOperation_t ta,
                                  cublasOperation_t tb, int m, int n, int k, float alpha,
                                  const float *a, int lda, const float *b, int ldb, float beta,
                                  float *c, int ldc)
{
    vr_cuda_ctx *cx = vr_cuda(be);
    /* the handle keeps its default math mode, so CUBLAS_COMPUTE_32F is plain float32 */
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    if (!exact && cx->math == VR_CUDA_TF32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    if (!exact && cx->math == VR_CUDA_BF16) compute = CUBLAS_COMPUTE_32F_FAST_16BF;
    VR_CUBLAS_TRY(cublasGemmEx(cx->blas, ta, tb, m, n, k, &alpha, a, CUDA_R_32F, lda, b,
                               CUDA_R_32F, ldb, &beta, c, CUDA_R_32F, ldc, compute,
                               CUBLAS_GEMM_DEFAULT));
    return VR_OK;
}

/* y (N,out) = b in every row */
static __global__ void broadcast_rows_k(size_t total, int out, const float *b, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = b[i % out];
}

/* db (out) += column sums of dy (N,out) in double, one thread per column walking down the
 * rows (neighbouring threads read neighbouring floats) */
static __global__ void column_sums_k(int n, int out, const float *dy, float *db)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < out; j += gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += dy[(size_t)i * out + j];
        db[j] += (float)s;
    }
}

static vr_status linear_check(int n, int in, int out)
{
    if (n <= 0 || in <= 0 || out <= 0)
        return vr_fail(VR_ERR_SHAPE, "linear", "bad shape: n %d, in %d, out %d", n, in, out);
    return VR_OK;
}

extern "C" vr_status vr_cuda_linear_forward(vr_backend *be, int n, int in, int out,
                                            const float *x, const float *w, const float *b,
                                            float *y)
{
    VR_TRY(linear_check(n, in, out));
    /* the bias goes into y first and the product adds onto it (beta = 1) */
    if (b) {
        size_t total = (size_t)n * out;
        broadcast_rows_k<<<vr_cuda_blocks(total, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                           vr_cuda(be)->stream>>>(total, out, b, y);
        VR_TRY(vr_cuda_launched("broadcast_rows_k"));
    }
    /* y^T (out,N) = w (out,in) x^T (in,N); w is column-major (in,out), x column-major (in,N) */
    return vr_cuda_gemm(be, 0, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, 1.0f, w, in, x, in,
                        b ? 1.0f : 0.0f, y, out);
}

extern "C" vr_status vr_cuda_linear_backward(vr_backend *be, int n, int in, int out,
                                             const float *dy, const float *x, const float *w,
                                             float *dx, float *dw, float *db)
{
    VR_TRY(linear_check(n, in, out));
    /* dx (N,in) = dy (N,out) w (out,in): dx^T (in,N) = w^T (in,out) dy^T (out,N), where w^T
     * is w's column-major form (in,out) itself */
    if (dx)
        VR_TRY(vr_cuda_gemm(be, 0, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, 1.0f, w, in, dy, out,
                            0.0f, dx, in));
    /* dw (out,in) += dy^T x: dw^T (in,out) += x^T (in,N) dy (N,out) */
    VR_TRY(vr_cuda_gemm(be, 0, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, 1.0f, x, in, dy, out, 1.0f,
                        dw, in));
    if (!db) return VR_OK;
    column_sums_k<<<vr_cuda_blocks((size_t)out, VR_CUDA_THREADS), VR_CUDA_THREADS, 0,
                    vr_cuda(be)->stream>>>(n, out, dy, db);
    return vr_cuda_launched("column_sums_k");
}
