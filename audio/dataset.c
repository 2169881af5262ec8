/* Loading a listed audio data set into one (N, L) buffer, skipping and recording the files
 * that cannot be read (see include/vicreg/audio_dataset.h). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/audio.h"
#include "vicreg/audio_dataset.h"

void vr_audio_load_default(vr_audio_load_config *c)
{
    *c = (vr_audio_load_config){.rate_hz = 16000, .clip_samples = 80000, .threads = 0};
}

void vr_audio_dataset_free(vr_audio_dataset *ds)
{
    for (int i = 0; i < ds->n; i++) free(ds->paths[i]);
    for (int k = 0; k < ds->nclasses; k++) free(ds->class_names[k]);
    for (int i = 0; i < ds->nskipped; i++) {
        free(ds->skipped[i].path);
        free(ds->skipped[i].reason);
    }
    free(ds->clips);
    free(ds->labels);
    free(ds->paths);
    free(ds->class_names);
    free(ds->skipped);
    memset(ds, 0, sizeof *ds);
}

/* Per-file outcome of the parallel read: NULL for a clip read, else the reader's message. */
static vr_status read_all(const vr_audio_list *list, const vr_audio_load_config *c, float *clips,
                          char **reasons)
{
    size_t len = (size_t)c->clip_samples;
    int nt = c->threads > 0 ? c->threads : omp_get_max_threads();
    if (nt > list->n) nt = list->n;
    int nomem = 0;
#pragma omp parallel num_threads(nt)
    {
        vr_audio_reader *r = NULL;
        if (vr_audio_reader_create(c->rate_hz, &r) != VR_OK) {
#pragma omp atomic write
            nomem = 1;
        }
        /* files differ in length and format, so hand them out one at a time */
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < list->n; i++) {
            if (!r) continue;
            float *x = clips + (size_t)i * len;
            int64_t valid;
            vr_status s = vr_audio_read(r, list->paths[i], c->clip_samples, x, &valid, NULL);
            if (s == VR_OK) {
                size_t shift = (len - (size_t)valid) / 2; /* a short file centred between zeros */
                if (shift) {
                    memmove(x + shift, x, (size_t)valid * sizeof(float));
                    memset(x, 0, shift * sizeof(float));
                }
                continue;
            }
            /* an allocation failing is the machine's state, not the file's: it stops the load */
            if (s == VR_ERR_NOMEM || !(reasons[i] = strdup(vr_last_error()))) {
#pragma omp atomic write
                nomem = 1;
            }
        }
        vr_audio_reader_free(r);
    }
    if (nomem) return vr_fail(VR_ERR_NOMEM, "audio", "out of memory while reading %d files", list->n);
    return VR_OK;
}

/* Moves the clips read to the front, in list order, and records the rest as skipped. */
static vr_status keep_read(const vr_audio_list *list, char **reasons, vr_audio_dataset *ds)
{
    size_t len = (size_t)ds->clip_samples;
    int nskip = 0;
    for (int i = 0; i < list->n; i++) nskip += reasons[i] != NULL;
    int nkeep = list->n - nskip;
    ds->labels = malloc(((size_t)nkeep + 1) * sizeof *ds->labels);
    ds->paths = calloc((size_t)nkeep + 1, sizeof *ds->paths);
    ds->skipped = calloc((size_t)nskip + 1, sizeof *ds->skipped);
    if (!ds->labels || !ds->paths || !ds->skipped)
        return vr_fail(VR_ERR_NOMEM, "audio", "cannot record %d clips", list->n);
    for (int i = 0; i < list->n; i++) {
        if (reasons[i]) {
            vr_audio_skip *s = &ds->skipped[ds->nskipped++];
            s->reason = reasons[i];
            reasons[i] = NULL;
            if (!(s->path = strdup(list->paths[i]))) return vr_fail(VR_ERR_NOMEM, "audio", "cannot copy a path");
            continue;
        }
        int k = ds->n;
        if (!(ds->paths[k] = strdup(list->paths[i]))) return vr_fail(VR_ERR_NOMEM, "audio", "cannot copy a path");
        if (k != i) memmove(ds->clips + (size_t)k * len, ds->clips + (size_t)i * len, len * sizeof(float));
        ds->labels[k] = list->labels[i];
        ds->n++;
    }
    return VR_OK;
}

static vr_status copy_classes(const vr_audio_list *list, vr_audio_dataset *ds)
{
    ds->class_names = calloc((size_t)list->nclasses + 1, sizeof *ds->class_names);
    if (!ds->class_names) return vr_fail(VR_ERR_NOMEM, "audio", "cannot copy %d class names", list->nclasses);
    for (int k = 0; k < list->nclasses; k++) {
        if (!(ds->class_names[k] = strdup(list->class_names[k])))
            return vr_fail(VR_ERR_NOMEM, "audio", "cannot copy a class name");
        ds->nclasses++;
    }
    return VR_OK;
}

vr_status vr_audio_dataset_load(const vr_audio_list *list, const vr_audio_load_config *c,
                                vr_audio_dataset *ds)
{
    memset(ds, 0, sizeof *ds);
    if (c->rate_hz < 1 || c->rate_hz > VR_AUDIO_MAX_RATE_HZ)
        return vr_fail(VR_ERR_ARG, "audio", "data set rate %d Hz (1..%d)", c->rate_hz, VR_AUDIO_MAX_RATE_HZ);
    if (c->clip_samples < 1 || c->clip_samples > VR_AUDIO_MAX_SAMPLES)
        return vr_fail(VR_ERR_ARG, "audio", "clip length %lld samples (1..%lld)", (long long)c->clip_samples,
                       (long long)VR_AUDIO_MAX_SAMPLES);
    if (list->n < 1) return vr_fail(VR_ERR_ARG, "audio", "an empty file list");
    size_t len = (size_t)c->clip_samples;
    if ((size_t)list->n > SIZE_MAX / sizeof(float) / len)
        return vr_fail(VR_ERR_NOMEM, "audio", "%d clips of %zu samples overflow the address space", list->n, len);
    ds->clip_samples = c->clip_samples;
    ds->rate_hz = c->rate_hz;
    /* not zeroed here: every row is written by its reader, and the threads' first touch of
     * the pages is spread over them */
    ds->clips = malloc((size_t)list->n * len * sizeof(float));
    char **reasons = calloc((size_t)list->n, sizeof *reasons);
    vr_status s = ds->clips && reasons
                      ? VR_OK
                      : vr_fail(VR_ERR_NOMEM, "audio", "cannot hold %d clips of %zu samples", list->n, len);
    if (s == VR_OK) s = read_all(list, c, ds->clips, reasons);
    if (s == VR_OK) s = keep_read(list, reasons, ds);
    if (s == VR_OK) s = copy_classes(list, ds);
    for (int i = 0; reasons && i < list->n; i++) free(reasons[i]);
    free(reasons);
    if (s == VR_OK && ds->n == 0)
        s = vr_fail(VR_ERR_NOT_FOUND, "audio", "none of the %d files could be read (first: %s)", list->n,
                    ds->skipped[0].reason);
    return s;
}
