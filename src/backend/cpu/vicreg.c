/* The VICReg loss and its gradient on the CPU (shared/SPEC.md; facebookresearch/vicreg
 * main_vicreg.py, with the covariance divided by the real N - 1).
 *
 * For one view Z (N,D): Zc = Z - colmean(Z); var_j = sum_i Zc_ij^2 / (N-1);
 * std_j = sqrt(var_j + 1e-4); C = Zc^T Zc / (N-1) (D,D). Gradients used (a derivation in the
 * comments of view_terms):
 *   d inv / d Z1          =  2 (Z1 - Z2) / (N D)          (and the negative for Z2)
 *   d var_v / d Z_ij      = -[std_j < 1] Zc_ij / (2 D (N-1) std_j)
 *   d cov_v / d Z         =  4 / (D (N-1)) * Zc (C - diag C)
 * The centring's own backward (g - colmean(g)) is the identity here: both gradients above are
 * Zc times a matrix acting on columns, and colmean(Zc) = 0, so it is not applied.
 *
 * Where the batch is at most half the dimension (2N <= D, as with the 8192-wide expander), the
 * covariance goes through the Gram matrix G = Zc Zc^T (N,N) instead of C, with the same
 * values: sum_{j != k} C_jk^2 = |G|_F^2 / (N-1)^2 - sum_j var_j^2 (|C|_F = |Zc^T Zc|_F / (N-1)
 * and |Zc^T Zc|_F = |Zc Zc^T|_F), and Zc C = G Zc / (N-1), so
 *   d cov_v / d Z = 4 / (D (N-1)) * (G Zc / (N-1) - Zc diag(var)),
 * the second part joining the variance's per-column factor. There the off-diagonal sum is at
 * least the diagonal one for columns of like variance ((sum var)^2 / N - sum var^2 >= sum var^2
 * when D >= 2N), so the difference loses little to cancellation.
 *
 * Statistics (means, variances, every sum that becomes a reported term) are accumulated in
 * double, per column or per row into arrays that are then summed serially, so the bits do not
 * depend on the thread count. The products are float BLAS: ssyrk forms the upper triangle of C
 * (or G) once; ssymm reads that triangle for the gradient, so it is never mirrored.
 * Cost per view: N D^2 (ssyrk) + 2 N D^2 (ssymm, only with gradients) through C, N^2 D + 2 N^2 D
 * through G.
 * Scratch: C (D,D) or G (N,N), and Zc (N,D) floats, reused for the second view, plus O(N + D)
 * doubles. dz1/dz2 must not alias z1/z2: dz1 is written before z2's statistics are read. */
#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define VR_STD_EPS 1e-4
/* columns handled by one OpenMP work item in the column-statistics passes */
#define COL_BLOCK 256
/* below this many elements a pass runs on the calling thread */
#define PAR_MIN 32768

static size_t align64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* sum_j (z1-z2)^2 per row into rows (N); when dz1/dz2: dz1 = g (z1-z2), dz2 = -dz1 */
static void invariance_pass(int nt, int n, int d, const float *z1, const float *z2, double g,
                            float *dz1, float *dz2, double *rows)
{
    size_t nd = (size_t)n * (size_t)d;
#pragma omp parallel for num_threads(nt) schedule(static) if (nd > PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *a = z1 + (size_t)i * d, *b = z2 + (size_t)i * d;
        double s = 0.0;
        for (int j = 0; j < d; j++) {
            double e = (double)a[j] - (double)b[j];
            s += e * e;
        }
        rows[i] = s;
        if (dz1)
            for (int j = 0; j < d; j++) dz1[(size_t)i * d + j] = (float)(g * ((double)a[j] - (double)b[j]));
        if (dz2)
            for (int j = 0; j < d; j++) dz2[(size_t)i * d + j] = (float)(-g * ((double)a[j] - (double)b[j]));
    }
}

/* Column means (D, double), then zc = z - mean (N,D float) and var (D, double, unbiased). */
static void column_stats(int nt, int n, int d, const float *z, double *mean, double *var, float *zc)
{
    int blocks = (d + COL_BLOCK - 1) / COL_BLOCK;
    size_t nd = (size_t)n * (size_t)d;
#pragma omp parallel for num_threads(nt) schedule(static) if (nd > PAR_MIN)
    for (int b = 0; b < blocks; b++) {
        int j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
        for (int j = j0; j < j1; j++) mean[j] = 0.0, var[j] = 0.0;
        for (int i = 0; i < n; i++) {
            const float *r = z + (size_t)i * d;
            for (int j = j0; j < j1; j++) mean[j] += r[j];
        }
        for (int j = j0; j < j1; j++) mean[j] /= n;
        /* two-pass variance: the centred values are what the covariance uses too */
        for (int i = 0; i < n; i++) {
            const float *r = z + (size_t)i * d;
            float *c = zc + (size_t)i * d;
            for (int j = j0; j < j1; j++) {
                double e = (double)r[j] - mean[j];
                var[j] += e * e;
                c[j] = (float)e;
            }
        }
        for (int j = j0; j < j1; j++) var[j] /= (n - 1);
    }
}

/* Whether the covariance of an (N,D) view goes through G (N,N) rather than C (D,D). */
static int through_gram(int n, int d) { return 2 * (size_t)n <= (size_t)d; }

/* sum over the upper triangle of the (m,m) row-major a of a_jq^2, the diagonal weighted by
 * `diag` and the rest by `off`, in double, per row into rows (m) then serially */
static double triangle_squares(int nt, int m, const float *a, double diag, double off, double *rows)
{
#pragma omp parallel for num_threads(nt) schedule(static, 16) if ((size_t)m * m > PAR_MIN)
    for (int j = 0; j < m; j++) {
        const float *r = a + (size_t)j * m;
        double s = 0.0;
        for (int q = j + 1; q < m; q++) s += (double)r[q] * (double)r[q];
        rows[j] = off * s + diag * (double)r[j] * (double)r[j];
    }
    double t = 0.0;
    for (int j = 0; j < m; j++) t += rows[j];
    return t;
}

/* Adds the variance and covariance terms of one view to *var_term and *cov_term and, when dz,
 * their gradients (times the coefficients) to dz (N,D). Scratch: c (D,D) or (N,N) through G,
 * zc (N,D), mean, col (D), rows (max(N,D)). */
static void view_terms(int nt, int n, int d, const float *z, vr_vicreg_coeffs k, float *dz,
                       float *c, float *zc, double *mean, double *col, double *rows,
                       double *var_term, double *cov_term)
{
    column_stats(nt, n, d, z, mean, col, zc);
    const int gram = through_gram(n, d); /* n >= 2, so d >= 4 there */
    /* the covariance gradient's factor: 4 cov / (D (N-1)) */
    const double cov_g = 4.0 * (double)k.cov / ((double)d * (double)(n - 1));

    /* variance: v = (1/(2D)) sum_j relu(1 - std_j). With std_j = sqrt(var_j + eps) and
     * var_j = sum_i Zc_ij^2/(N-1): dv/dstd_j = -1/(2D) where 1 - std_j > 0 (0 otherwise, as
     * torch's relu backward at 0), dstd_j/dvar_j = 1/(2 std_j), dvar_j/dZc_ij = 2 Zc_ij/(N-1).
     * col[j] becomes the per-column factor of Zc_ij in d(std * v)/dZ, through G with the
     * covariance's -cov_g var_j joined to it. */
    double v = 0.0, var2 = 0.0;
    for (int j = 0; j < d; j++) {
        double s = sqrt(col[j] + VR_STD_EPS);
        double h = 1.0 - s;
        v += h > 0.0 ? h : 0.0;
        var2 += col[j] * col[j];
        double f = h > 0.0 ? -(double)k.std / (2.0 * d * (n - 1) * s) : 0.0;
        col[j] = gram ? f - cov_g * col[j] : f;
    }
    *var_term += v / (2.0 * d);

    size_t nd = (size_t)n * (size_t)d;
    if (dz && (k.std != 0.0f || (gram && k.cov != 0.0f))) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nd > PAR_MIN)
        for (int i = 0; i < n; i++) {
            float *g = dz + (size_t)i * d;
            const float *r = zc + (size_t)i * d;
            for (int j = 0; j < d; j++) g[j] = (float)((double)g[j] + col[j] * (double)r[j]);
        }
    }

    if (d < 2) return; /* no off-diagonal entries: the covariance term and its gradient are 0 */

    if (gram) {
        /* G = Zc Zc^T, upper triangle; |G|_F^2 / (N-1)^2 - sum var^2 = sum_{j != k} C_jk^2;
         * the gradient's G Zc / (N-1) part from the triangle (the other is in col above) */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, d, 1.0f, zc, d, 0.0f, c, n);
        double g2 = triangle_squares(nt, n, c, 1.0, 2.0, rows);
        *cov_term += (g2 / ((double)(n - 1) * (double)(n - 1)) - var2) / d;
        if (dz && k.cov != 0.0f)
            cblas_ssymm(CblasRowMajor, CblasLeft, CblasUpper, n, d, (float)(cov_g / (n - 1)), c, n,
                        zc, d, 1.0f, dz, d);
        return;
    }

    /* covariance: cv = (1/D) sum_{j != k} C_jk^2 = (2/D) sum_{j < k} C_jk^2 over the upper
     * triangle ssyrk writes; the lower triangle of c is never touched. */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0f / (float)(n - 1), zc, d, 0.0f,
                c, d);
    *cov_term += triangle_squares(nt, d, c, 0.0, 2.0, rows) / d;

    /* dcv/dC_jk = 2 C_jk / D off the diagonal; C_jk = sum_i Zc_ij Zc_ik / (N-1) and C is
     * symmetric, so dcv/dZc = 2 * Zc (2/D) Coff / (N-1) = 4/(D(N-1)) Zc Coff. ssymm with the
     * diagonal zeroed computes Zc Coff from the upper triangle alone. */
    if (dz && k.cov != 0.0f) {
        for (int j = 0; j < d; j++) c[(size_t)j * d + j] = 0.0f;
        cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, n, d, (float)cov_g, c, d, zc, d, 1.0f,
                    dz, d);
    }
}

vr_status vr_cpu_vicreg_loss(vr_backend *be, int n, int d, const float *z1, const float *z2,
                             vr_vicreg_coeffs coeffs, vr_vicreg_terms *terms, float *dz1,
                             float *dz2)
{
    if (n < 2 || d < 1)
        return vr_fail(VR_ERR_SHAPE, "vicreg loss", "need N >= 2 and D >= 1, got N %d D %d", n, d);
    if (!z1 || !z2 || !terms)
        return vr_fail(VR_ERR_ARG, "vicreg loss", "z1, z2 and terms must not be NULL");

    size_t nd = (size_t)n * (size_t)d;
    size_t dd = through_gram(n, d) ? (size_t)n * (size_t)n : (size_t)d * (size_t)d;
    size_t rows_n = (size_t)(n > d ? n : d);
    size_t off_zc = align64(dd * sizeof(float));
    size_t off_mean = off_zc + align64(nd * sizeof(float));
    size_t off_col = off_mean + align64((size_t)d * sizeof(double));
    size_t off_rows = off_col + align64((size_t)d * sizeof(double));
    size_t bytes = off_rows + align64(rows_n * sizeof(double));
    float *base;
    VR_TRY(vr_cpu_scratch(be, bytes, &base));
    char *s = (char *)base;
    float *c = base, *zc = (float *)(s + off_zc);
    double *mean = (double *)(s + off_mean), *col = (double *)(s + off_col);
    double *rows = (double *)(s + off_rows);
    int nt = vr_cpu_threads(be);

    /* invariance = mean over N*D of (z1-z2)^2; d/dz1 = 2 (z1-z2) / (N D) */
    double g = 2.0 * (double)coeffs.sim / (double)nd;
    invariance_pass(nt, n, d, z1, z2, g, dz1, dz2, rows);
    double inv = 0.0;
    for (int i = 0; i < n; i++) inv += rows[i];
    inv /= (double)nd;

    double var = 0.0, cov = 0.0;
    view_terms(nt, n, d, z1, coeffs, dz1, c, zc, mean, col, rows, &var, &cov);
    view_terms(nt, n, d, z2, coeffs, dz2, c, zc, mean, col, rows, &var, &cov);

    terms->invariance = inv;
    terms->variance = var;
    terms->covariance = cov;
    terms->loss = (double)coeffs.sim * inv + (double)coeffs.std * var + (double)coeffs.cov * cov;
    return VR_OK;
}
