/* Labelled audio data sets: which files (a list), and their clips loaded into one buffer.
 *
 * A list comes from
 *   - a folder with one sub-folder per class: class names sorted bytewise give labels
 *     0..C-1, and each class's files (those directly inside, not hidden) are taken in bytewise
 *     order, like torchvision's ImageFolder without its extension filter;
 *   - a CSV manifest (RFC 4180 quoting, parsed by libcsv) with a header row naming the columns:
 *     ESC-50's meta/esc50.csv (filename, fold, target; folds chosen like "1,2,3,4") or the
 *     project's labels.csv (path, label, and optionally split = train|test). Column names are
 *     configurable. Relative paths are taken from the audio root, or from the manifest's
 *     folder when no root is given; absolute paths stay as they are. Labels: when every value
 *     of the label column is a non-negative integer, it is the label (classes 0..max); otherwise
 *     the distinct values sorted bytewise are the classes. Labels are decided over all rows
 *     before the selection, so a train and a test selection of one manifest agree.
 *
 * Loading reads every listed file with vr_audio_read (mixed to mono, resampled, cropped to its
 * first clip length), a shorter file centred between zeros, so that random crops shift its
 * audio both ways and the centre crop of evaluation sees it whole; optionally on several OpenMP threads. A file that cannot be
 * used (missing, unreadable, unsupported, corrupt, no frames) is skipped: the set keeps its
 * path and the reader's message for the caller to report, and loading goes on. Silent and
 * short clips are kept (short ones padded). */
#ifndef VICREG_AUDIO_DATASET_H
#define VICREG_AUDIO_DATASET_H

#include <stdint.h>

#include "vicreg/status.h"

/* Files and their labels, before any audio is read. */
typedef struct vr_audio_list {
    int n;
    char **paths;       /* (n) */
    int *labels;        /* (n) in 0..nclasses-1 */
    int nclasses;
    char **class_names; /* (nclasses) */
} vr_audio_list;

typedef struct vr_audio_manifest_config {
    const char *path_column;
    const char *label_column;
    const char *select_column; /* NULL or "": every row */
    const char *select;        /* values of select_column to keep, separated by ',' or '|';
                                  NULL or "": every row */
    const char *audio_root;    /* NULL or "": relative paths start at the manifest's folder */
} vr_audio_manifest_config;

/* ESC-50's meta/esc50.csv: filename, target, fold in `folds` ("1,2,3,4"; NULL: all). Its file
 * names are relative to ESC-50-master/audio: pass that folder as audio_root. */
void vr_audio_manifest_esc50(vr_audio_manifest_config *m, const char *folds, const char *audio_root);
/* The project's labels.csv: path, label, split in `split` ("train", "test", "train|test";
 * NULL: every row, and the file needs no split column). */
void vr_audio_manifest_labels(vr_audio_manifest_config *m, const char *split);

/* root/<class>/<file>. VR_ERR_NOT_FOUND when root has no class folder. */
vr_status vr_audio_list_folder(const char *root, vr_audio_list *list);
/* VR_ERR_FORMAT names the manifest and the record for malformed CSV, a missing column, a
 * record with the wrong number of fields, an empty path or label; VR_ERR_NOT_FOUND when no row
 * is selected. */
vr_status vr_audio_list_manifest(const char *manifest, const vr_audio_manifest_config *m,
                                 vr_audio_list *list);
void vr_audio_list_free(vr_audio_list *list);

typedef struct vr_audio_load_config {
    int rate_hz;          /* 16000 */
    int64_t clip_samples; /* L: 80000, ESC-50's 5 s at 16 kHz */
    int threads;          /* <= 0: OpenMP's default */
} vr_audio_load_config;

void vr_audio_load_default(vr_audio_load_config *c);

/* A file left out and why. */
typedef struct vr_audio_skip {
    char *path;
    char *reason; /* the reader's message, naming the file */
} vr_audio_skip;

typedef struct vr_audio_dataset {
    float *clips;         /* (n, clip_samples) mono at rate_hz */
    int *labels;          /* (n) */
    char **paths;         /* (n) */
    int n;
    int64_t clip_samples;
    int rate_hz;
    int nclasses;
    char **class_names;   /* (nclasses), the list's */
    int nskipped;
    vr_audio_skip *skipped; /* (nskipped) in list order */
} vr_audio_dataset;

/* Reads every file of the list. VR_ERR_NOT_FOUND when none could be read (the set then holds
 * only the skipped list). Free the set with vr_audio_dataset_free whatever the status. */
vr_status vr_audio_dataset_load(const vr_audio_list *list, const vr_audio_load_config *c,
                                vr_audio_dataset *ds);
void vr_audio_dataset_free(vr_audio_dataset *ds);

#endif
