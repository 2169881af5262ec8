/* libFuzzer target: audio reading (audio/read.c) through libsndfile's virtual I/O, the path a
 * file takes too: decode (any format libsndfile reads), mix to mono, resample with libsoxr to
 * the reader's 16 kHz, crop or pad. The input is a whole file image in memory.
 *
 * vr_audio_read_memory asks for one second; vr_audio_decode_memory (the whole signal, what
 * the embedder reads) runs only where the header promises at most 2^22 samples at 16 kHz, so
 * that a tiny file claiming hours of audio at 1 Hz does not read as an out-of-memory report:
 * the reader's own limit is VR_AUDIO_MAX_SAMPLES (8 GB of floats), by design. */
#include <stdlib.h>

#include "vicreg/audio.h"

#define RATE_HZ 16000
#define DECODE_MAX ((int64_t)1 << 22)

static vr_audio_reader *reader;
static float out[RATE_HZ];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!reader && vr_audio_reader_create(RATE_HZ, &reader) != VR_OK) abort();
    int64_t valid = -1;
    vr_audio_info info;
    if (vr_audio_read_memory(reader, data, size, "fuzz", RATE_HZ, out, &valid, &info) != VR_OK) return 0;
    if (valid < 0 || valid > RATE_HZ || info.channels < 1 || info.rate_hz < 1) abort();
    for (int64_t i = valid; i < RATE_HZ; i++)
        if (out[i] != 0.0f) abort();
    if (info.frames < 1 || (double)info.frames * RATE_HZ / info.rate_hz > (double)DECODE_MAX) return 0;
    const float *x;
    int64_t n;
    vr_audio_decode_memory(reader, data, size, "fuzz", &x, &n, NULL);
    return 0;
}
