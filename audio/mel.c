/* Mel scales and the triangular mel filterbank of torchaudio.functional.melscale_fbanks
 * (torchaudio 0.13, functional.py: _hz_to_mel, _mel_to_hz, _create_triangular_filterbank).
 *
 * torchaudio evaluates the triangles in float32, where (f_pts - f) loses up to 1e-4 Hz near
 * 8 kHz; here everything is double and rounded once, which is what torchaudio computes on
 * float64 tensors. */
#include "vicreg/spectrogram.h"

#include <math.h>

/* Slaney (librosa, htk=False): 3 mels per 200 Hz below 1 kHz, then steps of ln(6.4)/27. */
#define SLANEY_HZ_PER_MEL (200.0 / 3.0)
#define SLANEY_LOG_HZ 1000.0
#define SLANEY_LOG_MEL (SLANEY_LOG_HZ / SLANEY_HZ_PER_MEL)

static double slaney_logstep(void) { return log(6.4) / 27.0; }

double vr_hz_to_mel(double hz, vr_mel_scale scale)
{
    if (scale == VR_MEL_HTK) return 2595.0 * log10(1.0 + hz / 700.0);
    if (hz < SLANEY_LOG_HZ) return hz / SLANEY_HZ_PER_MEL;
    return SLANEY_LOG_MEL + log(hz / SLANEY_LOG_HZ) / slaney_logstep();
}

double vr_mel_to_hz(double mel, vr_mel_scale scale)
{
    if (scale == VR_MEL_HTK) return 700.0 * (pow(10.0, mel / 2595.0) - 1.0);
    if (mel < SLANEY_LOG_MEL) return mel * SLANEY_HZ_PER_MEL;
    return SLANEY_LOG_HZ * exp(slaney_logstep() * (mel - SLANEY_LOG_MEL));
}

/* torch.linspace(lo, hi, n)[i]: steps from the start for the first half and from the end for
 * the second, so both ends are exact. */
static double linspace_at(double lo, double hi, int n, int i)
{
    double step = (hi - lo) / (n - 1);
    return i < n / 2 ? lo + step * i : hi - step * (n - 1 - i);
}

vr_status vr_mel_fbank(int n_freq, double f_min_hz, double f_max_hz, int n_mels,
                       int sample_rate_hz, vr_mel_norm norm, vr_mel_scale scale, float *fb)
{
    if (n_freq < 2 || n_mels < 1 || sample_rate_hz < 1)
        return vr_fail(VR_ERR_ARG, "mel", "bad size: %d bins, %d mels, %d Hz", n_freq, n_mels,
                       sample_rate_hz);
    if (!(f_min_hz >= 0.0 && f_min_hz < f_max_hz && f_max_hz <= sample_rate_hz / 2.0))
        return vr_fail(VR_ERR_ARG, "mel", "bad band %g-%g Hz at %d Hz", f_min_hz, f_max_hz,
                       sample_rate_hz);
    if ((scale != VR_MEL_HTK && scale != VR_MEL_SLANEY) ||
        (norm != VR_MEL_NORM_NONE && norm != VR_MEL_NORM_SLANEY))
        return vr_fail(VR_ERR_ARG, "mel", "bad scale %d or norm %d", (int)scale, (int)norm);
    double m_lo = vr_hz_to_mel(f_min_hz, scale), m_hi = vr_hz_to_mel(f_max_hz, scale);
    /* torchaudio spaces the bins up to sample_rate // 2, an integer */
    double nyquist_hz = (double)(sample_rate_hz / 2);
    for (int m = 0; m < n_mels; m++) {
        double lo = vr_mel_to_hz(linspace_at(m_lo, m_hi, n_mels + 2, m), scale);
        double mid = vr_mel_to_hz(linspace_at(m_lo, m_hi, n_mels + 2, m + 1), scale);
        double hi = vr_mel_to_hz(linspace_at(m_lo, m_hi, n_mels + 2, m + 2), scale);
        double gain = norm == VR_MEL_NORM_SLANEY ? 2.0 / (hi - lo) : 1.0;
        for (int k = 0; k < n_freq; k++) {
            double f = linspace_at(0.0, nyquist_hz, n_freq, k);
            double up = (f - lo) / (mid - lo), down = (hi - f) / (hi - mid);
            double w = fmax(0.0, fmin(up, down));
            fb[(size_t)m * n_freq + k] = (float)(w * gain);
        }
    }
    return VR_OK;
}
