/* The evaluation of a model on its recipe's data: frozen features of the training and test
 * splits (featurize.h), then per branch the weighted k-NN accuracy, and for an audio model the
 * cross-modal recall (a clip's waveform embedding finds the same clip among the test split's
 * spectrogram embeddings). Printed, and written as one JSON object. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "featurize.h"

static const char *branch_name(const vr_source *s, int b)
{
    return s->nbranches == 1 ? "image" : b == 0 ? "wave" : "spec";
}

/* Recall@k of row i of a (N, D) finding row i of b (N, D), both L2-normalised, ks ascending. */
static vr_status cross_modal(const float *a, const float *b, int n, int d, const int *ks, int nk,
                             double *recall)
{
    int kmax = ks[nk - 1] < n ? ks[nk - 1] : n;
    int *idx = vr_alloc((size_t)n * kmax * sizeof(int));
    float *sim = vr_alloc((size_t)n * kmax * sizeof(float));
    vr_status s = idx && sim ? vr_knn_search(b, n, a, n, d, kmax, idx, sim)
                             : vr_fail(VR_ERR_NOMEM, "eval", "cannot hold %d x %d neighbours", n, kmax);
    for (int j = 0; j < nk && s == VR_OK; j++) {
        int hits = 0, k = ks[j] < kmax ? ks[j] : kmax;
        for (int i = 0; i < n; i++)
            for (int t = 0; t < k; t++)
                if (idx[(size_t)i * kmax + t] == i) {
                    hits++;
                    break;
                }
        recall[j] = (double)hits / n;
    }
    vr_free(idx);
    vr_free(sim);
    return s;
}

static vr_status write_json(const char *path, cJSON *j)
{
    char *text = cJSON_PrintUnformatted(j);
    if (!text) return vr_fail(VR_ERR_NOMEM, "eval", "cannot format %s", path);
    char tmp[VR_RECIPE_PATH + 80];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    vr_status s = VR_OK;
    if (!f) s = vr_fail(VR_ERR_IO, "eval", "%s: cannot write", tmp);
    else {
        fputs(text, f);
        fputc('\n', f);
        if (fclose(f) != 0 || rename(tmp, path) != 0) s = vr_fail(VR_ERR_IO, "eval", "%s: write failed", path);
    }
    cJSON_free(text);
    return s;
}

int vr_cli_evaluate(const vr_recipe *r, vr_model *m, vr_source *train, const char *label, long step,
                    const char *json_path)
{
    double t0 = vr_cli_now();
    vr_source own = {0}, test = {0};
    vr_features ftr = {0}, fte = {0};
    vr_status s = VR_OK;
    if (!train) {
        s = vr_source_open(&own, r, VR_SPLIT_TRAIN, r->eval_train_limit);
        vr_cli_report_skipped(&own);
        train = &own;
    }
    if (s == VR_OK) {
        s = vr_source_open(&test, r, VR_SPLIT_TEST, r->eval_test_limit);
        vr_cli_report_skipped(&test);
    }
    int nt = train->n;
    if (r->eval_train_limit > 0 && r->eval_train_limit < nt) nt = r->eval_train_limit;
    if (s == VR_OK) s = vr_features_compute(m, train, r, nt, 0, &ftr);
    if (s == VR_OK) s = vr_features_compute(m, &test, r, 0, test.nbranches > 1, &fte);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", label);
    cJSON_AddNumberToObject(j, "step", (double)step);
    cJSON_AddNumberToObject(j, "train_samples", nt);
    cJSON_AddNumberToObject(j, "test_samples", test.n);
    cJSON_AddNumberToObject(j, "classes", train->nclasses);
    cJSON_AddNumberToObject(j, "k", r->eval_k);
    cJSON_AddNumberToObject(j, "temperature", r->eval_temperature);
    for (int b = 0; b < ftr.nbranches && s == VR_OK; b++) {
        vr_knn_config kc = {.k = r->eval_k, .temperature = r->eval_temperature};
        vr_knn_result res;
        s = vr_knn_evaluate(ftr.repr[b], train->labels, nt, fte.repr[b], test.labels, test.n, ftr.repr_dim[b], &kc, &res);
        if (s != VR_OK) break;
        const char *name = branch_name(train, b);
        printf("%s %-5s k-NN top-1 %6.2f%%  top-5 %6.2f%%  (k %d, %d test / %d train)\n", label, name,
               100.0 * res.top1, 100.0 * res.top5, r->eval_k, res.nqueries, res.ntrain);
        char key[64];
        snprintf(key, sizeof key, ftr.nbranches == 1 ? "top1" : "knn_top1_%s", name);
        cJSON_AddNumberToObject(j, key, res.top1);
        snprintf(key, sizeof key, ftr.nbranches == 1 ? "top5" : "knn_top5_%s", name);
        cJSON_AddNumberToObject(j, key, res.top5);
    }
    if (s == VR_OK && fte.nbranches == 2 && fte.emb[0] && fte.emb[1] && fte.emb_dim[0] == fte.emb_dim[1]) {
        static const int ks[] = {1, 5};
        double rec[2];
        vr_l2_normalise_rows(fte.emb[0], fte.n, fte.emb_dim[0]);
        vr_l2_normalise_rows(fte.emb[1], fte.n, fte.emb_dim[1]);
        s = cross_modal(fte.emb[0], fte.emb[1], fte.n, fte.emb_dim[0], ks, 2, rec);
        if (s == VR_OK) {
            printf("%s cross-modal recall@1 %6.2f%%  recall@5 %6.2f%%  (waveform -> spectrogram, %d test clips)\n",
                   label, 100.0 * rec[0], 100.0 * rec[1], fte.n);
            cJSON_AddNumberToObject(j, "xmodal_r1", rec[0]);
            cJSON_AddNumberToObject(j, "xmodal_r5", rec[1]);
        }
    }
    cJSON_AddNumberToObject(j, "seconds", vr_cli_now() - t0);
    fflush(stdout);
    if (s == VR_OK && json_path) s = write_json(json_path, j);
    cJSON_Delete(j);
    vr_features_free(&ftr);
    vr_features_free(&fte);
    vr_source_free(&own);
    vr_source_free(&test);
    return s == VR_OK ? VR_EXIT_OK : vr_cli_fail(VR_EXIT_RUNTIME, "evaluation");
}

void vr_cli_report_skipped(const vr_source *s)
{
    for (int i = 0; i < s->audio.nskipped; i++)
        fprintf(stderr, "vicreg: warning: skipped %s\n", s->audio.skipped[i].reason);
    if (s->audio.nskipped)
        fprintf(stderr, "vicreg: warning: %d file%s skipped, %d read\n", s->audio.nskipped,
                s->audio.nskipped == 1 ? "" : "s", s->audio.n);
}
