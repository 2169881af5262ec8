/* The evaluation of a model on its recipe's data: frozen features of the training and test
 * splits (featurize.h; a folder's images that do not decode left out), then for each branch's
 * representation
 *   k-NN        weighted k-NN top-1/top-5 of test rows against training rows ([eval] k, T)
 *   linear      a linear probe trained on the training rows, top-1 on the test rows ([eval]
 *               linear: none, adam as the audio peer, or sgd as the VICReg protocol)
 * and for an audio model, inside the test split,
 *   retrieval   leave-one-out label retrieval R@1 and mAP per branch
 *   cross-modal recall@1/5 of a clip's waveform embedding finding the same clip among the
 *               spectrogram embeddings
 * beside the log-mel baseline (each clip's log-mel averaged over time: k-NN, linear,
 * retrieval), which involves no training. Printed, and written as one JSON object whose keys
 * follow the audio peer's (knn_wave, lin_spec, ret_map_wave, xmodal_r1, ...). `vicreg eval
 * linear` runs the linear probe alone, with a protocol it is given (vr_cli_evaluate_linear). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "featurize.h"
#include "vicreg/probe.h"
#include "vicreg/retrieval_metrics.h"

/* The figures of one feature set (a branch's representations or the log-mel baseline). */
typedef struct feature_scores {
    double knn1, knn5, lin1, ret1, map;
    int has_lin, has_ret;
} feature_scores;

/* k-NN and linear probe of train (Nt,D) / test (Nq,D), and label retrieval inside test when
 * `retrieval`. The inputs are copied where a metric changes them. */
static vr_status score(const vr_recipe *r, const float *train, const int *ltr, int nt, const float *test,
                       const int *lte, int nq, int d, int nclasses, int retrieval, feature_scores *out)
{
    memset(out, 0, sizeof *out);
    size_t btr = (size_t)nt * d * sizeof(float), bte = (size_t)nq * d * sizeof(float);
    float *a = vr_alloc(btr), *b = vr_alloc(bte);
    vr_status s = a && b ? VR_OK : vr_fail(VR_ERR_NOMEM, "eval", "cannot copy %d x %d features", nt + nq, d);
    if (s == VR_OK && r->eval_linear) {
        vr_probe_config pc;
        vr_probe_config_default(&pc, r->eval_linear == 1 ? VR_PROBE_ADAM : VR_PROBE_SGD);
        pc.seed = r->seed;
        vr_probe_result pr;
        s = vr_linear_probe(train, ltr, nt, test, lte, nq, d, nclasses, &pc, NULL, NULL, &pr);
        out->lin1 = pr.top1;
        out->has_lin = 1;
    }
    if (s == VR_OK) {
        memcpy(a, train, btr);
        memcpy(b, test, bte);
        vr_knn_config kc = {.k = r->eval_k, .temperature = r->eval_temperature};
        vr_knn_result kr;
        s = vr_knn_evaluate(a, ltr, nt, b, lte, nq, d, &kc, &kr); /* normalises a and b */
        out->knn1 = kr.top1;
        out->knn5 = kr.top5;
    }
    if (s == VR_OK && retrieval) {
        static const int ks[] = {1};
        s = vr_label_retrieval(b, lte, nq, d, ks, 1, &out->ret1, &out->map);
        out->has_ret = 1;
    }
    vr_free(a);
    vr_free(b);
    return s;
}

static void add_scores(cJSON *j, const char *suffix, const feature_scores *f, int single)
{
    char key[64];
    snprintf(key, sizeof key, single ? "top1" : "knn_%s", suffix);
    cJSON_AddNumberToObject(j, key, f->knn1);
    snprintf(key, sizeof key, single ? "top5" : "knn_top5_%s", suffix);
    cJSON_AddNumberToObject(j, key, f->knn5);
    if (f->has_lin) {
        snprintf(key, sizeof key, single ? "linear_top1" : "lin_%s", suffix);
        cJSON_AddNumberToObject(j, key, f->lin1);
    }
    if (f->has_ret) {
        snprintf(key, sizeof key, "ret_r1_%s", suffix);
        cJSON_AddNumberToObject(j, key, f->ret1);
        snprintf(key, sizeof key, "ret_map_%s", suffix);
        cJSON_AddNumberToObject(j, key, f->map);
    }
}

static void print_scores(const char *label, const char *name, const feature_scores *f)
{
    printf("  %-12s %-14s k-NN %6.2f%% (top-5 %6.2f%%)", label, name, 100 * f->knn1, 100 * f->knn5);
    if (f->has_lin) printf("  linear %6.2f%%", 100 * f->lin1);
    if (f->has_ret) printf("  retrieval R@1 %6.2f%% mAP %6.2f%%", 100 * f->ret1, 100 * f->map);
    putchar('\n');
}

/* Frozen features of the training split (`train`, or the recipe's opened into *own when train
 * is NULL or when it is a folder of more samples than [eval] train_limit, whose spread subset
 * the first rows would not be) and of the test split (opened into *test), cut to the eval
 * limits; test embeddings too when asked. *nclasses: the larger split's class count. */
static vr_status split_features(const vr_recipe *r, vr_model *m, vr_source *train, vr_source *own, vr_source *test,
                                int test_embeddings, vr_features *ftr, vr_features *fte, int *nclasses)
{
    vr_status s = VR_OK;
    if (!train || (r->kind == VR_DATA_FOLDER && r->eval_train_limit > 0 && r->eval_train_limit < train->n)) {
        s = vr_source_open(own, r, VR_SPLIT_TRAIN, r->eval_train_limit);
        vr_cli_report_skipped(own);
        train = own;
    }
    if (s == VR_OK) {
        s = vr_source_open(test, r, VR_SPLIT_TEST, r->eval_test_limit);
        vr_cli_report_skipped(test);
    }
    int nt = train->n;
    if (r->eval_train_limit > 0 && r->eval_train_limit < nt) nt = r->eval_train_limit;
    *nclasses = train->nclasses > test->nclasses ? train->nclasses : test->nclasses;
    if (s == VR_OK) s = vr_features_compute(m, train, r, nt, 0, ftr);
    if (s == VR_OK) s = vr_features_compute(m, test, r, 0, test_embeddings, fte);
    /* files found bad while computing the features */
    vr_cli_report_skipped(train);
    vr_cli_report_skipped(test);
    if (s == VR_OK && ftr->dropped + fte->dropped)
        fprintf(stderr, "vicreg: warning: %d training and %d test images left out of the evaluation: their files "
                        "do not decode\n", ftr->dropped, fte->dropped);
    return s;
}

int vr_cli_evaluate(const vr_recipe *r, vr_model *m, vr_source *train, const char *label, long step,
                    const char *json_path)
{
    double t0 = vr_cli_now();
    vr_source own = {0}, test = {0};
    vr_features ftr = {0}, fte = {0};
    int nclasses, audio = r->kind == VR_DATA_AUDIO;
    vr_status s = split_features(r, m, train, &own, &test, audio, &ftr, &fte, &nclasses);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", label);
    cJSON_AddNumberToObject(j, "step", (double)step);
    cJSON_AddNumberToObject(j, "train_samples", ftr.n);
    cJSON_AddNumberToObject(j, "test_samples", fte.n);
    cJSON_AddNumberToObject(j, "classes", nclasses);
    cJSON_AddNumberToObject(j, "k", r->eval_k);
    cJSON_AddNumberToObject(j, "temperature", r->eval_temperature);
    if (s == VR_OK)
        printf("evaluation of the %s model (step %ld): %d training and %d test %s\n", label, step, ftr.n, fte.n,
               audio ? "clips" : "images");
    for (int b = 0; b < ftr.nbranches && s == VR_OK; b++) {
        feature_scores fs;
        s = score(r, ftr.repr[b], ftr.labels, ftr.n, fte.repr[b], fte.labels, fte.n, ftr.repr_dim[b], nclasses,
                  audio, &fs);
        if (s != VR_OK) break;
        const char *name = !audio ? "encoder" : b == 0 ? "wave" : "spec";
        print_scores(label, name, &fs);
        add_scores(j, name, &fs, !audio);
    }
    if (s == VR_OK && audio) {
        static const int ks[] = {1, 5};
        double rec[2];
        vr_l2_normalise_rows(fte.emb[0], fte.n, fte.emb_dim[0]);
        vr_l2_normalise_rows(fte.emb[1], fte.n, fte.emb_dim[1]);
        s = fte.emb_dim[0] == fte.emb_dim[1]
                ? vr_crossmodal_recall(fte.emb[0], fte.emb[1], fte.n, fte.emb_dim[0], ks, 2, rec)
                : vr_fail(VR_ERR_SHAPE, "eval", "embeddings of %d and %d dimensions cannot be compared",
                          fte.emb_dim[0], fte.emb_dim[1]);
        if (s == VR_OK) {
            printf("  %-12s %-14s recall@1 %6.2f%%  recall@5 %6.2f%%  (waveform -> spectrogram)\n", label,
                   "cross-modal", 100 * rec[0], 100 * rec[1]);
            cJSON_AddNumberToObject(j, "xmodal_r1", rec[0]);
            cJSON_AddNumberToObject(j, "xmodal_r5", rec[1]);
        }
        feature_scores fs;
        if (s == VR_OK)
            s = score(r, ftr.logmel, ftr.labels, ftr.n, fte.logmel, fte.labels, fte.n, ftr.logmel_dim, nclasses,
                      1, &fs);
        if (s == VR_OK) {
            print_scores("baseline", "log-mel mean", &fs);
            cJSON *base = cJSON_AddObjectToObject(j, "baseline");
            add_scores(base, "logmel_mean", &fs, 0);
        }
    }
    cJSON_AddNumberToObject(j, "seconds", vr_cli_now() - t0);
    fflush(stdout);
    if (s == VR_OK && json_path) s = vr_cli_write_json(json_path, j);
    cJSON_Delete(j);
    vr_features_free(&ftr);
    vr_features_free(&fte);
    vr_source_free(&own);
    vr_source_free(&test);
    return s == VR_OK ? VR_EXIT_OK : vr_cli_fail(VR_EXIT_RUNTIME, "evaluation");
}

int vr_cli_evaluate_linear(const vr_recipe *r, vr_model *m, const char *label, long step, const vr_probe_config *pc,
                           const char *json_path)
{
    double t0 = vr_cli_now();
    vr_source own = {0}, test = {0};
    vr_features ftr = {0}, fte = {0};
    int nclasses, audio = r->kind == VR_DATA_AUDIO;
    vr_status s = split_features(r, m, NULL, &own, &test, 0, &ftr, &fte, &nclasses);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", label);
    cJSON_AddNumberToObject(j, "step", (double)step);
    cJSON_AddStringToObject(j, "protocol", pc->protocol == VR_PROBE_SGD ? "sgd" : "adam");
    cJSON_AddNumberToObject(j, "epochs", pc->epochs);
    cJSON_AddNumberToObject(j, "lr", pc->lr);
    cJSON_AddNumberToObject(j, "batch", pc->batch);
    cJSON_AddNumberToObject(j, "momentum", pc->momentum);
    cJSON_AddNumberToObject(j, "weight_decay", pc->weight_decay);
    cJSON_AddNumberToObject(j, "train_samples", ftr.n);
    cJSON_AddNumberToObject(j, "test_samples", fte.n);
    cJSON_AddNumberToObject(j, "classes", nclasses);
    if (s == VR_OK)
        printf("linear evaluation of the %s model (step %ld): %d training and %d test %s, frozen representations; "
               "SGD %d epochs, batch %d, lr %g cosine, momentum %g, weight decay %g\n", label, step, ftr.n, fte.n,
               audio ? "clips" : "images", pc->epochs, pc->batch, (double)pc->lr, (double)pc->momentum,
               (double)pc->weight_decay);
    for (int b = 0; b < ftr.nbranches && s == VR_OK; b++) {
        vr_probe_result pr;
        s = vr_linear_probe(ftr.repr[b], ftr.labels, ftr.n, fte.repr[b], fte.labels, fte.n, ftr.repr_dim[b], nclasses,
                            pc, NULL, NULL, &pr);
        if (s != VR_OK) break;
        const char *name = !audio ? "encoder" : b == 0 ? "wave" : "spec";
        printf("  %-12s %-8s top-1 %6.2f%%  top-5 %6.2f%%  (best epoch; last epoch %6.2f%% / %6.2f%%, "
               "training loss %.4f)\n", label, name, 100 * pr.best_top1, 100 * pr.best_top5, 100 * pr.top1,
               100 * pr.top5, pr.train_loss);
        static const char *const keys[] = {"top1", "top5", "last_top1", "last_top5", "train_loss"};
        const double values[] = {pr.best_top1, pr.best_top5, pr.top1, pr.top5, pr.train_loss};
        for (int k = 0; k < 5; k++) {
            char key[64];
            snprintf(key, sizeof key, audio ? "%s_%s" : "%s", keys[k], name);
            cJSON_AddNumberToObject(j, key, values[k]);
        }
    }
    cJSON_AddNumberToObject(j, "seconds", vr_cli_now() - t0);
    fflush(stdout);
    if (s == VR_OK && json_path) s = vr_cli_write_json(json_path, j);
    cJSON_Delete(j);
    vr_features_free(&ftr);
    vr_features_free(&fte);
    vr_source_free(&own);
    vr_source_free(&test);
    return s == VR_OK ? VR_EXIT_OK : vr_cli_fail(VR_EXIT_RUNTIME, "linear evaluation");
}

void vr_cli_report_skipped(vr_source *s)
{
    char reason[1024];
    int before = s->skips_reported;
    while (vr_source_skip_reason(s, s->skips_reported, reason, sizeof reason)) {
        fprintf(stderr, "vicreg: warning: skipped %s\n", reason);
        s->skips_reported++;
    }
    if (s->kind == VR_DATA_AUDIO && s->skips_reported > before)
        fprintf(stderr, "vicreg: warning: %d file%s skipped, %d read\n", s->audio.nskipped,
                s->audio.nskipped == 1 ? "" : "s", s->audio.n);
}
