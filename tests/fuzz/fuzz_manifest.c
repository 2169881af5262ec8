/* libFuzzer target: the CSV readers of outside lists, the audio manifests (audio/manifest.c:
 * the project's labels.csv and ESC-50's esc50.csv) and an embedding set's rows (.csv) and
 * settings (.json) sidecars (src/run/embedding_set.c).
 *
 * The first byte chooses the reader: its low 2 bits the mode, bits 2..3 a variant.
 *   mode 0: labels.csv, split NULL, "train", "test" or "train|test" by variant; rest: the CSV
 *   mode 1: esc50.csv, folds NULL, "1,2,3,4", "5" or " 1 | 2 " by variant, audio root given
 *           when bit 4 is set; rest: the CSV
 *   mode 2, 3: an embedding set: the rest is the .csv sidecar, optionally followed by
 *           "\n%%\n" and the .json sidecar; the matrix (.npy, written here) has as many rows as the
 *           .csv has lines after its header (1..64) and 2 columns; mode 3 does not require
 *           the .csv when it is empty (it is then not written)
 * Seeds start with an ASCII digit for readability: '0' labels.csv of every row, '4' of the
 * train split; '1' esc50.csv of every fold with an audio root, '5' of folds 1-4; '2' an
 * embedding set, '3' one whose .csv may be missing.
 * What a reader accepts must hold together: labels within the classes, a path for each row,
 * class ids from vr_embedding_set_label_ids within their count. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_file.h"
#include "vicreg/audio_dataset.h"
#include "vicreg/embedding_set.h"
#include "vicreg/tensor.h"

static fuzz_file file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_list(const vr_audio_list *l)
{
    if (l->n < 1 || l->nclasses < 1) abort();
    for (int i = 0; i < l->n; i++)
        if (!l->paths[i] || !l->paths[i][0] || l->labels[i] < 0 || l->labels[i] >= l->nclasses) abort();
    for (int k = 0; k < l->nclasses; k++)
        if (!l->class_names[k]) abort();
}

static void fuzz_audio_manifest(int mode, int variant, const uint8_t *csv, size_t size)
{
    static const char *const splits[] = {NULL, "train", "test", "train|test"};
    static const char *const folds[] = {NULL, "1,2,3,4", "5", " 1 | 2 "};
    vr_audio_manifest_config m;
    if (mode == 0) vr_audio_manifest_labels(&m, splits[variant & 3]);
    else vr_audio_manifest_esc50(&m, folds[variant & 3], variant & 4 ? "/data/esc50/audio" : NULL);
    vr_audio_list list;
    if (vr_audio_list_manifest(fuzz_file_put(&file, csv, size), &m, &list) == VR_OK) check_list(&list);
    vr_audio_list_free(&list);
}

/* ---- embedding sets: three files side by side in a folder of their own ---- */

static char dir[256], npy[300], csv_path[300], json_path[300];

static void remove_dir(void)
{
    unlink(npy);
    unlink(csv_path);
    unlink(json_path);
    rmdir(dir);
}

static void put(const char *path, const void *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) abort();
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, (const char *)data + done, size - done);
        if (n <= 0) abort();
        done += (size_t)n;
    }
    close(fd);
}

/* A version 1.0 .npy of (rows, 2) float32 whose values count up. */
static void put_matrix(int rows)
{
    unsigned char buf[128 + 64 * 2 * sizeof(float)];
    memset(buf, ' ', 128);
    memcpy(buf, "\x93NUMPY\x01\x00\x76\x00", 10);
    int len = snprintf((char *)buf + 10, 118, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 2), }", rows);
    buf[10 + len] = ' ';
    buf[127] = '\n';
    float x[64 * 2];
    for (int i = 0; i < 2 * rows; i++) x[i] = (float)i;
    memcpy(buf + 128, x, (size_t)rows * 2 * sizeof(float));
    put(npy, buf, 128 + (size_t)rows * 2 * sizeof(float));
}

static void fuzz_embedding_set(int need_rows, const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/vr_fuzz_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(dir)) abort();
        snprintf(npy, sizeof npy, "%s/set.npy", dir);
        snprintf(csv_path, sizeof csv_path, "%s/set.csv", dir);
        snprintf(json_path, sizeof json_path, "%s/set.json", dir);
        atexit(remove_dir);
    }
    size_t csv_len = size;
    const uint8_t *mark = memmem(data, size, "\n%%\n", 4);
    if (mark) csv_len = (size_t)(mark - data);
    int lines = csv_len && data[csv_len - 1] != '\n'; /* a last line without its newline */
    for (size_t i = 0; i < csv_len; i++) lines += data[i] == '\n';
    int rows = lines - 1 < 1 ? 1 : lines - 1 > 64 ? 64 : lines - 1;
    put_matrix(rows);
    unlink(csv_path);
    if (need_rows || csv_len) put(csv_path, data, csv_len);
    unlink(json_path);
    if (mark) put(json_path, mark + 4, size - csv_len - 4);

    vr_embedding_set s;
    if (vr_embedding_set_read(npy, need_rows, &s) != VR_OK) return;
    if (s.n != rows || s.d != 2 || !s.x || (need_rows && !s.rows)) abort();
    if (s.rows) {
        for (int64_t i = 0; i < s.n; i++)
            if (!s.rows[i].file || !s.rows[i].label) abort();
        int *ids, nclasses;
        if (vr_embedding_set_label_ids(&s, &ids, &nclasses) != VR_OK) abort();
        for (int64_t i = 0; i < s.n; i++)
            if (ids[i] < -1 || ids[i] >= nclasses || (ids[i] < 0) != !s.rows[i].label[0]) abort();
        vr_free(ids);
    }
    vr_embedding_settings settings;
    vr_embedding_set_settings(npy, &s, &settings);
    vr_embedding_set_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0] & 3, variant = data[0] >> 2;
    if (mode < 2) fuzz_audio_manifest(mode, variant, data + 1, size - 1);
    else fuzz_embedding_set(mode == 2, data + 1, size - 1);
    return 0;
}
