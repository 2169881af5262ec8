/* An embedding set on disk: the matrix and what each row is.
 *
 *   OUT.npy   (N, D) float32 (npy.h)
 *   OUT.csv   a header line "file,start,end,label", then one line per row: the source file, the
 *             window's start and end in seconds, the label ("" when unknown); RFC 4180 quoting
 *   OUT.json  how the rows were made: a JSON object (checkpoint, branch, output, normalize,
 *             pool, window and hop seconds, rate, dim, rows) so that a search can embed its
 *             queries the same way
 *
 * The sidecars are named by replacing the matrix path's ".npy" (or appending). Each file is
 * written through an atomic file (atomic_file.h), the sidecars first and the matrix last, so a
 * killed writer leaves no new matrix without the rows that describe it. Readers check that the
 * three agree (row count, dimension) and name the file that does not. */
#ifndef VICREG_EMBEDDING_SET_H
#define VICREG_EMBEDDING_SET_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/embed.h"
#include "vicreg/status.h"

typedef struct vr_embedding_row {
    char *file;             /* the source */
    double start_s, end_s;  /* the window, seconds of the source */
    char *label;            /* "" when unknown */
} vr_embedding_row;

typedef struct vr_embedding_set {
    int64_t n;
    int d;
    float *x;               /* (n, d) */
    vr_embedding_row *rows; /* (n) */
    char *meta_json;        /* the JSON object text, or NULL */
} vr_embedding_set;

/* npy_path's sidecar with the given suffix (".csv" or ".json") into out (len bytes). */
vr_status vr_embedding_set_sidecar(const char *npy_path, const char *suffix, char *out, size_t len);

/* s -> npy_path and its sidecars (rows may be NULL: no .csv; meta_json may be NULL: no .json). */
vr_status vr_embedding_set_write(const char *npy_path, const vr_embedding_set *s);

/* npy_path (N, D) and, when present, its sidecars. need_rows: the .csv must exist. */
vr_status vr_embedding_set_read(const char *npy_path, int need_rows, vr_embedding_set *s);

/* The labels as integers 0..nclasses-1 in order of first appearance (labels (n), malloc'd by
 * vr_alloc); rows without a label get -1. */
vr_status vr_embedding_set_label_ids(const vr_embedding_set *s, int **labels, int *nclasses);

/* The settings a set's rows were embedded with, as vr_embedder_open takes them: the checkpoint
 * and cfg (whose branch points into this struct). */
typedef struct vr_embedding_settings {
    char checkpoint[4096];
    char branch[16];
    vr_embedder_config cfg;
} vr_embedding_settings;

/* From s->meta_json: VR_ERR_NOT_FOUND when the set has no settings file, VR_ERR_FORMAT naming
 * npy_path when they name no checkpoint and branch or a value has the wrong type. */
vr_status vr_embedding_set_settings(const char *npy_path, const vr_embedding_set *s, vr_embedding_settings *out);

void vr_embedding_set_free(vr_embedding_set *s);

#endif
