/* Loading speed of an audio data set shaped like ESC-50: N files of S seconds of 16-bit mono
 * WAV at 44.1 kHz in class folders, read, resampled to 16 kHz and stored as S-second clips.
 * Prints the time of each load with 1 and 2 threads (the files are written first, untimed,
 * into a temporary folder that is removed at the end).
 *
 *   audio_load_bench [files=200] [seconds=5] */
#include <ftw.h>
#include <math.h>
#include <omp.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "vicreg/audio_dataset.h"

#define SOURCE_HZ 44100
#define TARGET_HZ 16000
#define CLASSES 10

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int write_files(const char *root, int files, int frames)
{
    short *pcm = malloc((size_t)frames * sizeof(short));
    if (!pcm) return 1;
    char path[512];
    for (int k = 0; k < CLASSES; k++) {
        snprintf(path, sizeof path, "%s/class%02d", root, k);
        if (mkdir(path, 0700) != 0) return 1;
    }
    for (int i = 0; i < files; i++) {
        double hz = 200.0 + 37.0 * i; /* a different tone per file */
        for (int t = 0; t < frames; t++) pcm[t] = (short)lrint(12000.0 * sin(2 * M_PI * hz * t / SOURCE_HZ));
        snprintf(path, sizeof path, "%s/class%02d/clip%04d.wav", root, i % CLASSES, i);
        SF_INFO info = {.samplerate = SOURCE_HZ, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
        SNDFILE *f = sf_open(path, SFM_WRITE, &info);
        if (!f || sf_writef_short(f, pcm, frames) != frames) return 1;
        sf_close(f);
    }
    free(pcm);
    return 0;
}

int main(int argc, char **argv)
{
    int files = argc > 1 ? atoi(argv[1]) : 200;
    double seconds = argc > 2 ? atof(argv[2]) : 5.0;
    if (files < 1 || !(seconds > 0)) {
        fprintf(stderr, "usage: audio_load_bench [files] [seconds]\n");
        return 2;
    }
    char root[] = "/tmp/vr_audio_bench_XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = write_files(root, files, (int)(seconds * SOURCE_HZ));
    if (rc) fprintf(stderr, "cannot write the bench files under %s\n", root);
    vr_audio_list list = {0};
    if (!rc && vr_audio_list_folder(root, &list) != VR_OK) {
        fprintf(stderr, "%s\n", vr_last_error());
        rc = 1;
    }
    printf("%d files of %.1f s, %d Hz 16-bit mono WAV -> %d Hz clips\n", files, seconds, SOURCE_HZ, TARGET_HZ);
    for (int threads = 1; threads <= 2 && !rc; threads++) {
        vr_audio_load_config c = {.rate_hz = TARGET_HZ, .clip_samples = (int64_t)(seconds * TARGET_HZ),
                                  .threads = threads};
        vr_audio_dataset ds;
        double t0 = omp_get_wtime();
        vr_status s = vr_audio_dataset_load(&list, &c, &ds);
        double dt = omp_get_wtime() - t0;
        if (s != VR_OK) {
            fprintf(stderr, "%s\n", vr_last_error());
            rc = 1;
        } else {
            printf("threads %d: %.3f s, %.1f files/s, %.0fx real time\n", threads, dt, ds.n / dt,
                   ds.n * seconds / dt);
        }
        vr_audio_dataset_free(&ds);
    }
    vr_audio_list_free(&list);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
