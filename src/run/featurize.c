/* Representations and embeddings of a split in evaluation mode (see featurize.h). */
#include "featurize.h"

#include <string.h>

vr_status vr_features_plan(vr_model *m, const vr_source *s, int batch)
{
    int n[VR_MAX_BRANCHES], h[VR_MAX_BRANCHES], w[VR_MAX_BRANCHES];
    for (int b = 0; b < m->nbranches; b++) {
        n[b] = batch;
        h[b] = s->in_h[b];
        w[b] = s->in_w[b];
    }
    return vr_model_plan(m, n, h, w);
}

/* spec (N, M, T) -> out (N, M): each band's mean over the frames. */
static void mean_over_time(const float *spec, int n, int m, int t, float *out)
{
    for (int i = 0; i < n * m; i++) {
        double sum = 0;
        for (int j = 0; j < t; j++) sum += spec[(size_t)i * t + j];
        out[i] = (float)(sum / t);
    }
}

/* Removes the rows i with bad[i] from every matrix of f and from its labels, in order. */
static void drop_bad_rows(vr_features *f, const unsigned char *bad)
{
    int kept = 0;
    for (int i = 0; i < f->n; i++) {
        if (bad[i]) continue;
        if (kept != i) {
            for (int b = 0; b < f->nbranches; b++) {
                memcpy(f->repr[b] + (size_t)kept * f->repr_dim[b], f->repr[b] + (size_t)i * f->repr_dim[b],
                       (size_t)f->repr_dim[b] * sizeof(float));
                if (f->emb[b])
                    memcpy(f->emb[b] + (size_t)kept * f->emb_dim[b], f->emb[b] + (size_t)i * f->emb_dim[b],
                           (size_t)f->emb_dim[b] * sizeof(float));
            }
            f->labels[kept] = f->labels[i];
        }
        kept++;
    }
    f->dropped = f->n - kept;
    f->n = kept;
}

void vr_features_free(vr_features *f)
{
    vr_free(f->labels);
    for (int b = 0; b < VR_MAX_BRANCHES; b++) {
        vr_free(f->repr[b]);
        vr_free(f->emb[b]);
    }
    vr_free(f->logmel);
    memset(f, 0, sizeof *f);
}

vr_status vr_features_compute(vr_model *m, vr_source *s, const vr_recipe *r, int n, int embeddings,
                              vr_features *f)
{
    if (n <= 0 || n > s->n) n = s->n;
    memset(f, 0, sizeof *f);
    vr_backend *be = m->be;
    int nb = m->nbranches, bn = m->branch[0].plan_n;
    for (int b = 0; b < nb; b++) {
        const vr_branch *br = &m->branch[b];
        if (br->plan_n < 1 || br->plan_h != s->in_h[b] || br->plan_w != s->in_w[b])
            return vr_fail(VR_ERR_SHAPE, "features", "branch %d is planned for %dx%d inputs, the data gives %dx%d",
                           b, br->plan_h, br->plan_w, s->in_h[b], s->in_w[b]);
        if (br->plan_n < bn) bn = br->plan_n;
    }
    f->n = n;
    f->nbranches = nb;
    float *host[VR_MAX_BRANCHES] = {0}, *dev[VR_MAX_BRANCHES] = {0};
    vr_status st = VR_OK;
    for (int b = 0; b < nb && st == VR_OK; b++) {
        const vr_branch *br = &m->branch[b];
        size_t in = (size_t)bn * s->in_c[b] * s->in_h[b] * s->in_w[b];
        f->repr_dim[b] = br->enc.out_dim;
        f->emb_dim[b] = br->has_expander ? br->exp.dims[br->exp.nlayers] : 0;
        f->repr[b] = vr_alloc((size_t)n * f->repr_dim[b] * sizeof(float));
        if (embeddings && br->has_expander) f->emb[b] = vr_alloc((size_t)n * f->emb_dim[b] * sizeof(float));
        host[b] = vr_alloc(in * sizeof(float));
        if (!f->repr[b] || !host[b] || (embeddings && br->has_expander && !f->emb[b]))
            st = vr_fail(VR_ERR_NOMEM, "features", "cannot hold the features of %d samples", n);
        else
            st = be->device == VR_DEVICE_CPU ? (dev[b] = host[b], VR_OK) : be->alloc(be, in * sizeof(float), &dev[b]);
    }
    if (st == VR_OK && s->kind == VR_DATA_AUDIO) {
        f->logmel_dim = s->in_h[1];
        if (!(f->logmel = vr_alloc((size_t)n * f->logmel_dim * sizeof(float))))
            st = vr_fail(VR_ERR_NOMEM, "features", "cannot hold the log-mel means of %d clips", n);
    }
    for (int i0 = 0; i0 < f->n && st == VR_OK; i0 += bn) {
        int nb_i = f->n - i0 < bn ? f->n - i0 : bn;
        st = vr_source_eval_inputs(s, r, i0, nb_i, host);
        if (st == VR_OK && f->logmel) mean_over_time(host[1], nb_i, s->in_h[1], s->in_w[1], f->logmel + (size_t)i0 * f->logmel_dim);
        for (int b = 0; b < nb && st == VR_OK; b++) {
            vr_branch *br = &m->branch[b];
            if (dev[b] != host[b])
                st = be->upload(be, dev[b], host[b], (size_t)nb_i * s->in_c[b] * s->in_h[b] * s->in_w[b]);
            vr_ctx ctx = vr_model_ctx(m, nb_i, 1, 0);
            if (st == VR_OK) st = vr_resnet_forward(&br->enc, &ctx, dev[b]);
            const float *repr = ctx.ws + br->enc.repr;
            if (st == VR_OK)
                st = be->download(be, f->repr[b] + (size_t)i0 * f->repr_dim[b], repr, (size_t)nb_i * f->repr_dim[b]);
            if (st == VR_OK && f->emb[b]) {
                st = vr_expander_forward(&br->exp, &ctx, repr);
                if (st == VR_OK)
                    st = be->download(be, f->emb[b] + (size_t)i0 * f->emb_dim[b], vr_expander_output(&br->exp, &ctx),
                                      (size_t)nb_i * f->emb_dim[b]);
            }
        }
    }
    for (int b = 0; b < nb; b++) {
        if (dev[b] && dev[b] != host[b]) be->free(be, dev[b]);
        vr_free(host[b]);
    }
    if (st == VR_OK && !(f->labels = vr_alloc((size_t)n * sizeof(int))))
        st = vr_fail(VR_ERR_NOMEM, "features", "cannot hold %d labels", n);
    if (st == VR_OK) {
        memcpy(f->labels, s->labels, (size_t)n * sizeof(int));
        if (s->kind == VR_DATA_FOLDER) drop_bad_rows(f, s->folder.bad);
    }
    if (st != VR_OK) vr_features_free(f);
    return st;
}
