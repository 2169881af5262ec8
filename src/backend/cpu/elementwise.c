/* Elementwise kernels over flat float arrays, and the sum of squares behind gradient norms.
 * Large arrays are split statically over the backend's threads; small ones run in the calling
 * thread, since waking a team costs more than the work. */
#include "cpu.h"

#include <omp.h>

/* Counts above this are worth a thread team (128 KiB of floats). */
#define EW_PARALLEL 32768

static int ew_threads(vr_backend *be, size_t count)
{
    return count > EW_PARALLEL ? vr_cpu_threads(be) : 1;
}

/* v < 0 ? 0 : v rather than fmaxf: NaN passes through, as torch.relu, so divergence shows. */
vr_status vr_cpu_relu_forward(vr_backend *be, size_t count, const float *x, float *y)
{
#pragma omp parallel for simd schedule(static) num_threads(ew_threads(be, count))
    for (size_t i = 0; i < count; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
    return VR_OK;
}

/* Each element is read before it is written, so dx may be dy. */
vr_status vr_cpu_relu_backward(vr_backend *be, size_t count, const float *dy, const float *y,
                               float *dx)
{
#pragma omp parallel for simd schedule(static) num_threads(ew_threads(be, count))
    for (size_t i = 0; i < count; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    return VR_OK;
}

vr_status vr_cpu_add(vr_backend *be, size_t count, const float *a, const float *b, float *y)
{
#pragma omp parallel for simd schedule(static) num_threads(ew_threads(be, count))
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
    return VR_OK;
}

vr_status vr_cpu_accumulate(vr_backend *be, size_t count, const float *a, float *y)
{
#pragma omp parallel for simd schedule(static) num_threads(ew_threads(be, count))
    for (size_t i = 0; i < count; i++) y[i] += a[i];
    return VR_OK;
}

vr_status vr_cpu_fill(vr_backend *be, size_t count, float value, float *y)
{
#pragma omp parallel for simd schedule(static) num_threads(ew_threads(be, count))
    for (size_t i = 0; i < count; i++) y[i] = value;
    return VR_OK;
}

/* Partial sums per thread: four AVX2 vectors of doubles, so the adds are not one chain waiting
 * on the add latency; combined in a fixed order. */
#define SS_LANES 16

static double sum_squares_serial(const float *x, size_t count)
{
    double acc[SS_LANES] = {0}, s = 0.0;
    size_t i = 0;
    for (; i + SS_LANES <= count; i += SS_LANES) {
#pragma omp simd
        for (int k = 0; k < SS_LANES; k++) acc[k] += (double)x[i + k] * x[i + k];
    }
    for (; i < count; i++) s += (double)x[i] * x[i];
    for (int k = 0; k < SS_LANES; k++) s += acc[k];
    return s;
}

/* Each thread sums one contiguous chunk; the partials are added in thread order, so a given
 * thread count gives the same bits every time (an OpenMP reduction clause does not promise an
 * order). */
vr_status vr_cpu_sum_squares(vr_backend *be, size_t count, const float *x, double *out)
{
    const int nt = ew_threads(be, count);
    if (nt == 1) {
        *out = sum_squares_serial(x, count);
        return VR_OK;
    }
    float *scratch;
    VR_TRY(vr_cpu_scratch(be, (size_t)nt * sizeof(double), &scratch));
    double *part = (double *)scratch; /* (nt), 64-byte aligned */
    for (int t = 0; t < nt; t++) part[t] = 0.0;
#pragma omp parallel num_threads(nt)
    {
        size_t t = (size_t)omp_get_thread_num(), team = (size_t)omp_get_num_threads();
        size_t lo = count * t / team, hi = count * (t + 1) / team;
        part[t] = sum_squares_serial(x + lo, hi - lo);
    }
    double s = 0.0;
    for (int t = 0; t < nt; t++) s += part[t];
    *out = s;
    return VR_OK;
}
