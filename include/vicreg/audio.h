/* Reading audio for the audio front end.
 *
 * libsndfile decodes the file (WAV, FLAC, OGG/Vorbis, AIFF, ... whatever the installed
 * libsndfile reads; integer samples arrive scaled to [-1, 1)), the channels are mixed to mono
 * by their mean, libsoxr resamples to the reader's rate (its high-quality, linear-phase
 * filter: 20-bit precision, output sample 0 at the time of input sample 0), and the signal is
 * cropped to its first samples or padded with zeros to the length asked for.
 *
 * A reader owns its scratch buffers and a resampler that it clears and reuses while the
 * source rate repeats, so reading a data set allocates nothing per file. One reader per
 * thread; readers are independent of each other.
 *
 * Every failure names the file and what is wrong: VR_ERR_NOT_FOUND (no such file), VR_ERR_IO
 * (cannot open or read it), VR_ERR_UNSUPPORTED (not a format libsndfile reads, or an encoding
 * it cannot decode), VR_ERR_FORMAT (empty file, no audio frames, malformed header, a decoder
 * error mid-stream). A PCM file (WAV, AIFF) whose header promises more data than the file
 * holds is read up to where its data ends, as libsndfile corrects the count; a compressed
 * stream that breaks off fails to decode and is an error. Only the input needed for the
 * requested length is decoded, so damage past that point goes unnoticed. */
#ifndef VICREG_AUDIO_H
#define VICREG_AUDIO_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/status.h"

/* The largest signal a reader returns: 2^31 samples, 37 hours at 16 kHz. */
#define VR_AUDIO_MAX_SAMPLES ((int64_t)1 << 31)
/* Reader rates are 1 Hz .. 1 MHz. */
#define VR_AUDIO_MAX_RATE_HZ 1000000
/* libsndfile's largest channel count, and so that of PCM handed over in memory. */
#define VR_AUDIO_MAX_CHANNELS 1024

/* What the source was, before mixing and resampling. */
typedef struct vr_audio_info {
    int64_t frames;         /* frames as libsndfile counts them */
    int channels;
    int rate_hz;
    const char *container;  /* libsndfile's names, static strings: "WAV (Microsoft)", */
    const char *encoding;   /* "Signed 16 bit PCM" */
} vr_audio_info;

typedef struct vr_audio_reader vr_audio_reader;

/* A reader whose output rate is rate_hz. */
vr_status vr_audio_reader_create(int rate_hz, vr_audio_reader **out);
void vr_audio_reader_free(vr_audio_reader *r);

/* out (length_samples): the first length_samples mono samples at the reader's rate, zeros
 * past the end of the audio. valid_samples (may be NULL) receives how many came from the
 * file; info (may be NULL) describes the source. */
vr_status vr_audio_read(vr_audio_reader *r, const char *path, int64_t length_samples, float *out,
                        int64_t *valid_samples, vr_audio_info *info);

/* The same from a file image in memory (data, size bytes); `name` stands for the file in
 * messages. */
vr_status vr_audio_read_memory(vr_audio_reader *r, const void *data, size_t size, const char *name,
                               int64_t length_samples, float *out, int64_t *valid_samples,
                               vr_audio_info *info);

/* The whole signal, mono at the reader's rate: *samples (n) points into the reader and stays
 * valid until its next call. */
vr_status vr_audio_decode(vr_audio_reader *r, const char *path, const float **samples, int64_t *n,
                          vr_audio_info *info);
vr_status vr_audio_decode_memory(vr_audio_reader *r, const void *data, size_t size,
                                 const char *name, const float **samples, int64_t *n,
                                 vr_audio_info *info);

/* PCM already in memory, mixed and resampled exactly as a file's samples are: pcm (frames,
 * channels) interleaved at rate_hz -> *samples (n) mono at the reader's rate, pointing into the
 * reader until its next call. `name` stands for the signal in messages. VR_ERR_ARG for no
 * samples, frames < 1, channels outside 1..VR_AUDIO_MAX_CHANNELS or a rate outside
 * 1..VR_AUDIO_MAX_RATE_HZ. */
vr_status vr_audio_convert(vr_audio_reader *r, const float *pcm, int64_t frames, int channels, int rate_hz,
                           const char *name, const float **samples, int64_t *n);

#endif
