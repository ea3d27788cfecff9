"""Post-production: equalisation, reverb, background noise and output level.

EQ and reverb are applied together in the frequency domain (one FFT pair per clip):
`Y = X * EQ(f) * ((1 - wet) + wet * IR(f))`, with a fresh exponentially decaying noise
impulse response per clip. The level is set last, so the dynamics tags (loud / quiet)
stay a property of the output level, whatever the random gains before it.
"""
from __future__ import annotations

import numpy as np

from samplecnn.synth.score import Mix


def _shelf(freqs: np.ndarray, corner: float, gain_db: float, high: bool) -> np.ndarray:
    """Smooth shelving gain in dB: 0 dB far below (above) corner, gain_db far above (below)."""
    x = np.log2(np.maximum(freqs, 1.0) / corner)
    s = 1.0 / (1.0 + np.exp(-2.5 * x))
    return gain_db * (s if high else 1.0 - s)


def eq_curve(freqs: np.ndarray, mix: Mix) -> np.ndarray:
    """`(len(freqs),)` linear EQ gain: low shelf at 200 Hz, a bell at mix.mid_hz, high shelf at 3 kHz."""
    bell = mix.mid_db * np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / mix.mid_hz) / 0.6) ** 2)
    db = _shelf(freqs, 200.0, mix.low_db, False) + bell + _shelf(freqs, 3000.0, mix.high_db, True)
    return 10 ** (db / 20)


def apply_mix(dry: np.ndarray, mix: Mix, level_dbfs: float, sample_rate: int,
              rng: np.random.Generator) -> np.ndarray:
    """`(n,)` dry signal -> `float32 (n,)` mixed clip at `level_dbfs + mix.gain_db` RMS."""
    n = len(dry)
    ir_len = int(min(mix.rt60, 2.5) * sample_rate)
    t = np.arange(ir_len) / sample_rate
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * t / mix.rt60)
    ir[: int(0.012 * sample_rate)] = 0.0  # pre-delay keeps the direct sound clear
    ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
    n_fft = 1 << int(np.ceil(np.log2(n + ir_len)))
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    spec = np.fft.rfft(dry, n_fft) * eq_curve(freqs, mix) * (
        (1 - mix.reverb_wet) + mix.reverb_wet * np.fft.rfft(ir, n_fft))
    y = np.fft.irfft(spec, n_fft)[:n]

    signal_rms = float(np.sqrt(np.mean(y ** 2)))
    if signal_rms == 0:
        signal_rms = 1e-3  # an empty score still gets its noise floor
    nf = np.fft.rfftfreq(n, 1 / sample_rate)
    shape = np.maximum(nf, 20.0) ** (-mix.noise_slope / 2)
    noise = np.fft.irfft((rng.standard_normal(len(nf)) + 1j * rng.standard_normal(len(nf))) * shape, n)
    noise *= signal_rms * 10 ** (-mix.snr_db / 20) / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
    y = y + noise

    target = 10 ** ((level_dbfs + mix.gain_db) / 20)
    y *= target / (np.sqrt(np.mean(y ** 2)) + 1e-12)
    # a soft limiter: linear at quiet levels, rounds off the peaks of loud clips
    return np.tanh(y).astype(np.float32)
