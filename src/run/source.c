/* A recipe's data split and the inputs made from it (see source.h). */
#include "source.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vicreg/audio_views.h"
#include "vicreg/gray_views.h"

static void manifest_config(const vr_recipe *r, vr_split split, vr_audio_manifest_config *m)
{
    *m = (vr_audio_manifest_config){
        .path_column = r->path_column,
        .label_column = r->label_column,
        .select_column = r->select_column,
        .select = split == VR_SPLIT_TRAIN ? r->train_select : r->test_select,
        .audio_root = r->audio_root,
    };
}

/* The files of a split: from the manifest, or from the split's class folders. */
static vr_status audio_list(const vr_recipe *r, vr_split split, vr_audio_list *list)
{
    if (!r->manifest[0]) {
        const char *root = split == VR_SPLIT_TRAIN ? r->train_folder : r->test_folder;
        if (!root[0]) return vr_fail(VR_ERR_ARG, "data", "[data] test_folder is empty: no split to evaluate on");
        return vr_audio_list_folder(root, list);
    }
    vr_audio_manifest_config mc;
    manifest_config(r, split, &mc);
    return vr_audio_list_manifest(r->manifest, &mc, list);
}

/* The spectrogram object and the input shapes of both branches. */
static vr_status audio_shapes(vr_source *s, const vr_recipe *r)
{
    VR_TRY(vr_spectrogram_create(&r->spec, &s->sp));
    int64_t crop = vr_recipe_samples(r, r->crop_seconds);
    int64_t frames = vr_spectrogram_frames(s->sp, crop);
    if (frames < 1) return vr_fail(VR_ERR_ARG, "data", "a crop of %lld samples is too short for n_fft %d",
                                   (long long)crop, r->spec.n_fft);
    s->nbranches = 2;
    s->in_c[0] = s->in_c[1] = 1;
    s->in_h[0] = 1;
    s->in_w[0] = (int)crop;
    s->in_h[1] = r->spec.n_mels;
    s->in_w[1] = (int)frames;
    s->step_floats[0] = (size_t)r->batch * (size_t)crop;
    s->step_floats[1] = (size_t)r->batch * r->spec.n_mels * (size_t)frames;
    return VR_OK;
}

static void idx_shapes(vr_source *s, const vr_recipe *r)
{
    s->nbranches = 1;
    s->in_c[0] = 1;
    s->in_h[0] = s->in_w[0] = r->views.size;
    s->step_floats[0] = (size_t)2 * r->batch * r->views.size * r->views.size;
}

static void folder_shapes(vr_source *s, const vr_recipe *r)
{
    int size = r->image_views.view[0].size;
    s->nbranches = 1;
    s->in_c[0] = 3;
    s->in_h[0] = s->in_w[0] = size;
    s->step_floats[0] = (size_t)2 * r->batch * 3 * size * size;
}

static vr_status open_audio(vr_source *s, const vr_recipe *r, vr_split split, int limit)
{
    vr_audio_list list = {0};
    VR_TRY(audio_list(r, split, &list));
    int listed = list.n;
    if (limit > 0 && limit < list.n) list.n = limit;
    vr_audio_load_config lc;
    vr_audio_load_default(&lc);
    lc.rate_hz = r->rate_hz;
    lc.clip_samples = vr_recipe_samples(r, r->clip_seconds);
    lc.threads = r->threads;
    vr_status st = vr_audio_dataset_load(&list, &lc, &s->audio);
    list.n = listed;
    vr_audio_list_free(&list);
    VR_TRY(st);
    VR_TRY(audio_shapes(s, r));
    s->n = s->audio.n;
    s->nclasses = s->audio.nclasses;
    s->labels = vr_alloc((size_t)s->n * sizeof(int));
    if (!s->labels) return vr_fail(VR_ERR_NOMEM, "data", "cannot hold %d labels", s->n);
    memcpy(s->labels, s->audio.labels, (size_t)s->n * sizeof(int));
    return VR_OK;
}

static vr_status open_idx(vr_source *s, const vr_recipe *r, vr_split split, int limit)
{
    int train = split == VR_SPLIT_TRAIN;
    VR_TRY(vr_gray_dataset_load(train ? r->train_images : r->test_images,
                                train ? r->train_labels : r->test_labels, limit, &s->gray));
    s->n = s->gray.n;
    s->nclasses = s->gray.nclasses;
    idx_shapes(s, r);
    s->labels = vr_alloc((size_t)s->n * sizeof(int));
    if (!s->labels) return vr_fail(VR_ERR_NOMEM, "data", "cannot hold %d labels", s->n);
    for (int i = 0; i < s->n; i++) s->labels[i] = s->gray.labels[i];
    return VR_OK;
}

static vr_status open_folder(vr_source *s, const vr_recipe *r, vr_split split, int limit)
{
    const char *root = split == VR_SPLIT_TRAIN ? r->train_folder : r->test_folder;
    if (!root[0]) return vr_fail(VR_ERR_ARG, "data", "[data] test_folder is empty: no split to evaluate on");
    VR_TRY(vr_image_folder_list(root, &s->folder));
    VR_TRY(vr_image_folder_keep_spread(&s->folder, limit));
    s->n = s->folder.n;
    s->nclasses = s->folder.nclasses;
    folder_shapes(s, r);
    s->labels = vr_alloc((size_t)s->n * sizeof(int));
    if (!s->labels) return vr_fail(VR_ERR_NOMEM, "data", "cannot hold %d labels", s->n);
    memcpy(s->labels, s->folder.labels, (size_t)s->n * sizeof(int));
    return VR_OK;
}

vr_status vr_source_open(vr_source *s, const vr_recipe *r, vr_split split, int limit)
{
    memset(s, 0, sizeof *s);
    s->kind = r->kind;
    switch (r->kind) {
    case VR_DATA_AUDIO: return open_audio(s, r, split, limit);
    case VR_DATA_FOLDER: return open_folder(s, r, split, limit);
    default: return open_idx(s, r, split, limit);
    }
}

void vr_source_describe(const vr_source *s, const vr_recipe *r, char *what, size_t what_len)
{
    if (s->kind == VR_DATA_AUDIO)
        snprintf(what, what_len, "%d clips of %d classes (%s), %g s at %d Hz -> %g s crops: "
                 "waveform 1x%d and log-mel %dx%d", s->n, s->nclasses, r->manifest[0] ? r->manifest : r->train_folder,
                 (double)r->clip_seconds, r->rate_hz, (double)r->crop_seconds, s->in_w[0], s->in_h[1],
                 s->in_w[1]);
    else if (s->kind == VR_DATA_FOLDER && s->assumed)
        snprintf(what, what_len, "%d images ASSUMED ([data] assumed_train_size: %s is absent) -> two %dx%d RGB "
                 "views each", s->n, r->train_folder, r->image_views.view[0].size, r->image_views.view[0].size);
    else if (s->kind == VR_DATA_FOLDER)
        snprintf(what, what_len, "%d images of %d classes (%s) -> two %dx%d RGB views each", s->n, s->nclasses,
                 r->train_folder, r->image_views.view[0].size, r->image_views.view[0].size);
    else
        snprintf(what, what_len, "%d images %dx%d -> two %dx%d views each", s->n, s->gray.h, s->gray.w,
                 r->views.size, r->views.size);
}

vr_status vr_source_peek(vr_source *s, const vr_recipe *r)
{
    memset(s, 0, sizeof *s);
    s->kind = r->kind;
    if (r->kind == VR_DATA_AUDIO) {
        vr_audio_list list = {0};
        VR_TRY(audio_list(r, VR_SPLIT_TRAIN, &list));
        s->n = list.n;
        s->nclasses = list.nclasses;
        vr_audio_list_free(&list);
        return audio_shapes(s, r);
    }
    if (r->kind == VR_DATA_FOLDER) {
        vr_status st = vr_image_folder_list(r->train_folder, &s->folder);
        if (st == VR_ERR_NOT_FOUND && r->assumed_train_size > 0 && access(r->train_folder, F_OK) != 0) {
            s->n = r->assumed_train_size;
            s->assumed = 1;
            vr_clear_error();
        } else {
            VR_TRY(st);
            VR_TRY(vr_image_folder_keep_spread(&s->folder, r->train_limit));
            s->n = s->folder.n;
            s->nclasses = s->folder.nclasses;
        }
        folder_shapes(s, r);
        return VR_OK;
    }
    int64_t dims[3];
    VR_TRY(vr_idx_read_dims(r->train_images, 3, dims));
    s->n = (int)dims[0];
    if (r->train_limit > 0 && r->train_limit < s->n) s->n = r->train_limit;
    s->gray.h = (int)dims[1];
    s->gray.w = (int)dims[2];
    idx_shapes(s, r);
    return VR_OK;
}

void vr_source_free(vr_source *s)
{
    vr_image_loader_free(s->loader);
    for (int t = 0; t < s->eval_nwork; t++) vr_image_views_work_free(s->eval_work[t]);
    free(s->eval_work);
    vr_image_folder_free(&s->folder);
    vr_gray_dataset_free(&s->gray);
    vr_audio_dataset_free(&s->audio);
    if (s->sp) vr_spectrogram_destroy(s->sp);
    vr_free(s->labels);
    vr_free(s->wave2);
    memset(s, 0, sizeof *s);
}

vr_status vr_source_views(vr_source *s, const vr_recipe *r, const int *index, int n,
                          uint64_t seed, int64_t first, float *const *out)
{
    if (s->kind == VR_DATA_IDX)
        return vr_gray_views_batch(&r->views, s->gray.images, s->gray.h, s->gray.w, index, n, seed,
                                   first, r->threads, out[0]);
    if (s->kind == VR_DATA_FOLDER)
        return vr_fail(VR_ERR_UNSUPPORTED, "data", "%s: an image folder's views come from its loader", r->train_folder);
    int64_t crop = s->in_w[0];
    VR_TRY(vr_audio_views_batch(&r->audio_views, s->audio.clips, s->audio.clip_samples, index, n, seed,
                                first, r->threads, out[0]));
    const float *spec_wave = out[0];
    if (r->independent_views) {
        if (!s->wave2 && !(s->wave2 = vr_alloc((size_t)r->batch * crop * sizeof(float))))
            return vr_fail(VR_ERR_NOMEM, "data", "cannot hold the spectrogram branch's views");
        /* the golden-ratio constant moves the seed to streams no other draw uses */
        VR_TRY(vr_audio_views_batch(&r->audio_views, s->audio.clips, s->audio.clip_samples, index, n,
                                    seed ^ 0x9e3779b97f4a7c15ull, first, r->threads, s->wave2));
        spec_wave = s->wave2;
    }
    VR_TRY(vr_spectrogram_mel_batch(s->sp, spec_wave, n, crop, r->threads, out[1]));
    return vr_spec_masks_batch(&r->audio_views, out[1], s->in_h[1], s->in_w[1], n, seed, first, r->threads);
}

/* Folder: each sample's evaluation input, one work state per OpenMP thread; a file that does
 * not decode is marked bad and its input left zero. */
static vr_status folder_eval_inputs(vr_source *s, const vr_recipe *r, int i0, int n, float *out)
{
    int threads = r->threads > 0 ? r->threads : omp_get_max_threads();
    if (s->eval_nwork < threads) {
        vr_image_views_work **w = realloc(s->eval_work, (size_t)threads * sizeof *w);
        if (!w) return vr_fail(VR_ERR_NOMEM, "data", "cannot hold %d decoders", threads);
        s->eval_work = w;
        for (; s->eval_nwork < threads; s->eval_nwork++) VR_TRY(vr_image_views_work_create(&w[s->eval_nwork]));
    }
    size_t floats = (size_t)3 * s->in_h[0] * s->in_w[0];
    vr_status failed = VR_OK;
    char why[512] = "";
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (int i = 0; i < n; i++) {
        int sample = i0 + i;
        float *o = out + (size_t)i * floats;
        vr_status st = s->folder.bad[sample] ? VR_ERR_FORMAT
                                             : vr_image_eval_file(&r->image_eval, s->eval_work[omp_get_thread_num()],
                                                                  s->folder.paths[sample], o);
        if (st == VR_OK) continue;
        memset(o, 0, floats * sizeof(float));
        int bad_file = st == VR_ERR_FORMAT || st == VR_ERR_IO || st == VR_ERR_NOT_FOUND;
#pragma omp critical(vr_source_eval)
        {
            if (!bad_file && failed == VR_OK) {
                failed = st;
                snprintf(why, sizeof why, "%s", vr_last_error());
            } else if (bad_file && !s->folder.bad[sample]) {
                char reason[512]; /* a copy: recording may write over the message */
                snprintf(reason, sizeof reason, "%s", vr_last_error());
                vr_status m = vr_image_folder_mark_bad(&s->folder, sample, reason);
                if (m != VR_OK && failed == VR_OK) {
                    failed = m;
                    snprintf(why, sizeof why, "%s", vr_last_error());
                }
            }
        }
    }
    return failed == VR_OK ? VR_OK : vr_fail(failed, "data", "%s", why);
}

vr_status vr_source_eval_inputs(vr_source *s, const vr_recipe *r, int i0, int n, float *const *out)
{
    if (s->kind == VR_DATA_FOLDER) return folder_eval_inputs(s, r, i0, n, out[0]);
    if (s->kind == VR_DATA_IDX)
        return vr_gray_center_batch(&r->views, s->gray.images + (size_t)i0 * s->gray.h * s->gray.w,
                                    s->gray.h, s->gray.w, n, r->threads, out[0]);
    int64_t crop = s->in_w[0], clip = s->audio.clip_samples, offset = (clip - crop) / 2;
    for (int i = 0; i < n; i++)
        memcpy(out[0] + (size_t)i * crop, s->audio.clips + (size_t)(i0 + i) * clip + offset,
               (size_t)crop * sizeof(float));
    return vr_spectrogram_mel_batch(s->sp, out[0], n, crop, r->threads, out[1]);
}

vr_status vr_source_start_loader(vr_source *s, const vr_recipe *r, int rank, int ranks,
                                 long first_step, long end_step, uint64_t shuffle_seed,
                                 uint64_t views_seed)
{
    if (s->kind != VR_DATA_FOLDER)
        return vr_fail(VR_ERR_UNSUPPORTED, "data", "only an image folder has a loader");
    int threads = r->loader_threads > 0 ? r->loader_threads : r->threads > 0 ? r->threads : omp_get_max_threads();
    const int n = r->batch / ranks;
    vr_image_loader_config c = {.batch = n, .threads = threads, .depth = r->prefetch,
                                .shuffle_seed = shuffle_seed, .views_seed = views_seed,
                                .first_step = first_step, .end_step = end_step,
                                .stride = r->batch, .offset = rank * n};
    vr_image_loader_free(s->loader);
    s->loader = NULL;
    return vr_image_loader_create(&s->loader, &s->folder, &r->image_views, &c);
}

vr_status vr_source_loader_batch(vr_source *s, long step, const float **host)
{
    if (!s->loader) return vr_fail(VR_ERR_ARG, "data", "no loader started");
    vr_image_batch b;
    VR_TRY(vr_image_loader_next(s->loader, &b));
    if (b.step != step)
        return vr_fail(VR_ERR_ARG, "data", "the loader is at step %ld, step %ld was asked for", b.step, step);
    host[0] = b.views;
    return VR_OK;
}

void vr_source_stop_loader(vr_source *s)
{
    if (s->loader) s->refills = vr_image_loader_refills(s->loader);
    vr_image_loader_free(s->loader);
    s->loader = NULL;
}

int vr_source_skip_reason(vr_source *s, int i, char *buf, size_t len)
{
    if (s->kind == VR_DATA_AUDIO) {
        if (i < 0 || i >= s->audio.nskipped) return 0;
        snprintf(buf, len, "%s", s->audio.skipped[i].reason);
        return 1;
    }
    if (s->loader) return vr_image_loader_skip_reason(s->loader, i, buf, len);
    if (i < 0 || i >= s->folder.nskipped) return 0;
    snprintf(buf, len, "%s", s->folder.skipped[i].reason);
    return 1;
}
