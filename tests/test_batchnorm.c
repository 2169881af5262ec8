/* Batch norm kernels of the CPU backend (training and evaluation forwards, backward, with the
 * residual and ReLU fusions) against a naive double-precision reference and against finite
 * differences of L = sum(y * r). Shapes cover S = 1 (channels along a row, one or several
 * tiles) and S > 1, N = 2 and odd sizes. Tolerances are |got - ref| <= atol + rtol*|ref|. */
#include <pthread.h>

#include "testutil.h"

#define MOMENTUM 0.1f
#define EPS 1e-5f

typedef struct shape {
    int n, c, s;
} shape;

/* (2,3,1) and (2,5,7) are the smallest batches; with S = 1, (7,600,1) spans three channel
 * tiles and (19,40,1) three row blocks, the last partial; with S > 1, runs of S shorter than,
 * and a multiple of plus a remainder of, the 16-float vector chunks */
static const shape shapes[] = {{2, 3, 1},  {5, 37, 1}, {7, 600, 1}, {19, 40, 1},
                               {2, 5, 7},  {3, 4, 13}, {4, 3, 67}};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

/* One problem: inputs, the kernel's outputs and the backward's. */
typedef struct bn_case {
    int n, c, s, relu;
    size_t count;                                       /* N*C*S */
    float *x, *res, *y, *dy, *dx, *dres;                 /* (N,C,S); res, dres NULL unless fused */
    float *gamma, *beta, *mean, *invstd, *rm, *rv;       /* (C) */
    float *dgamma, *dbeta;                               /* (C) */
    vr_backend *be;
    const vr_bn_sync *sync;                              /* NULL: local statistics */
} bn_case;

static float *alloc_f(size_t count)
{
    float *p = calloc(count, sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static void case_init(bn_case *k, vr_backend *be, shape sh, int has_res, int relu, uint64_t seed)
{
    vr_rng r;
    vr_rng_seed(&r, seed);
    *k = (bn_case){.n = sh.n, .c = sh.c, .s = sh.s, .relu = relu, .be = be};
    size_t count = k->count = (size_t)sh.n * sh.c * sh.s, c = (size_t)sh.c;
    k->x = alloc_f(count);
    k->y = alloc_f(count);
    k->dy = alloc_f(count);
    k->dx = alloc_f(count);
    k->gamma = alloc_f(c);
    k->beta = alloc_f(c);
    k->mean = alloc_f(c);
    k->invstd = alloc_f(c);
    k->rm = alloc_f(c);
    k->rv = alloc_f(c);
    k->dgamma = alloc_f(c);
    k->dbeta = alloc_f(c);
    /* channels with different means and spreads */
    for (size_t i = 0; i < count; i++) {
        size_t ch = i / (size_t)sh.s % c;
        k->x[i] = (float)(ch % 5) - 2.0f + (0.5f + (float)(ch % 3)) * vr_rng_normal(&r);
    }
    tu_fill(k->dy, count, &r, -1.0f, 1.0f);
    tu_fill(k->gamma, c, &r, 0.5f, 1.5f);
    tu_fill(k->beta, c, &r, -0.5f, 0.5f);
    tu_fill(k->rm, c, &r, -1.0f, 1.0f);
    tu_fill(k->rv, c, &r, 0.5f, 2.0f);
    /* gradients of parameters accumulate: start from non-zero values */
    tu_fill(k->dgamma, c, &r, -1.0f, 1.0f);
    tu_fill(k->dbeta, c, &r, -1.0f, 1.0f);
    /* outputs that are overwritten start as garbage */
    tu_fill(k->dx, count, &r, 100.0f, 200.0f);
    if (has_res) {
        k->res = alloc_f(count);
        k->dres = alloc_f(count);
        tu_fill(k->res, count, &r, -1.0f, 1.0f);
        tu_fill(k->dres, count, &r, 100.0f, 200.0f);
    }
}

static void case_free(bn_case *k)
{
    float *bufs[] = {k->x, k->res, k->y, k->dy, k->dx, k->dres, k->gamma, k->beta, k->mean,
                     k->invstd, k->rm, k->rv, k->dgamma, k->dbeta};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static float *copy_f(const float *src, size_t count)
{
    float *p = alloc_f(count);
    memcpy(p, src, count * sizeof *p);
    return p;
}

static vr_status run_train(bn_case *k)
{
    return k->be->bn_forward_train(k->be, k->sync, k->n, k->c, k->s, k->x, k->gamma, k->beta, k->res,
                                   k->relu, k->y, k->mean, k->invstd, k->rm, k->rv, MOMENTUM, EPS);
}

static vr_status run_eval(bn_case *k)
{
    return k->be->bn_forward_eval(k->be, k->n, k->c, k->s, k->x, k->gamma, k->beta, k->res,
                                  k->relu, k->y, k->rm, k->rv, EPS);
}

static vr_status run_backward(bn_case *k)
{
    return k->be->bn_backward(k->be, k->sync, k->n, k->c, k->s, k->dy, k->relu ? k->y : NULL, k->x,
                              k->gamma, k->mean, k->invstd, k->dx, k->dgamma, k->dbeta, k->dres);
}

static size_t at(const bn_case *k, int i, int ch, int j)
{
    return ((size_t)i * k->c + ch) * k->s + j;
}

/* The definition, in double: two-pass batch statistics (train) or the running ones (eval).
 * In training rm, rv are updated in place; y, mean, invstd are written. */
static void ref_forward(const bn_case *k, int train, float *y, float *mean, float *invstd,
                        float *rm, float *rv)
{
    const double m = (double)k->n * k->s;
    for (int ch = 0; ch < k->c; ch++) {
        double mu = 0.0, var = 0.0;
        if (train) {
            for (int i = 0; i < k->n; i++)
                for (int j = 0; j < k->s; j++) mu += k->x[at(k, i, ch, j)];
            mu /= m;
            for (int i = 0; i < k->n; i++)
                for (int j = 0; j < k->s; j++) {
                    double d = k->x[at(k, i, ch, j)] - mu;
                    var += d * d;
                }
            var /= m;
            mean[ch] = (float)mu;
            invstd[ch] = (float)(1.0 / sqrt(var + (double)EPS));
            const double mom = MOMENTUM;
            rm[ch] = (float)((1.0 - mom) * rm[ch] + mom * mu);
            rv[ch] = (float)((1.0 - mom) * rv[ch] + mom * var * m / (m - 1.0)); /* unbiased */
        } else {
            mu = rm[ch];
            var = rv[ch];
        }
        double is = 1.0 / sqrt(var + (double)EPS);
        for (int i = 0; i < k->n; i++)
            for (int j = 0; j < k->s; j++) {
                size_t o = at(k, i, ch, j);
                double v = k->gamma[ch] * (k->x[o] - mu) * is + k->beta[ch];
                if (k->res) v += k->res[o];
                if (k->relu && v < 0.0) v = 0.0;
                y[o] = (float)v;
            }
    }
}

/* The textbook backward in double, from the kernel's saved mean and invstd; dgamma, dbeta +=. */
static void ref_backward(const bn_case *k, float *dx, float *dgamma, float *dbeta, float *dres)
{
    const double m = (double)k->n * k->s;
    for (int ch = 0; ch < k->c; ch++) {
        double sg = 0.0, sgx = 0.0, is = k->invstd[ch];
        for (int i = 0; i < k->n; i++)
            for (int j = 0; j < k->s; j++) {
                size_t o = at(k, i, ch, j);
                double g = k->relu && !(k->y[o] > 0.0f) ? 0.0 : k->dy[o];
                sg += g;
                sgx += g * (k->x[o] - (double)k->mean[ch]) * is;
                if (dres) dres[o] = (float)g;
            }
        dgamma[ch] += (float)sgx;
        dbeta[ch] += (float)sg;
        for (int i = 0; i < k->n; i++)
            for (int j = 0; j < k->s; j++) {
                size_t o = at(k, i, ch, j);
                double g = k->relu && !(k->y[o] > 0.0f) ? 0.0 : k->dy[o];
                double xhat = (k->x[o] - (double)k->mean[ch]) * is;
                dx[o] = (float)(k->gamma[ch] * is / m * (m * g - sg - xhat * sgx));
            }
    }
}

static const char *fusion_name(int has_res, int relu)
{
    static const char *names[2][2] = {{"plain", "relu"}, {"residual", "residual+relu"}};
    return names[has_res][relu];
}

static void test_forward_train(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (int si = 0; si < NSHAPES; si++)
        for (int f = 0; f < 4; f++) {
            bn_case k;
            case_init(&k, be, shapes[si], f >> 1, f & 1, 100 + si * 4 + f);
            size_t c = (size_t)k.c;
            float *y = alloc_f(k.count), *mean = alloc_f(c), *invstd = alloc_f(c);
            float *rm = copy_f(k.rm, c), *rv = copy_f(k.rv, c);
            ref_forward(&k, 1, y, mean, invstd, rm, rv);
            TU_OK(run_train(&k));
            char what[96];
            snprintf(what, sizeof what, "train (%d,%d,%d) %s", k.n, k.c, k.s,
                     fusion_name(f >> 1, f & 1));
            CU_ASSERT(tu_close(k.y, y, k.count, 1e-5, 1e-5, what));
            CU_ASSERT(tu_close(k.mean, mean, c, 1e-6, 1e-6, "saved mean"));
            CU_ASSERT(tu_close(k.invstd, invstd, c, 0.0, 1e-6, "saved invstd"));
            CU_ASSERT(tu_close(k.rm, rm, c, 1e-6, 1e-6, "running mean"));
            CU_ASSERT(tu_close(k.rv, rv, c, 1e-6, 1e-6, "running var"));
            free(y), free(mean), free(invstd), free(rm), free(rv);
            case_free(&k);
        }
    vr_backend_destroy(be);
}

/* A channel whose mean is 1e5 times its spread: sums of squares in float, or x*alpha +
 * (beta - mean*alpha), would lose most digits of the variance or of y. */
static void test_forward_train_large_mean(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    const shape big[] = {{64, 2, 1024}, {4096, 3, 1}};
    for (int si = 0; si < 2; si++) {
        bn_case k;
        case_init(&k, be, big[si], 0, 0, 7 + si);
        vr_rng r;
        vr_rng_seed(&r, 11);
        for (size_t i = 0; i < k.count; i++) k.x[i] = 1000.0f + 0.01f * vr_rng_normal(&r);
        size_t c = (size_t)k.c;
        float *y = alloc_f(k.count), *mean = alloc_f(c), *invstd = alloc_f(c);
        float *rm = copy_f(k.rm, c), *rv = copy_f(k.rv, c);
        ref_forward(&k, 1, y, mean, invstd, rm, rv);
        TU_OK(run_train(&k));
        CU_ASSERT(tu_close(k.mean, mean, c, 0.0, 1e-7, "large mean: mean"));
        CU_ASSERT(tu_close(k.invstd, invstd, c, 0.0, 1e-6, "large mean: invstd"));
        CU_ASSERT(tu_close(k.rv, rv, c, 0.0, 1e-6, "large mean: running var"));
        CU_ASSERT(tu_close(k.y, y, k.count, 1e-4, 1e-4, "large mean: y"));
        free(y), free(mean), free(invstd), free(rm), free(rv);
        case_free(&k);
    }
    vr_backend_destroy(be);
}

static void test_forward_eval(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (int si = 0; si < NSHAPES; si++)
        for (int f = 0; f < 4; f++) {
            bn_case k;
            case_init(&k, be, shapes[si], f >> 1, f & 1, 200 + si * 4 + f);
            float *y = alloc_f(k.count);
            ref_forward(&k, 0, y, NULL, NULL, k.rm, k.rv);
            TU_OK(run_eval(&k));
            char what[96];
            snprintf(what, sizeof what, "eval (%d,%d,%d) %s", k.n, k.c, k.s,
                     fusion_name(f >> 1, f & 1));
            CU_ASSERT(tu_close(k.y, y, k.count, 1e-5, 1e-5, what));
            free(y);
            case_free(&k);
        }
    vr_backend_destroy(be);
}

static void test_backward(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (int si = 0; si < NSHAPES; si++)
        for (int f = 0; f < 4; f++) {
            bn_case k;
            case_init(&k, be, shapes[si], f >> 1, f & 1, 300 + si * 4 + f);
            size_t c = (size_t)k.c;
            TU_OK(run_train(&k));
            float *dx = alloc_f(k.count), *dres = k.dres ? alloc_f(k.count) : NULL;
            float *dgamma = copy_f(k.dgamma, c), *dbeta = copy_f(k.dbeta, c);
            ref_backward(&k, dx, dgamma, dbeta, dres);
            TU_OK(run_backward(&k));
            char what[96];
            snprintf(what, sizeof what, "backward dx (%d,%d,%d) %s", k.n, k.c, k.s,
                     fusion_name(f >> 1, f & 1));
            CU_ASSERT(tu_close(k.dx, dx, k.count, 1e-5, 1e-4, what));
            CU_ASSERT(tu_close(k.dgamma, dgamma, c, 1e-5, 1e-5, "backward dgamma"));
            CU_ASSERT(tu_close(k.dbeta, dbeta, c, 1e-5, 1e-5, "backward dbeta"));
            if (dres) CU_ASSERT(tu_close(k.dres, dres, k.count, 0.0, 0.0, "backward dres"));
            free(dx), free(dres), free(dgamma), free(dbeta);
            case_free(&k);
        }
    vr_backend_destroy(be);
}

/* Moves every pre-activation at least 0.1 away from the ReLU's kink, so central differences
 * (which move it by about 0.03) do not straddle it: with a residual, by pushing the residual
 * 0.5 further from zero; without, by putting each channel's beta in the middle of the widest
 * gap between its values of gamma*xhat. */
static void avoid_kinks(bn_case *k)
{
    float *z = alloc_f(k->count), *mean = alloc_f((size_t)k->c), *invstd = alloc_f((size_t)k->c);
    float *rm = copy_f(k->rm, (size_t)k->c), *rv = copy_f(k->rv, (size_t)k->c);
    int relu = k->relu;
    k->relu = 0;
    ref_forward(k, 1, z, mean, invstd, rm, rv);
    k->relu = relu;
    if (k->res) {
        for (size_t i = 0; i < k->count; i++) k->res[i] += z[i] >= 0.0f ? 0.5f : -0.5f;
    } else {
        for (int ch = 0; ch < k->c; ch++) {
            /* z - beta = gamma*xhat; find the widest gap of it, sorted by insertion */
            int m = k->n * k->s, len = 0;
            float *v = alloc_f((size_t)m);
            for (int i = 0; i < k->n; i++)
                for (int j = 0; j < k->s; j++) {
                    float u = z[at(k, i, ch, j)] - k->beta[ch];
                    int p = len++;
                    for (; p > 0 && v[p - 1] > u; p--) v[p] = v[p - 1];
                    v[p] = u;
                }
            int best = 0;
            for (int p = 1; p + 1 < m; p++)
                if (v[p + 1] - v[p] > v[best + 1] - v[best]) best = p;
            k->beta[ch] = -0.5f * (v[best] + v[best + 1]);
            CU_ASSERT(v[best + 1] - v[best] > 0.2f);
            free(v);
        }
    }
    free(z), free(mean), free(invstd), free(rm), free(rv);
}

/* Central differences with steps of 1e-2 on data of unit scale: the float forward's rounding
 * (about 1e-7 in L) becomes 1e-5 in the difference, the curvature of the normalisation about
 * 1e-4 relative. */
#define FD_EPS 1e-2f
#define FD_ATOL 1e-3
#define FD_RTOL 1e-2

/* L = sum(y * r) through the kernel's training forward, accumulated in double */
static double loss_train(void *ctx)
{
    bn_case *k = ctx;
    CU_ASSERT_EQUAL(run_train(k), VR_OK);
    double l = 0.0;
    for (size_t i = 0; i < k->count; i++) l += (double)k->y[i] * k->dy[i];
    return l;
}

static void test_backward_finite_differences(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    const shape fd[] = {{2, 3, 1}, {3, 33, 1}, {2, 3, 5}, {3, 2, 7}};
    for (int si = 0; si < 4; si++)
        for (int f = 0; f < 4; f++) {
            bn_case k;
            case_init(&k, be, fd[si], f >> 1, f & 1, 400 + si * 4 + f);
            if (k.relu) avoid_kinks(&k);
            size_t c = (size_t)k.c;
            memset(k.dgamma, 0, c * sizeof *k.dgamma);
            memset(k.dbeta, 0, c * sizeof *k.dbeta);
            TU_OK(run_train(&k));
            TU_OK(run_backward(&k)); /* dy plays r: dL/dy = r */
            char what[96];
            const char *fu = fusion_name(f >> 1, f & 1);
            snprintf(what, sizeof what, "fd dx (%d,%d,%d) %s", k.n, k.c, k.s, fu);
            CU_ASSERT(tu_fd_check(loss_train, &k, k.x, k.count, k.dx, 24, FD_EPS, FD_ATOL,
                                  FD_RTOL, what));
            snprintf(what, sizeof what, "fd dgamma (%d,%d,%d) %s", k.n, k.c, k.s, fu);
            CU_ASSERT(tu_fd_check(loss_train, &k, k.gamma, c, k.dgamma, 8, FD_EPS, FD_ATOL,
                                  FD_RTOL, what));
            snprintf(what, sizeof what, "fd dbeta (%d,%d,%d) %s", k.n, k.c, k.s, fu);
            CU_ASSERT(tu_fd_check(loss_train, &k, k.beta, c, k.dbeta, 8, FD_EPS, FD_ATOL,
                                  FD_RTOL, what));
            if (k.res) {
                snprintf(what, sizeof what, "fd dres (%d,%d,%d) %s", k.n, k.c, k.s, fu);
                CU_ASSERT(tu_fd_check(loss_train, &k, k.res, k.count, k.dres, 24, FD_EPS, FD_ATOL,
                                      FD_RTOL, what));
            }
            case_free(&k);
        }
    vr_backend_destroy(be);
}

/* Every channel is reduced in one order whatever the thread count: 1 and 2 threads agree bit
 * for bit on every output. */
static void test_threads_identical(void)
{
    vr_backend *be[2];
    TU_OK(vr_cpu_backend_create(1, &be[0]));
    TU_OK(vr_cpu_backend_create(2, &be[1]));
    const shape sh[] = {{7, 600, 1}, {19, 40, 1}, {3, 4, 13}, {4, 9, 67}};
    for (int si = 0; si < 4; si++)
        for (int f = 0; f < 4; f++) {
            bn_case k[2];
            for (int t = 0; t < 2; t++) {
                case_init(&k[t], be[t], sh[si], f >> 1, f & 1, 500 + si * 4 + f);
                TU_OK(run_train(&k[t]));
                TU_OK(run_backward(&k[t]));
            }
            size_t n = k[0].count, c = (size_t)k[0].c;
            CU_ASSERT(memcmp(k[0].y, k[1].y, n * sizeof(float)) == 0);
            CU_ASSERT(memcmp(k[0].mean, k[1].mean, c * sizeof(float)) == 0);
            CU_ASSERT(memcmp(k[0].invstd, k[1].invstd, c * sizeof(float)) == 0);
            CU_ASSERT(memcmp(k[0].rm, k[1].rm, c * sizeof(float)) == 0);
            CU_ASSERT(memcmp(k[0].rv, k[1].rv, c * sizeof(float)) == 0);
            CU_ASSERT(memcmp(k[0].dx, k[1].dx, n * sizeof(float)) == 0);
            CU_ASSERT(memcmp(k[0].dgamma, k[1].dgamma, c * sizeof(float)) == 0);
            CU_ASSERT(memcmp(k[0].dbeta, k[1].dbeta, c * sizeof(float)) == 0);
            if (k[0].dres) CU_ASSERT(memcmp(k[0].dres, k[1].dres, n * sizeof(float)) == 0);
            for (int t = 0; t < 2; t++) TU_OK(run_eval(&k[t]));
            CU_ASSERT(memcmp(k[0].y, k[1].y, n * sizeof(float)) == 0);
            for (int t = 0; t < 2; t++) case_free(&k[t]);
        }
    vr_backend_destroy(be[0]);
    vr_backend_destroy(be[1]);
}

/* SyncBN: `ranks` threads stand for the ranks of a data-parallel run, each with its own CPU
 * backend and rows [r*h, (r+1)*h) of one batch, exchanging their statistics through the hook
 * (a shared slot per rank between two barriers). */
typedef struct fake_comm {
    int ranks;
    size_t count;               /* doubles per rank of the current exchange */
    double *slots;              /* (ranks, 2*C max) */
    pthread_barrier_t bar;
} fake_comm;

typedef struct fake_rank {
    fake_comm *fc;
    int rank;
    vr_bn_sync sync;
    bn_case k;
    vr_status train, backward;
} fake_rank;

static void fake_post(fake_rank *r, const double *mine, size_t count)
{
    memcpy(r->fc->slots + (size_t)r->rank * count, mine, count * sizeof *mine);
    pthread_barrier_wait(&r->fc->bar);
}

static vr_status fake_gather(void *ctx, const double *mine, size_t count, double *all)
{
    fake_rank *r = ctx;
    fake_post(r, mine, count);
    memcpy(all, r->fc->slots, (size_t)r->fc->ranks * count * sizeof *all);
    pthread_barrier_wait(&r->fc->bar);
    return VR_OK;
}

static vr_status fake_reduce(void *ctx, double *sums, size_t count)
{
    fake_rank *r = ctx;
    fake_post(r, sums, count);
    for (size_t i = 0; i < count; i++) {
        double v = 0.0;
        for (int q = 0; q < r->fc->ranks; q++) v += r->fc->slots[(size_t)q * count + i];
        sums[i] = v;
    }
    pthread_barrier_wait(&r->fc->bar);
    return VR_OK;
}

static void *fake_rank_run(void *arg)
{
    fake_rank *r = arg;
    r->train = run_train(&r->k);
    r->backward = run_backward(&r->k);
    return NULL;
}

/* rows [i0, i0 + n) of a (N,C,S) array, or NULL */
static float *rows_of(const float *a, int i0, int n, const bn_case *full)
{
    if (!a) return NULL;
    size_t row = (size_t)full->c * full->s;
    return copy_f(a + (size_t)i0 * row, (size_t)n * row);
}

static int close_rows(const float *got, const float *ref, size_t count, const char *what)
{
    return tu_close(got, ref, count, 2e-5, 2e-5, what);
}

/* ranks processes of h rows each with SyncBN equal one process holding all ranks*h rows:
 * outputs, saved and running statistics, dx and dres row for row; dgamma and dbeta summed over
 * the ranks (as the gradient all-reduce does). Tolerance |d| <= 2e-5 + 2e-5*|ref| (the
 * statistics are merged in another order, in double). */
static void test_sync_ranks(void)
{
    const shape sh[] = {{2, 3, 1}, {3, 37, 1}, {4, 600, 1}, {19, 40, 1}, {1, 5, 7}, {3, 4, 13},
                        {2, 3, 67}};
    vr_backend *be_full;
    TU_OK(vr_cpu_backend_create(2, &be_full));
    for (int ranks = 2; ranks <= 3; ranks++)
        for (int si = 0; si < 7; si++)
            for (int f = 0; f < 4; f++) {
                const int h = sh[si].n;
                bn_case full;
                case_init(&full, be_full, (shape){h * ranks, sh[si].c, sh[si].s}, f >> 1, f & 1,
                          700 + si * 4 + f);
                size_t c = (size_t)full.c, row = c * (size_t)full.s;
                memset(full.dgamma, 0, c * sizeof(float));
                memset(full.dbeta, 0, c * sizeof(float));
                fake_comm fc = {.ranks = ranks, .slots = calloc((size_t)ranks * 2 * c, sizeof(double))};
                pthread_barrier_init(&fc.bar, NULL, (unsigned)ranks);
                fake_rank rk[3];
                pthread_t th[3];
                for (int r = 0; r < ranks; r++) {
                    fake_rank *q = &rk[r];
                    *q = (fake_rank){.fc = &fc, .rank = r};
                    q->sync = (vr_bn_sync){.ctx = q, .ranks = ranks, .gather = fake_gather,
                                           .reduce = fake_reduce};
                    TU_OK(vr_cpu_backend_create(1, &q->k.be));
                    bn_case *k = &q->k;
                    k->n = h, k->c = full.c, k->s = full.s, k->relu = full.relu;
                    k->count = (size_t)h * row;
                    k->sync = &q->sync;
                    k->x = rows_of(full.x, r * h, h, &full);
                    k->dy = rows_of(full.dy, r * h, h, &full);
                    k->res = rows_of(full.res, r * h, h, &full);
                    k->dres = rows_of(full.dres, r * h, h, &full);
                    k->y = alloc_f(k->count);
                    k->dx = alloc_f(k->count);
                    k->gamma = copy_f(full.gamma, c);
                    k->beta = copy_f(full.beta, c);
                    k->rm = copy_f(full.rm, c);
                    k->rv = copy_f(full.rv, c);
                    k->mean = alloc_f(c);
                    k->invstd = alloc_f(c);
                    k->dgamma = alloc_f(c);
                    k->dbeta = alloc_f(c);
                }
                for (int r = 0; r < ranks; r++) pthread_create(&th[r], NULL, fake_rank_run, &rk[r]);
                for (int r = 0; r < ranks; r++) pthread_join(th[r], NULL);
                TU_OK(run_train(&full));
                TU_OK(run_backward(&full));
                char what[128];
                float *dg = alloc_f(c), *db = alloc_f(c);
                for (int r = 0; r < ranks; r++) {
                    bn_case *k = &rk[r].k;
                    CU_ASSERT_EQUAL(rk[r].train, VR_OK);
                    CU_ASSERT_EQUAL(rk[r].backward, VR_OK);
                    snprintf(what, sizeof what, "sync %d ranks (%d,%d,%d) %s rank %d", ranks, h,
                             k->c, k->s, fusion_name(f >> 1, f & 1), r);
                    size_t o = (size_t)r * h * row;
                    CU_ASSERT(close_rows(k->y, full.y + o, k->count, what));
                    CU_ASSERT(close_rows(k->dx, full.dx + o, k->count, what));
                    if (k->dres) CU_ASSERT(close_rows(k->dres, full.dres + o, k->count, what));
                    CU_ASSERT(close_rows(k->mean, full.mean, c, what));
                    CU_ASSERT(close_rows(k->invstd, full.invstd, c, what));
                    CU_ASSERT(close_rows(k->rm, full.rm, c, what));
                    CU_ASSERT(close_rows(k->rv, full.rv, c, what));
                    for (size_t j = 0; j < c; j++) {
                        dg[j] += k->dgamma[j];
                        db[j] += k->dbeta[j];
                    }
                }
                CU_ASSERT(close_rows(dg, full.dgamma, c, "dgamma summed over ranks"));
                CU_ASSERT(close_rows(db, full.dbeta, c, "dbeta summed over ranks"));
                free(dg);
                free(db);
                for (int r = 0; r < ranks; r++) {
                    vr_backend_destroy(rk[r].k.be);
                    case_free(&rk[r].k);
                }
                pthread_barrier_destroy(&fc.bar);
                free(fc.slots);
                case_free(&full);
            }
    vr_backend_destroy(be_full);
}

static void test_bad_shapes(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(1, &be));
    float v[4] = {1, 2, 3, 4}, g[2] = {1, 1}, b[2] = {0, 0}, m[2], is[2], rm[2] = {0, 0},
          rv[2] = {1, 1}, y[4];
    /* one value per channel cannot be normalised with batch statistics (as PyTorch) */
    CU_ASSERT_EQUAL(be->bn_forward_train(be, NULL, 1, 2, 1, v, g, b, NULL, 0, y, m, is, rm, rv, MOMENTUM,
                                         EPS), VR_ERR_SHAPE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "batchnorm"));
    CU_ASSERT_EQUAL(be->bn_forward_eval(be, 0, 2, 1, v, g, b, NULL, 0, y, rm, rv, EPS),
                    VR_ERR_SHAPE);
    /* but evaluation of a single sample is fine */
    TU_OK(be->bn_forward_eval(be, 1, 2, 1, v, g, b, NULL, 0, y, rm, rv, EPS));
    vr_backend_destroy(be);
}

int main(void)
{
    static const tu_test tests[] = {
        {"forward train vs reference, all fusions", test_forward_train},
        {"forward train keeps precision with a large mean", test_forward_train_large_mean},
        {"forward eval vs reference, all fusions", test_forward_eval},
        {"backward vs reference, all fusions", test_backward},
        {"backward vs finite differences", test_backward_finite_differences},
        {"1 and 2 threads give identical bits", test_threads_identical},
        {"SyncBN over 2 and 3 ranks equals one process", test_sync_ranks},
        {"bad shapes", test_bad_shapes},
        {NULL, NULL},
    };
    return tu_main("batchnorm", tests);
}
