/* How a program embeds audio in-process with the public header alone: open one branch of a
 * checkpoint, embed a second of a 440 Hz tone at 44.1 kHz in stereo (mixed and resampled to
 * the model's rate inside), print the row's dimension and first values, close.
 *
 *   embed_example CHECKPOINT [wave|spec]
 *
 * Built and run as a test on the test suite's checkpoint (tests/fixtures/embed_ckpt.safetensors). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vicreg/embed.h"

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: embed_example CHECKPOINT [wave|spec]\n");
        return 2;
    }
    enum { RATE = 44100, CHANNELS = 2 };
    const double two_pi = 6.283185307179586;
    static float pcm[RATE * CHANNELS]; /* (frames, channels) interleaved */
    for (int i = 0; i < RATE; i++) {
        float v = 0.3f * (float)sin(two_pi * 440.0 * i / RATE);
        pcm[i * CHANNELS] = v;
        pcm[i * CHANNELS + 1] = 0.5f * v;
    }

    vr_embedder_config cfg = vr_embedder_defaults();
    cfg.branch = argc > 2 ? argv[2] : "spec";
    cfg.output = VR_EMBED_EMBEDDING;
    cfg.pool = 1;      /* one row for the whole signal */
    cfg.normalize = 1;
    vr_embedder *e;
    if (vr_embedder_open(argv[1], &cfg, &e) != VR_OK) {
        fprintf(stderr, "embed_example: %s\n", vr_last_error());
        return 1;
    }
    int dim = vr_embedder_dim(e);
    float *row = malloc((size_t)dim * sizeof(float));
    vr_status s = row ? vr_embedder_embed_pcm(e, pcm, RATE, CHANNELS, RATE, row, 1, NULL) : VR_ERR_NOMEM;
    if (s != VR_OK) {
        fprintf(stderr, "embed_example: %s\n", row ? vr_last_error() : "out of memory");
        free(row);
        vr_embedder_close(e);
        return 1;
    }
    double norm = 0;
    for (int j = 0; j < dim; j++) norm += (double)row[j] * row[j];
    printf("%s branch at %d Hz, window %lld samples: dim %d, |row| %.6f, first values", cfg.branch,
           vr_embedder_rate_hz(e), (long long)vr_embedder_window_samples(e), dim, sqrt(norm));
    for (int j = 0; j < dim && j < 6; j++) printf(" %.6f", row[j]);
    printf("\n");
    free(row);
    vr_embedder_close(e);
    /* a normalised row has unit length; anything else is a failure */
    return fabs(sqrt(norm) - 1.0) < 1e-5 ? 0 : 1;
}
