/* Fully connected layer as nn.Linear: y (N,out) = x (N,in) w^T + b, w (out,in). The products go
 * through OpenBLAS; called outside an OpenMP region, its OpenMP build uses every thread. */
#include "cpu.h"

#include <cblas.h>
#include <string.h>

/* Columns per tile of the bias-gradient sum: 2 KiB of double accumulators, in L1. */
#define DB_TILE 256

/* Bias copies above this many floats are worth a thread team. */
#define FILL_PARALLEL 32768

static vr_status linear_check(int n, int in, int out)
{
    if (n <= 0 || in <= 0 || out <= 0)
        return vr_fail(VR_ERR_SHAPE, "linear", "bad shape: n %d, in %d, out %d", n, in, out);
    return VR_OK;
}

vr_status vr_cpu_linear_forward(vr_backend *be, int n, int in, int out, const float *x,
                                const float *w, const float *b, float *y)
{
    VR_TRY(linear_check(n, in, out));
    /* the bias goes into y first and the product adds onto it (beta = 1): one pass less than
     * adding it afterwards */
    if (b) {
        const int nt = (size_t)n * out > FILL_PARALLEL ? vr_cpu_threads(be) : 1;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, b, (size_t)out * sizeof *y);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
                b ? 1.0f : 0.0f, y, out);
    return VR_OK;
}

vr_status vr_cpu_linear_backward(vr_backend *be, int n, int in, int out, const float *dy,
                                 const float *x, const float *w, float *dx, float *dw, float *db)
{
    VR_TRY(linear_check(n, in, out));
    /* dx (N,in) = dy (N,out) w (out,in) */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in,
                    0.0f, dx, in);
    /* dw (out,in) += dy^T x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f,
                dw, in);
    if (!db) return VR_OK;
    /* db (out) += column sums of dy, in double; a thread owns a tile of columns and walks down
     * the rows, so every column is summed in row order whatever the thread count */
    const int tiles = (out + DB_TILE - 1) / DB_TILE;
#pragma omp parallel for schedule(static) num_threads(vr_cpu_threads(be))
    for (int t = 0; t < tiles; t++) {
        const int c0 = t * DB_TILE, wd = out - c0 < DB_TILE ? out - c0 : DB_TILE;
        double acc[DB_TILE];
        for (int j = 0; j < wd; j++) acc[j] = 0.0;
        for (size_t i = 0; i < (size_t)n; i++) {
            const float *r = dy + i * (size_t)out + c0;
#pragma omp simd
            for (int j = 0; j < wd; j++) acc[j] += r[j];
        }
        for (int j = 0; j < wd; j++) db[c0 + j] += (float)acc[j];
    }
    return VR_OK;
}
