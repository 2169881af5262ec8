"""PyTorch reference fixtures of the embedding API (src/run/embedder.c, tests/test_embed.c).

Writes into tests/fixtures/:
  embed_ckpt.safetensors  a small audio checkpoint: the waveform branch (1-D ResNet-18, widths
                          4/8/8/16, expander 16-32-32) and the spectrogram branch (2-D ResNet-18,
                          widths 4/8/8/16, expander 16-32-24) with random weights and running
                          statistics, named as the toolkit names them ("wave.backbone.conv1.weight",
                          "spec.projector.0.weight", ...), and RECIPE below as the "recipe"
                          metadata, as `vicreg train` stores it
  embed.safetensors       the signals and what the embedding API must give for them:
    SIG.pcm               (frames, channels) float32 PCM; metadata SIG.rate the rate in Hz
    SIG.starts            (windows) each window's start, seconds at 16 kHz
    SIG.BRANCH.OUT        (windows, dim) one row per window, BRANCH wave or spec, OUT repr or
                          embedding; .norm each row at unit L2 norm; .pool the mean of the
                          windows (1, dim); .pool.norm that at unit norm
    SIG.logmel            (windows, 32) the log-mel baseline per window; .pool its mean
  with windows of 0.25 s (the recipe's crop) every 0.1 s, and for "long" also every 0.25 s
  (the hop by default: SIG.hopw.*).

Signals: "short" 0.15 s mono at 16 kHz (one window, centred in zeros), "stereo" 0.6 s of two
channels at 22.05 kHz (five windows, the last ending at the signal's end), "long" 1 s mono at
16 kHz (nine windows, or four that tile it exactly at the default hop), "three" 0.3 s of three
channels at 8 kHz (two windows).

The reference follows embed.h independently of the C code: channels mixed by their mean; other
rates resampled by libsoxr itself (through ctypes: soxr_oneshot, float32, high quality, linear
phase, the settings of audio/read.c), the resampler being the toolkit's documented choice; the
windows cut by the rule of embed.h; the waveform windows fed to the network as (N, 1, W); the
spectrogram branch fed torchaudio's MelSpectrogram of each window (float64 filterbank, as
make_spec_fixtures.py builds it), log(x + 1e-6), each window scaled to [0, 1]; the networks in
evaluation mode in float64. Results are stored rounded to float32.

Run with Debian's PyTorch and torchaudio:
  /usr/bin/python3 tests/reference/make_embed_fixtures.py
"""
import ctypes
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchaudio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402
from make_fixtures import ResNet, expander, randomize, seed  # noqa: E402
from make_spec_fixtures import fbank64  # noqa: E402

OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
RATE = 16000
WINDOW, HOP = 4000, 1600  # 0.25 s and 0.1 s at 16 kHz
N_FFT, HOP_STFT, N_MELS, F_MAX = 400, 160, 32, 8000.0

RECIPE = """; the embedding API's test recipe: small widths, 0.25 s windows
[data]
kind = audio
manifest = labels.csv
rate_hz = 16000
clip_seconds = 0.3

[audio_views]
crop_seconds = 0.25

[spectrogram]
n_fft = 400
win_length = 400
hop_samples = 160
n_mels = 32
f_min_hz = 0
f_max_hz = 8000
mel_scale = htk
log = offset
log_offset = 1e-6
scale_01 = true

[wave]
depth = 18
widths = 4,8,8,16
stem_kernel = 80
stem_stride = 4
stem_pad = 38
pool_kernel = 4
pool_stride = 4
pool_pad = 0
expander = 16-32-32

[model]
depth = 18
widths = 4,8,8,16
stem_kernel = 7
stem_stride = 2
stem_pad = 3
pool_kernel = 3
pool_stride = 2
pool_pad = 1
expander = 16-32-24

[train]
seed = 7
run_dir = runs/embed_test
"""

WAVE = dict(rank=1, block="basic", layers=[2, 2, 2, 2], widths=[4, 8, 8, 16], in_channels=1,
            stem=dict(k=80, stride=4, pad=38), maxpool=dict(k=4, stride=4, pad=0))
SPEC = dict(rank=2, block="basic", layers=[2, 2, 2, 2], widths=[4, 8, 8, 16], in_channels=1,
            stem=dict(k=7, stride=2, pad=3), maxpool=dict(k=3, stride=2, pad=1))


class Branch(nn.Module):
    """An encoder and its expander, named backbone and projector as the toolkit's branches."""

    def __init__(self, config, projector):
        super().__init__()
        self.backbone = ResNet(**config)
        self.projector = expander(projector)

    def forward(self, x):
        return self.projector(self.backbone(x))


class Audio(nn.Module):
    def __init__(self):
        super().__init__()
        self.wave = Branch(WAVE, "16-32-32")
        self.spec = Branch(SPEC, "16-32-24")


class SoxrIo(ctypes.Structure):
    _fields_ = [("itype", ctypes.c_int), ("otype", ctypes.c_int), ("scale", ctypes.c_double),
                ("e", ctypes.c_void_p), ("flags", ctypes.c_ulong)]


class SoxrQuality(ctypes.Structure):
    _fields_ = [("precision", ctypes.c_double), ("phase_response", ctypes.c_double),
                ("passband_end", ctypes.c_double), ("stopband_begin", ctypes.c_double),
                ("e", ctypes.c_void_p), ("flags", ctypes.c_ulong)]


class SoxrRuntime(ctypes.Structure):
    _fields_ = [("log2_min_dft_size", ctypes.c_uint), ("log2_large_dft_size", ctypes.c_uint),
                ("coef_size_kbytes", ctypes.c_uint), ("num_threads", ctypes.c_uint),
                ("e", ctypes.c_void_p), ("flags", ctypes.c_ulong)]


def resample(x, rate):
    """libsoxr's resampling of mono float32 x from rate to RATE, as audio/read.c asks for it."""
    lib = ctypes.CDLL("libsoxr.so.0")
    lib.soxr_io_spec.restype = SoxrIo
    lib.soxr_quality_spec.restype = SoxrQuality
    lib.soxr_quality_spec.argtypes = [ctypes.c_ulong, ctypes.c_ulong]
    lib.soxr_runtime_spec.restype = SoxrRuntime
    lib.soxr_runtime_spec.argtypes = [ctypes.c_uint]
    lib.soxr_oneshot.restype = ctypes.c_char_p
    io = lib.soxr_io_spec(0, 0)  # SOXR_FLOAT32_I in and out
    q = lib.soxr_quality_spec(4, 0)  # SOXR_HQ, SOXR_LINEAR_PHASE
    rt = lib.soxr_runtime_spec(1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    olen = int(len(x) * RATE / rate + 0.5)
    out = np.zeros(olen + 16, dtype=np.float32)
    done = ctypes.c_size_t()
    err = lib.soxr_oneshot(ctypes.c_double(rate), ctypes.c_double(RATE), 1,
                           x.ctypes.data_as(ctypes.c_void_p), len(x), None,
                           out.ctypes.data_as(ctypes.c_void_p), len(out), ctypes.byref(done),
                           ctypes.byref(io), ctypes.byref(q), ctypes.byref(rt))
    assert err is None, err
    assert done.value == olen, (done.value, olen)
    return out[:olen]


def signals():
    """name -> (pcm (frames, channels) float32, rate): tones, chirps and noise, so every
    window differs from the others."""
    g = torch.Generator().manual_seed(11)
    out = {}
    for name, rate, frames, channels in (("short", 16000, 2400, 1), ("stereo", 22050, 13230, 2),
                                         ("long", 16000, 16000, 1), ("three", 8000, 2400, 3)):
        t = np.arange(frames) / rate
        chans = []
        for c in range(channels):
            f0 = 220.0 * (c + 1)
            chirp = np.sin(2 * np.pi * (f0 * t + 600.0 * t * t))
            noise = torch.randn(frames, generator=g, dtype=torch.float64).numpy()
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * t + c)
            chans.append(0.3 * envelope * chirp + 0.05 * noise)
        out[name] = (np.stack(chans, axis=1).astype(np.float32), rate)
    return out


def mono_at_rate(pcm, rate):
    x = pcm.mean(axis=1, dtype=np.float32) if pcm.shape[1] > 1 else pcm[:, 0]
    return x if rate == RATE else resample(x, rate)


def windows(x, window, hop):
    """The windows of embed.h: (count, window) float64 and their starts in samples."""
    n = len(x)
    if n <= window:
        w = np.zeros(window)
        pad = (window - n) // 2
        w[pad:pad + n] = x
        return w[None, :], [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(n - window)
    return np.stack([x[s:s + window] for s in starts]).astype(np.float64), starts


def log_mel(w):
    """(N, W) float64 windows (array or tensor) -> (N, N_MELS, T) scaled log-mel spectrograms."""
    t = torchaudio.transforms.MelSpectrogram(
        sample_rate=RATE, n_fft=N_FFT, win_length=N_FFT, hop_length=HOP_STFT, f_min=0.0,
        f_max=F_MAX, n_mels=N_MELS, power=2, center=True, pad_mode="reflect", mel_scale="htk",
        norm=None, window_fn=torch.hann_window, wkwargs={"dtype": torch.float64}).double()
    t.mel_scale.fb = fbank64(N_FFT // 2 + 1, 0.0, F_MAX, N_MELS, RATE, None, "htk")
    m = torch.log(t(torch.as_tensor(w, dtype=torch.float64)) + 1e-6)
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    return (m - lo) / (hi - lo + 1e-6)


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def add_rows(tensors, key, rows):
    tensors[key] = rows.float().numpy()
    tensors[key + ".norm"] = unit(rows).float().numpy()
    pooled = rows.mean(dim=0, keepdim=True)
    tensors[key + ".pool"] = pooled.float().numpy()
    tensors[key + ".pool.norm"] = unit(pooled).float().numpy()


def reference(model, x, window, hop, prefix, tensors):
    w, starts = windows(x.astype(np.float64), window, hop)
    tensors[prefix + ".starts"] = np.array(starts, dtype=np.float64) / RATE
    spec = log_mel(w)
    lm = spec.mean(dim=2)
    tensors[prefix + ".logmel"] = lm.float().numpy()
    tensors[prefix + ".logmel.pool"] = lm.mean(dim=0, keepdim=True).float().numpy()
    with torch.no_grad():
        for name, branch, inp in (("wave", model.wave, torch.from_numpy(w)[:, None, :]),
                                  ("spec", model.spec, spec[:, None, :, :])):
            r = branch.backbone(inp)
            add_rows(tensors, f"{prefix}.{name}.repr", r)
            add_rows(tensors, f"{prefix}.{name}.embedding", branch.projector(r))


def main():
    torch.set_num_threads(1)
    seed("embed")
    model = Audio()
    sigs = signals()
    # running statistics of windows like those the tests embed
    calib_wave = torch.from_numpy(windows(mono_at_rate(*sigs["long"]).astype(np.float64), WINDOW, 1000)[0])
    randomize(nn.Sequential(model.wave.backbone, model.wave.projector), calib_wave[:, None, :].float())
    randomize(nn.Sequential(model.spec.backbone, model.spec.projector), log_mel(calib_wave)[:, None].float())
    ckpt = {k: v.detach().numpy() if v.is_floating_point() else v.detach().to(torch.int64).numpy()
            for k, v in model.state_dict().items()}
    st.write(os.path.join(OUT, "embed_ckpt.safetensors"), ckpt,
             {"format": "vicreg-checkpoint-1", "recipe": RECIPE})

    model.double().eval()
    tensors, meta = {}, {"generator": "tests/reference/make_embed_fixtures.py",
                         "torchaudio": torchaudio.__version__}
    for name, (pcm, rate) in sigs.items():
        tensors[name + ".pcm"] = pcm
        meta[name + ".rate"] = str(rate)
        x = mono_at_rate(pcm, rate)
        reference(model, x, WINDOW, HOP, name, tensors)
        if name == "long":
            reference(model, x, WINDOW, WINDOW, name + ".hopw", tensors)
    st.write(os.path.join(OUT, "embed.safetensors"), tensors, meta)
    for f in ("embed_ckpt.safetensors", "embed.safetensors"):
        print(f"{os.path.getsize(os.path.join(OUT, f)):9d}  {os.path.join(OUT, f)}")


if __name__ == "__main__":
    main()
