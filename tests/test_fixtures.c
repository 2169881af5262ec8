/* Every CPU kernel against PyTorch: the op fixtures of tests/reference/make_fixtures.py
 * (inputs in float32, reference outputs and gradients computed in float64 and stored float32).
 *
 * Tolerance for every comparison: |got - ref| <= atol + rtol*|ref| with rtol = 1e-4 and
 * atol = 1e-5 * max|ref| of that tensor (a float32 kernel differs from the float64 reference by
 * a few ulps of the tensor's scale; a wrong index or formula is off by order one). */
#include <cjson/cJSON.h>

#include "testutil.h"

#define RTOL 1e-4
#define ATOL_SCALE 1e-5

static cJSON *case_config(const vr_safetensors *st, const char *key)
{
    const char *text = vr_st_metadata(st, key);
    return text ? cJSON_Parse(text) : NULL;
}

static int meta_int(const vr_safetensors *st, const char *key)
{
    const char *t = vr_st_metadata(st, key);
    return t ? atoi(t) : 0;
}

static int jint(const cJSON *o, const char *k) { return cJSON_GetObjectItem(o, k)->valueint; }
static double jnum(const cJSON *o, const char *k) { return cJSON_GetObjectItem(o, k)->valuedouble; }
static int jidx(const cJSON *o, const char *k, int i) { return cJSON_GetArrayItem(cJSON_GetObjectItem(o, k), i)->valueint; }

/* The tensor "<prefix>.<name>" as a fresh float array (NULL when absent); count in *n. */
static float *get(const vr_safetensors *st, const char *prefix, const char *name, size_t *n)
{
    char full[256];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    const vr_st_entry *e = vr_st_find(st, full);
    if (!e) return NULL;
    size_t count = (e->end - e->begin) / sizeof(float);
    float *out = vr_alloc((count + 1) * sizeof(float));
    if (vr_st_read(st, full, VR_DTYPE_F32, out, count)) {
        vr_free(out);
        return NULL;
    }
    if (n) *n = count;
    return out;
}

static int match(const float *got, const float *ref, size_t n, const char *prefix, const char *what)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(ref[i]));
    char label[128];
    snprintf(label, sizeof label, "%s.%s", prefix, what);
    return tu_close(got, ref, n, ATOL_SCALE * m, RTOL, label);
}

/* As match, with the absolute tolerance scaled by `scale` instead of the result's size: for
 * outputs that are small differences of large terms (BatchNorm's dx with two samples is zero in
 * exact arithmetic, and its float32 value is rounding of the terms gamma*invstd*dy). */
static int match_terms(const float *got, const float *ref, size_t n, double scale,
                       const char *prefix, const char *what)
{
    char label[128];
    snprintf(label, sizeof label, "%s.%s", prefix, what);
    return tu_close(got, ref, n, ATOL_SCALE * scale, RTOL, label);
}

static float max_abs(const float *x, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

static vr_backend *backend(void)
{
    vr_backend *be = NULL;
    vr_status s = vr_cpu_backend_create(2, &be);
    CU_ASSERT_EQUAL_FATAL(s, VR_OK);
    return be;
}

static void test_conv(void)
{
    vr_safetensors *st = tu_open_fixture("conv.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_backend *be = backend();
    int count = meta_int(st, "count");
    CU_ASSERT(count >= 10);
    for (int i = 0; i < count; i++) {
        char p[32];
        snprintf(p, sizeof p, "conv%d", i);
        cJSON *c = case_config(st, p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        int rank = jint(c, "rank"), bias = cJSON_IsTrue(cJSON_GetObjectItem(c, "bias"));
        int k[2], s[2], pad[2];
        for (int d = 0; d < rank; d++) {
            k[d] = jidx(c, "k", d);
            s[d] = jidx(c, "stride", d);
            pad[d] = jidx(c, "pad", d);
        }
        vr_window w;
        TU_OK(vr_window_init(&w, rank, jint(c, "n"), jint(c, "cin"), jint(c, "cout"),
                             rank == 2 ? jidx(c, "in", 0) : 1, jidx(c, "in", rank - 1), k, s, pad));
        size_t nx = 0, nw = 0, ny = 0;
        float *x = get(st, p, "x", &nx), *wt = get(st, p, "w", &nw), *b = get(st, p, "b", NULL);
        float *y = get(st, p, "y", &ny), *dy = get(st, p, "dy", NULL), *dx = get(st, p, "dx", NULL);
        float *dw = get(st, p, "dw", NULL), *db = get(st, p, "db", NULL);
        CU_ASSERT_EQUAL(ny, (size_t)w.n * w.c_out * w.h_out * w.w_out);
        CU_ASSERT_EQUAL(bias, b != NULL);
        float *gy = vr_alloc(ny * 4), *gdx = vr_alloc(nx * 4), *gdw = vr_alloc(nw * 4);
        float *gdb = vr_alloc((size_t)w.c_out * 4);
        TU_OK(be->conv_forward(be, &w, x, wt, b, gy));
        CU_ASSERT(match(gy, y, ny, p, "y"));
        TU_OK(be->conv_backward_data(be, &w, dy, wt, gdx));
        CU_ASSERT(match(gdx, dx, nx, p, "dx"));
        TU_OK(be->conv_backward_weight(be, &w, x, dy, gdw, bias ? gdb : NULL));
        CU_ASSERT(match(gdw, dw, nw, p, "dw"));
        if (bias) CU_ASSERT(match(gdb, db, (size_t)w.c_out, p, "db"));
        vr_free(x); vr_free(wt); vr_free(b); vr_free(y); vr_free(dy); vr_free(dx); vr_free(dw);
        vr_free(db); vr_free(gy); vr_free(gdx); vr_free(gdw); vr_free(gdb);
        cJSON_Delete(c);
    }
    vr_backend_destroy(be);
    vr_st_close(st);
}

static void test_pool(void)
{
    vr_safetensors *st = tu_open_fixture("pool.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_backend *be = backend();
    int mcount = meta_int(st, "maxpool_count"), acount = meta_int(st, "avgpool_count");
    CU_ASSERT(mcount >= 4 && acount >= 3);
    for (int i = 0; i < mcount; i++) {
        char p[32];
        snprintf(p, sizeof p, "maxpool%d", i);
        cJSON *c = case_config(st, p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        int rank = jint(c, "rank"), k[2], s[2], pad[2];
        for (int d = 0; d < rank; d++) {
            k[d] = jidx(c, "k", d);
            s[d] = jidx(c, "stride", d);
            pad[d] = jidx(c, "pad", d);
        }
        vr_window w;
        TU_OK(vr_window_init(&w, rank, jint(c, "n"), jint(c, "c"), jint(c, "c"),
                             rank == 2 ? jidx(c, "in", 0) : 1, jidx(c, "in", rank - 1), k, s, pad));
        size_t nx = 0, ny = 0;
        float *x = get(st, p, "x", &nx), *y = get(st, p, "y", &ny), *dy = get(st, p, "dy", NULL);
        float *dx = get(st, p, "dx", NULL);
        CU_ASSERT_EQUAL_FATAL(ny, (size_t)w.n * w.c_out * w.h_out * w.w_out);
        float *gy = vr_alloc(ny * 4), *gdx = vr_alloc(nx * 4);
        int32_t *arg = vr_alloc(ny * 4), *ref_arg = vr_alloc(ny * 4);
        char name[64];
        snprintf(name, sizeof name, "%s.argmax", p);
        TU_OK(vr_st_read(st, name, VR_DTYPE_I32, ref_arg, ny));
        TU_OK(be->maxpool_forward(be, &w, x, gy, arg));
        CU_ASSERT(match(gy, y, ny, p, "y"));
        CU_ASSERT_EQUAL(memcmp(arg, ref_arg, ny * 4), 0);
        TU_OK(be->maxpool_backward(be, &w, dy, arg, gdx));
        CU_ASSERT(match(gdx, dx, nx, p, "dx"));
        vr_free(x); vr_free(y); vr_free(dy); vr_free(dx); vr_free(gy); vr_free(gdx);
        vr_free(arg); vr_free(ref_arg);
        cJSON_Delete(c);
    }
    for (int i = 0; i < acount; i++) {
        char p[32];
        snprintf(p, sizeof p, "avgpool%d", i);
        cJSON *c = case_config(st, p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        int n = jint(c, "n"), ch = jint(c, "c"), s = jint(c, "s");
        size_t nx = 0, ny = 0;
        float *x = get(st, p, "x", &nx), *y = get(st, p, "y", &ny), *dy = get(st, p, "dy", NULL);
        float *dx = get(st, p, "dx", NULL);
        float *gy = vr_alloc(ny * 4), *gdx = vr_alloc(nx * 4);
        TU_OK(be->avgpool_forward(be, n, ch, s, x, gy));
        CU_ASSERT(match(gy, y, ny, p, "y"));
        TU_OK(be->avgpool_backward(be, n, ch, s, dy, gdx));
        CU_ASSERT(match(gdx, dx, nx, p, "dx"));
        vr_free(x); vr_free(y); vr_free(dy); vr_free(dx); vr_free(gy); vr_free(gdx);
        cJSON_Delete(c);
    }
    vr_backend_destroy(be);
    vr_st_close(st);
}

static void test_batchnorm(void)
{
    vr_safetensors *st = tu_open_fixture("batchnorm.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_backend *be = backend();
    int count = meta_int(st, "count");
    CU_ASSERT(count >= 6);
    for (int i = 0; i < count; i++) {
        char p[32];
        snprintf(p, sizeof p, "bn%d", i);
        cJSON *c = case_config(st, p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        int n = jint(c, "n"), ch = jint(c, "c"), s = jint(c, "s"), relu = jint(c, "relu");
        float mom = (float)jnum(c, "momentum"), eps = (float)jnum(c, "eps");
        size_t nx = 0;
        float *x = get(st, p, "x", &nx), *gamma = get(st, p, "gamma", NULL);
        float *beta = get(st, p, "beta", NULL), *res = get(st, p, "residual", NULL);
        float *rm = get(st, p, "running_mean_in", NULL), *rv = get(st, p, "running_var_in", NULL);
        float *y = get(st, p, "y", NULL), *ye = get(st, p, "y_eval", NULL);
        float *rmo = get(st, p, "running_mean_out", NULL), *rvo = get(st, p, "running_var_out", NULL);
        float *dy = get(st, p, "dy", NULL), *dx = get(st, p, "dx", NULL);
        float *dg = get(st, p, "dgamma", NULL), *dbt = get(st, p, "dbeta", NULL);
        float *dres = get(st, p, "dres", NULL);
        CU_ASSERT_EQUAL(jint(c, "residual"), res != NULL);
        float *gy = vr_alloc(nx * 4), *gdx = vr_alloc(nx * 4), *gres = vr_alloc(nx * 4);
        float *stats = vr_alloc((size_t)ch * 8), *gdg = vr_alloc((size_t)ch * 4), *gdb = vr_alloc((size_t)ch * 4);
        float *grm = vr_alloc((size_t)ch * 4), *grv = vr_alloc((size_t)ch * 4);
        TU_OK(be->bn_forward_eval(be, n, ch, s, x, gamma, beta, res, relu, gy, rm, rv, eps));
        CU_ASSERT(match(gy, ye, nx, p, "y_eval"));
        memcpy(grm, rm, (size_t)ch * 4);
        memcpy(grv, rv, (size_t)ch * 4);
        TU_OK(be->bn_forward_train(be, NULL, n, ch, s, x, gamma, beta, res, relu, gy, stats, stats + ch,
                                   grm, grv, mom, eps));
        CU_ASSERT(match(gy, y, nx, p, "y"));
        CU_ASSERT(match(grm, rmo, (size_t)ch, p, "running_mean_out"));
        CU_ASSERT(match(grv, rvo, (size_t)ch, p, "running_var_out"));
        TU_OK(be->bn_backward(be, NULL, n, ch, s, dy, relu ? gy : NULL, x, gamma, stats, stats + ch, gdx,
                              gdg, gdb, res ? gres : NULL));
        double gain = 0; /* the largest gamma * invstd: dx is dy scaled by it, less two means */
        for (int k = 0; k < ch; k++) gain = fmax(gain, fabs(gamma[k] * stats[ch + k]));
        CU_ASSERT(match_terms(gdx, dx, nx, fmax(max_abs(dx, nx), gain * max_abs(dy, nx)), p, "dx"));
        CU_ASSERT(match(gdg, dg, (size_t)ch, p, "dgamma"));
        CU_ASSERT(match(gdb, dbt, (size_t)ch, p, "dbeta"));
        if (res) CU_ASSERT(match(gres, dres, nx, p, "dres"));
        float *all[] = {x, gamma, beta, res, rm, rv, y, ye, rmo, rvo, dy, dx, dg, dbt, dres,
                        gy, gdx, gres, stats, gdg, gdb, grm, grv};
        for (size_t k = 0; k < sizeof all / sizeof *all; k++) vr_free(all[k]);
        cJSON_Delete(c);
    }
    vr_backend_destroy(be);
    vr_st_close(st);
}

static void test_linear_relu(void)
{
    vr_safetensors *st = tu_open_fixture("linear.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_backend *be = backend();
    int count = meta_int(st, "count");
    CU_ASSERT(count >= 3);
    for (int i = 0; i < count; i++) {
        char p[32];
        snprintf(p, sizeof p, "linear%d", i);
        cJSON *c = case_config(st, p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        int n = jint(c, "n"), in = jint(c, "in"), out = jint(c, "out");
        size_t nx = 0, nw = 0, ny = 0;
        float *x = get(st, p, "x", &nx), *w = get(st, p, "w", &nw), *b = get(st, p, "b", NULL);
        float *y = get(st, p, "y", &ny), *dy = get(st, p, "dy", NULL), *dx = get(st, p, "dx", NULL);
        float *dw = get(st, p, "dw", NULL), *db = get(st, p, "db", NULL);
        float *gy = vr_alloc(ny * 4), *gdx = vr_alloc(nx * 4), *gdw = vr_alloc(nw * 4), *gdb = vr_alloc((size_t)out * 4);
        TU_OK(be->linear_forward(be, n, in, out, x, w, b, gy));
        CU_ASSERT(match(gy, y, ny, p, "y"));
        TU_OK(be->linear_backward(be, n, in, out, dy, x, w, gdx, gdw, b ? gdb : NULL));
        CU_ASSERT(match(gdx, dx, nx, p, "dx"));
        CU_ASSERT(match(gdw, dw, nw, p, "dw"));
        if (b) CU_ASSERT(match(gdb, db, (size_t)out, p, "db"));
        float *all[] = {x, w, b, y, dy, dx, dw, db, gy, gdx, gdw, gdb};
        for (size_t k = 0; k < sizeof all / sizeof *all; k++) vr_free(all[k]);
        cJSON_Delete(c);
    }
    vr_st_close(st);

    st = tu_open_fixture("elementwise.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    size_t n = 0;
    float *x = get(st, "relu0", "x", &n), *y = get(st, "relu0", "y", NULL);
    float *dy = get(st, "relu0", "dy", NULL), *dx = get(st, "relu0", "dx", NULL);
    float *gy = vr_alloc(n * 4), *gdx = vr_alloc(n * 4);
    TU_OK(be->relu_forward(be, n, x, gy));
    CU_ASSERT(match(gy, y, n, "relu0", "y"));
    TU_OK(be->relu_backward(be, n, dy, gy, gdx));
    CU_ASSERT(match(gdx, dx, n, "relu0", "dx"));
    vr_free(x); vr_free(y); vr_free(dy); vr_free(dx); vr_free(gy); vr_free(gdx);
    vr_st_close(st);
    vr_backend_destroy(be);
}

static void test_vicreg(void)
{
    vr_safetensors *st = tu_open_fixture("vicreg.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_backend *be = backend();
    int count = meta_int(st, "count");
    CU_ASSERT(count >= 5);
    for (int i = 0; i < count; i++) {
        char p[32];
        snprintf(p, sizeof p, "case%d", i);
        cJSON *c = case_config(st, p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        int n = jint(c, "n"), d = jint(c, "d");
        vr_vicreg_coeffs co = {(float)jnum(c, "sim"), (float)jnum(c, "std"), (float)jnum(c, "cov")};
        size_t nz = 0;
        float *z1 = get(st, p, "z1", &nz), *z2 = get(st, p, "z2", NULL);
        float *dz1 = get(st, p, "dz1", NULL), *dz2 = get(st, p, "dz2", NULL);
        float *g1 = vr_alloc(nz * 4), *g2 = vr_alloc(nz * 4);
        vr_vicreg_terms t;
        TU_OK(be->vicreg_loss(be, n, d, z1, z2, co, &t, g1, g2));
        const char *keys[] = {"loss", "invariance", "variance", "covariance"};
        double got[] = {t.loss, t.invariance, t.variance, t.covariance};
        for (int k = 0; k < 4; k++) {
            double ref = jnum(c, keys[k]);
            int ok = fabs(got[k] - ref) <= 1e-6 + RTOL * fabs(ref);
            if (!ok) fprintf(stderr, "\n  %s %s: got %.9g want %.9g\n", p, keys[k], got[k], ref);
            CU_ASSERT(ok);
        }
        CU_ASSERT(match(g1, dz1, nz, p, "dz1"));
        CU_ASSERT(match(g2, dz2, nz, p, "dz2"));
        vr_free(z1); vr_free(z2); vr_free(dz1); vr_free(dz2); vr_free(g1); vr_free(g2);
        cJSON_Delete(c);
    }
    vr_backend_destroy(be);
    vr_st_close(st);
}

/* Three updates of a weight (6,5) and a bias (6) from the reference optimisers: LARS as
 * facebookresearch/vicreg (bias excluded from decay and trust), torch SGD and AdamW (decay on
 * both, as torch applies it to every tensor of a group). */
static void test_optim(void)
{
    vr_safetensors *st = tu_open_fixture("optim.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_backend *be = backend();
    const char *names[] = {"lars", "lars_wd", "lars_zero", "sgd", "adamw"};
    for (int o = 0; o < 5; o++) {
        cJSON *c = case_config(st, names[o]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        float lr = (float)jnum(c, "lr"), wd = (float)jnum(c, "weight_decay");
        float *w = get(st, names[o], "w_init", NULL), *b = get(st, names[o], "b_init", NULL);
        float mw[30] = {0}, mb[6] = {0}, vw[30] = {0}, vb[6] = {0};
        for (int k = 0; k < 3; k++) {
            char gname[16], sname[16];
            snprintf(gname, sizeof gname, "w_g%d", k);
            float *gw = get(st, names[o], gname, NULL);
            gname[0] = 'b';
            float *gb = get(st, names[o], gname, NULL);
            if (o < 3) {
                float mom = (float)jnum(c, "momentum"), eta = (float)jnum(c, "eta");
                TU_OK(be->lars_step(be, 30, w, gw, mw, lr, wd, mom, eta, 1));
                TU_OK(be->lars_step(be, 6, b, gb, mb, lr, 0.0f, mom, eta, 0));
            } else if (o == 3) {
                float mom = (float)jnum(c, "momentum");
                TU_OK(be->sgd_step(be, 30, w, gw, mw, lr, wd, mom, k == 0));
                TU_OK(be->sgd_step(be, 6, b, gb, mb, lr, wd, mom, k == 0));
            } else {
                float b1 = (float)jnum(c, "beta1"), b2 = (float)jnum(c, "beta2"), eps = (float)jnum(c, "eps");
                TU_OK(be->adamw_step(be, 30, w, gw, mw, vw, lr, b1, b2, eps, wd, k + 1));
                TU_OK(be->adamw_step(be, 6, b, gb, mb, vb, lr, b1, b2, eps, wd, k + 1));
            }
            snprintf(sname, sizeof sname, "w_step%d", k);
            float *rw = get(st, names[o], sname, NULL);
            sname[0] = 'b';
            float *rb = get(st, names[o], sname, NULL);
            CU_ASSERT(match(w, rw, 30, names[o], sname));
            CU_ASSERT(match(b, rb, 6, names[o], sname));
            vr_free(gw); vr_free(gb); vr_free(rw); vr_free(rb);
        }
        vr_free(w); vr_free(b);
        cJSON_Delete(c);
    }
    vr_backend_destroy(be);
    vr_st_close(st);
}

int main(void)
{
    static const tu_test tests[] = {
        {"conv 1-D/2-D forward and backward", test_conv},
        {"max and average pool", test_pool},
        {"batch norm train/eval, fused residual and relu", test_batchnorm},
        {"linear and relu", test_linear_relu},
        {"vicreg loss", test_vicreg},
        {"lars, sgd, adamw", test_optim},
        {NULL, NULL},
    };
    return tu_main("fixtures", tests);
}
