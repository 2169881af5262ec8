"""torchaudio reference fixtures of the spectrogram front end (audio/, tests/test_spectrogram.c).

Writes tests/fixtures/spectrogram.safetensors:
  clips16    (2, 7200)  the words "seven" and "zero" spoken by espeak-ng (22050 Hz, 16-bit),
                        resampled to 16 kHz by sox, first 0.45 s (leading silence included)
  clip22     (1, 9301)  the word "hello" at espeak-ng's own 22050 Hz, an odd length
and for each case of CASES below its outputs, named CASE.OUTPUT:
  spec       torchaudio.transforms.Spectrogram (power 1 or 2), (B, n_fft/2 + 1, frames)
  mel        torchaudio.transforms.MelSpectrogram, (B, n_mels, frames) (cases in KEEP_MEL)
  log        torch.log(mel + offset)
  db         torchaudio.transforms.AmplitudeToDB(stype, top_db) on (B, 1, n_mels, frames), so
             the top_db clamp is per clip
  scaled     (m - min) / (max - min + 1e-6) per clip over the log or dB output, the audio peer's
             LogMel (shared/bench/torch_peer.py) for the default case
  fb         the (n_mels, n_freq) filterbank of melscale_fbanks (fb cases only)

Every reference is computed in float64 from the stored float32 clips: the Hann window is made
in float64 (wkwargs), and the filterbank is torchaudio's own melscale_fbanks code
(_hz_to_mel, _mel_to_hz, _create_triangular_filterbank) run on float64 tensors, since
melscale_fbanks itself builds it in float32. Results are stored rounded to float32.

Needs espeak-ng and sox (apt-get install espeak-ng sox) and Debian's torchaudio 0.13:
  /usr/bin/python3 tests/reference/make_spec_fixtures.py
"""
import os
import subprocess
import sys
import tempfile
import wave

import numpy as np
import torch
import torchaudio
import torchaudio.functional.functional as AF

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402  (next to this script)

OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "spectrogram.safetensors"))
PEER = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "bench", "torch_peer.py"))

# name, clips, sample rate, n_fft, win, hop, center, power, mel (n_mels, f_min, f_max, scale,
# norm) or None, log ("log", offset) / ("db", top_db or None) / None, scaled, store fb.
# tests/test_spectrogram.c holds the same table.
CASES = [
    ("power", "clips16", 16000, 400, 400, 160, True, 2, None, None, False, False),
    ("magnitude", "clip22", 22050, 512, 400, 128, True, 1, None, None, False, False),
    ("logmel", "clips16", 16000, 400, 400, 160, True, 2, (64, 0.0, 8000.0, "htk", None),
     ("log", 1e-6), True, False),
    ("slaney_norm_db", "clip22", 22050, 512, 512, 256, True, 2,
     (40, 50.0, 11025.0, "slaney", "slaney"), ("db", 80.0), False, True),
    ("slaney_mag_db", "clips16", 16000, 400, 400, 160, True, 1, (48, 0.0, 8000.0, "slaney", None),
     ("db", None), True, False),
    ("odd", "clip22", 22050, 255, 201, 97, True, 2, (32, 100.0, 10000.0, "htk", None),
     ("log", 1e-3), False, True),
    ("nocenter", "clips16", 16000, 400, 400, 160, False, 2, (64, 20.0, 7600.0, "htk", None),
     ("log", 1e-6), False, False),
]

# the cases whose mel spectrogram is stored before its log step (the others only after it)
KEEP_MEL = {"logmel", "slaney_norm_db", "odd"}


def speak(word, rate, length, tmp):
    """espeak-ng's 16-bit clip of word, resampled by sox to rate, first `length` samples."""
    raw = os.path.join(tmp, word + ".wav")
    subprocess.run(["espeak-ng", "-v", "en", "-w", raw, word], check=True)
    path = raw
    if rate != 22050:
        path = os.path.join(tmp, f"{word}_{rate}.wav")
        subprocess.run(["sox", "-R", raw, "-r", str(rate), path], check=True)  # -R: repeatable dither
    with wave.open(path) as r:
        assert r.getframerate() == rate and r.getnchannels() == 1 and r.getsampwidth() == 2
        a = np.frombuffer(r.readframes(r.getnframes()), np.int16).astype(np.float32) / 32768.0
    assert len(a) >= length, f"{word}: {len(a)} samples < {length}"
    return a[:length]


def fbank64(n_freq, f_min, f_max, n_mels, sample_rate, norm, scale):
    """melscale_fbanks in float64, (n_freq, n_mels)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freq, dtype=torch.float64)
    m_min = AF._hz_to_mel(f_min, mel_scale=scale)
    m_max = AF._hz_to_mel(f_max, mel_scale=scale)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2, dtype=torch.float64)
    f_pts = AF._mel_to_hz(m_pts, mel_scale=scale)
    fb = AF._create_triangular_filterbank(all_freqs, f_pts)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    # torchaudio's own float32 filterbank differs only by float32 rounding
    fb32 = AF.melscale_fbanks(n_freq, f_min, f_max, n_mels, sample_rate, norm, scale)
    assert (fb32.double() - fb).abs().max() < 1e-5
    return fb


def per_clip_scaled(m):
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    return (m - lo) / (hi - lo + 1e-6)


def run_case(case, clips):
    name, src, rate, n_fft, win, hop, center, power, mel, log, scaled, store_fb = case
    x = torch.from_numpy(clips[src]).double()
    kw = dict(n_fft=n_fft, win_length=win, hop_length=hop, power=power, center=center,
              pad_mode="reflect", window_fn=torch.hann_window, wkwargs={"dtype": torch.float64})
    out = {}
    if mel is None:
        y = torchaudio.transforms.Spectrogram(**kw)(x)
        out["spec"] = y
    else:
        n_mels, f_min, f_max, scale, norm = mel
        t = torchaudio.transforms.MelSpectrogram(sample_rate=rate, n_mels=n_mels, f_min=f_min,
                                                 f_max=f_max, mel_scale=scale, norm=norm, **kw).double()
        fb = fbank64(n_fft // 2 + 1, f_min, f_max, n_mels, rate, norm, scale)
        t.mel_scale.fb = fb
        y = t(x)
        if name in KEEP_MEL:
            out["mel"] = y
        if store_fb:
            out["fb"] = fb.T
        if name == "odd":  # the linear spectrogram of the odd configuration too
            out["spec"] = torchaudio.transforms.Spectrogram(**kw)(x)
    if log is not None and log[0] == "log":
        y = torch.log(y + log[1])
        out["log"] = y
    elif log is not None:
        stype = "power" if power == 2 else "magnitude"
        y = torchaudio.transforms.AmplitudeToDB(stype, top_db=log[1])(y.unsqueeze(1)).squeeze(1)
        out["db"] = y
    if scaled:
        out["scaled"] = per_clip_scaled(y)
    return {f"{name}.{k}": v.to(torch.float32).numpy() for k, v in out.items()}


def check_peer(clips, tensors):
    """The default case against the peer's own float32 LogMel, when the peer is at hand."""
    if not os.path.exists(PEER):
        print(f"peer not found at {PEER}: LogMel cross-check skipped")
        return
    sys.path.insert(0, os.path.dirname(PEER))
    import torch_peer  # noqa: E402
    got = torch_peer.LogMel()(torch.from_numpy(clips["clips16"])).numpy()
    diff = np.abs(got - tensors["logmel.scaled"]).max()
    print(f"peer LogMel (float32) vs logmel.scaled (float64): max |diff| {diff:.2e}")
    assert diff < 1e-3


def main():
    with tempfile.TemporaryDirectory() as tmp:
        clips = {
            "clips16": np.stack([speak("seven", 16000, 7200, tmp), speak("zero", 16000, 7200, tmp)]),
            "clip22": speak("hello", 22050, 9301, tmp)[None, :],
        }
    tensors = dict(clips)
    for case in CASES:
        tensors.update(run_case(case, clips))
    check_peer(clips, tensors)
    st.write(OUT, tensors, {"generator": "tests/reference/make_spec_fixtures.py",
                            "torchaudio": torchaudio.__version__})
    for k, v in tensors.items():
        print(f"{k:24s} {tuple(v.shape)}")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
