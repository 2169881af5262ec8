/* Optimiser updates over one parameter tensor: LARS (facebookresearch/vicreg main_vicreg.py),
 * SGD (torch.optim.SGD) and AdamW (torch.optim.AdamW, torch 1.13's formula order).
 *
 * The updates are elementwise and split over threads with a static schedule. LARS needs two
 * norms first: they are accumulated in double over fixed blocks whose partial sums are added
 * in block order, so the result does not depend on the thread count at all. */
#include "cpu.h"

#include <math.h>

/* below this many floats an update runs on the calling thread */
#define PAR_MIN 32768
/* at most this many partial sums for a norm; blocks are at least NORM_BLOCK_MIN floats */
#define NORM_BLOCKS_MAX 1024
#define NORM_BLOCK_MIN 16384

/* |w|^2 and |g + wd*w|^2 in double, the second with g' formed in float exactly as the update
 * forms it, so q is the ratio of the norms of the tensors that are really used. */
static void lars_norms(int nt, size_t count, const float *w, const float *g, float wd,
                       double *w2, double *dp2)
{
    double pw[NORM_BLOCKS_MAX], pd[NORM_BLOCKS_MAX];
    size_t bs = (count + NORM_BLOCKS_MAX - 1) / NORM_BLOCKS_MAX;
    if (bs < NORM_BLOCK_MIN) bs = NORM_BLOCK_MIN;
    long blocks = (long)((count + bs - 1) / bs);
#pragma omp parallel for num_threads(nt) schedule(static) if (blocks > 1)
    for (long b = 0; b < blocks; b++) {
        size_t i0 = (size_t)b * bs, i1 = i0 + bs < count ? i0 + bs : count;
        double sw = 0.0, sd = 0.0;
        for (size_t i = i0; i < i1; i++) {
            float dp = g[i] + wd * w[i];
            sw += (double)w[i] * (double)w[i];
            sd += (double)dp * (double)dp;
        }
        pw[b] = sw;
        pd[b] = sd;
    }
    double sw = 0.0, sd = 0.0;
    for (long b = 0; b < blocks; b++) sw += pw[b], sd += pd[b];
    *w2 = sw;
    *dp2 = sd;
}

vr_status vr_cpu_lars_step(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                           float lr, float weight_decay, float momentum, float eta, int trust)
{
    if (count == 0) return VR_OK;
    if (!w || !g || !mu) return vr_fail(VR_ERR_ARG, "lars", "w, g and mu must not be NULL");
    int nt = vr_cpu_threads(be);
    /* main_vicreg.py: q = eta*|w|/|dp| where both norms are > 0, else 1 */
    float q = 1.0f;
    if (trust) {
        double w2, dp2;
        lars_norms(nt, count, w, g, weight_decay, &w2, &dp2);
        if (w2 > 0.0 && dp2 > 0.0) q = (float)((double)eta * sqrt(w2) / sqrt(dp2));
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (count > PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        float dp = g[i] + weight_decay * w[i];
        float m = momentum * mu[i] + q * dp;
        mu[i] = m;
        w[i] -= lr * m;
    }
    return VR_OK;
}

vr_status vr_cpu_sgd_step(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                          float lr, float weight_decay, float momentum, int first_step)
{
    if (count == 0) return VR_OK;
    if (!w || !g) return vr_fail(VR_ERR_ARG, "sgd", "w and g must not be NULL");
    if (!mu && momentum != 0.0f)
        return vr_fail(VR_ERR_ARG, "sgd", "momentum %g needs a momentum buffer", (double)momentum);
    int nt = vr_cpu_threads(be);
    /* torch.optim.SGD (dampening 0, nesterov off): the buffer is a copy of g' on the first
     * step, then momentum*buf + g'; without momentum g' itself is the step */
    int copy = first_step || momentum == 0.0f;
#pragma omp parallel for num_threads(nt) schedule(static) if (count > PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        float dp = g[i] + weight_decay * w[i];
        float m = copy ? dp : momentum * mu[i] + dp;
        if (mu) mu[i] = m;
        w[i] -= lr * m;
    }
    return VR_OK;
}

vr_status vr_cpu_adamw_step(vr_backend *be, size_t count, float *w, const float *g, float *m,
                            float *v, float lr, float beta1, float beta2, float eps,
                            float weight_decay, long step)
{
    if (step < 1) return vr_fail(VR_ERR_ARG, "adamw", "step must be >= 1, got %ld", step);
    if (count == 0) return VR_OK;
    if (!w || !g || !m || !v) return vr_fail(VR_ERR_ARG, "adamw", "w, g, m and v must not be NULL");
    int nt = vr_cpu_threads(be);
    /* torch 1.13 _single_tensor_adamw: the scalars are Python floats (double), applied to the
     * float tensors as float:
     *   param *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     *   denom = sqrt(v) / sqrt(1 - b2^t) + eps; param -= (lr / (1 - b1^t)) * m / denom */
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    float step_size = (float)((double)lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float a1 = (float)(1.0 - (double)beta1), a2 = (float)(1.0 - (double)beta2);
#pragma omp parallel for num_threads(nt) schedule(static) if (count > PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        float gi = g[i];
        float wi = w[i] * decay;
        float mi = beta1 * m[i] + a1 * gi;
        float vi = beta2 * v[i] + a2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = wi - step_size * (mi / denom);
    }
    return VR_OK;
}
