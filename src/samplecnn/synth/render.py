"""Pure-NumPy rendering of a score: band-limited wavetables, formant voices, drum one-shots.

Every note is a wavetable oscillator whose single-cycle table is built per note by an
inverse FFT of the instrument's harmonic amplitudes (limited to the Nyquist frequency, so
nothing aliases). Plucked and struck instruments cross-fade from a bright to a dark table
as they decay; voices get their harmonic amplitudes from a formant envelope evaluated at
the harmonics of the sung pitch (formant synthesis without IIR filters). The cost is a
few array operations per output sample and note, far above real time on one core.
"""
from __future__ import annotations

import numpy as np

from samplecnn.synth.mix import apply_mix
from samplecnn.synth.score import Score

TABLE = 2048  # samples per wavetable cycle; a power of two so wrapping is a bitwise and
LEVEL_DBFS = {"quiet": -32.0, "medium": -22.0, "loud": -13.0}

# vowel -> (F1, F2, F3) in Hz for an adult male voice; female formants are scaled up
_VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (300, 2200, 3000),
           "o": (570, 840, 2410), "u": (320, 870, 2240)}
_FORMANT_AMPS = (1.0, 0.5, 0.3)
_FORMANT_BW = (90.0, 110.0, 160.0)


def _table(amps: np.ndarray) -> np.ndarray:
    """`(TABLE,)` one cycle of sum_k amps[k-1] sin(2 pi k x), via one inverse FFT."""
    spec = np.zeros(TABLE // 2 + 1, dtype=np.complex128)
    spec[1:len(amps) + 1] = -0.5j * TABLE * amps
    return np.fft.irfft(spec, TABLE)


def _formants(freqs: np.ndarray, vowel: str, scale: float) -> np.ndarray:
    env = np.full_like(freqs, 0.02)
    for f, a, bw in zip(_VOWELS[vowel], _FORMANT_AMPS, _FORMANT_BW):
        env += a / (1.0 + ((freqs - f * scale) / (bw * scale)) ** 2)
    return env


def _spectra(inst: str, k: np.ndarray, f0: float, vel: float, vowel: str) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark) harmonic amplitudes for harmonics `k` of `f0`."""
    fk = k * f0
    if inst == "piano":
        return k ** -0.9 * np.exp(-fk / 7000), k ** -2.4
    if inst == "harpsichord":
        return k ** -0.3 * (0.3 + np.abs(np.sin(np.pi * k / 9))), k ** -1.2
    if inst == "acoustic_guitar":
        comb = np.abs(np.sin(np.pi * k * 0.18)) + 0.05
        return comb * k ** -1.0, comb * k ** -2.6
    if inst == "electric_guitar":
        return k ** -1.0, k ** -1.4
    if inst == "bass":
        return k ** -1.4 * np.exp(-fk / 3000), k ** -3.0
    if inst == "synth_bass":
        return np.exp(-fk / 2500) / k, np.exp(-fk / 350) / k
    if inst == "synth_lead":
        odd = (k % 2 == 1) / k
        return odd * np.exp(-fk / 5000), odd * np.exp(-fk / 1500)
    if inst == "synth_pad":
        saw = np.exp(-fk / 1300) / k
        return saw, saw
    if inst == "organ":  # drawbars 16', 8', 5 1/3', 4', 2 2/3', 2' on a sub-octave fundamental
        a = np.zeros_like(k)
        for h, g in ((1, 0.8), (2, 1.0), (3, 0.6), (4, 0.6), (6, 0.35), (8, 0.3)):
            a[k == h] = g
        return a, a
    if inst == "flute":
        a = np.exp(-(k - 1) * 1.1)
        return a, a
    if inst in ("strings", "violin", "cello"):
        body = {"strings": ((400, 1.0, 300), (2500, 0.8, 1500)),
                "violin": ((290, 0.8, 80), (480, 0.8, 150), (2800, 2.0, 1200)),
                "cello": ((120, 1.0, 40), (250, 1.0, 120), (1500, 0.8, 700))}[inst]
        env = 0.15 + sum(g / (1 + ((fk - f) / bw) ** 2) for f, g, bw in body)
        saw = env / k * np.exp(-fk / 6000)
        return saw, saw
    if inst in ("sitar", "tanpura"):  # jawari bridge: a bright, buzzing, slowly moving spectrum
        buzz = k ** -0.5 * (0.4 + np.sin(0.9 * k) ** 2) * np.exp(-fk / 5000)
        return buzz, k ** -1.5
    if inst in ("female_voice", "male_voice", "choir"):
        scale = 1.17 if (inst == "female_voice" or (inst == "choir" and f0 > 250)) else 1.0
        a = k ** -1.0 * _formants(fk, vowel, scale)
        return a, a
    raise ValueError(f"unknown instrument {inst!r}")


# instrument -> (attack s, T60 s or 0 for sustained, release s, bright->dark tau s or 0,
#                vibrato rate Hz, vibrato depth (fraction of f0), detuned copies)
_ENVELOPES = {
    "piano": (0.003, 5.0, 0.15, 0.25, 0, 0, 1),
    "harpsichord": (0.002, 1.8, 0.08, 0.08, 0, 0, 1),
    "acoustic_guitar": (0.004, 2.5, 0.25, 0.2, 0, 0, 1),
    "electric_guitar": (0.003, 3.0, 0.04, 0.5, 0, 0, 1),
    "bass": (0.004, 2.5, 0.05, 0.12, 0, 0, 1),
    "synth_bass": (0.003, 0, 0.03, 0.08, 0, 0, 1),
    "synth_lead": (0.01, 0, 0.05, 0.3, 5.5, 0.004, 2),
    "synth_pad": (0.4, 0, 0.5, 0, 0.3, 0.002, 3),
    "organ": (0.005, 0, 0.04, 0, 0, 0, 1),
    "flute": (0.06, 0, 0.08, 0, 4.8, 0.004, 1),
    "strings": (0.18, 0, 0.25, 0, 5.5, 0.003, 3),
    "violin": (0.06, 0, 0.12, 0, 6.0, 0.008, 1),
    "cello": (0.08, 0, 0.15, 0, 5.0, 0.006, 1),
    "sitar": (0.004, 3.0, 0.2, 0.4, 0, 0, 1),
    "tanpura": (0.01, 4.0, 0.5, 0, 0, 0, 1),
    "female_voice": (0.05, 0, 0.1, 0, 5.5, 0.015, 1),
    "male_voice": (0.05, 0, 0.1, 0, 5.2, 0.012, 1),
    "choir": (0.12, 0, 0.25, 0, 5.0, 0.01, 3),
}


def _render_part(part, sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`float64 (n,)` one part, unnormalised."""
    inst = part.instrument
    att, t60, rel, tau, vib_rate, vib_depth, copies = _ENVELOPES[inst]
    out = np.zeros(n)
    prev_f0 = None
    for onset, dur, pitch, vel in part.notes:
        f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
        if inst == "organ":
            f0 /= 2  # the 16' stop is the table's fundamental
        length = dur + rel if t60 == 0 else min(dur + rel, t60)
        s0 = int(round(onset * sr))
        i0, i1 = max(s0, 0), min(s0 + int(length * sr), n)
        if i1 <= i0:
            continue
        t = (np.arange(i0, i1) - s0) / sr
        env = np.minimum(t / att, 1.0)
        if t60:
            env *= np.exp(-6.9 * t / t60 * (f0 / 261.6) ** 0.3)
        env *= np.where(t < dur, 1.0, np.exp(-6.9 * np.maximum(t - dur, 0) / rel))
        vowel = "aeiou"[int(rng.integers(5))] if inst in ("female_voice", "male_voice") else \
            ("a" if rng.random() < 0.6 else "o")
        top = 1.0 + 3 * vib_depth + (0.06 if inst == "sitar" else 0)
        n_harm = int(min(TABLE // 2 - 1, (sr / 2) / (f0 * top)))
        if n_harm < 1:
            continue
        k = np.arange(1, n_harm + 1, dtype=float)
        bright, dark = _spectra(inst, k, f0, vel, vowel)
        bright = bright * k ** (-(1.0 - vel) * 0.8)  # soft notes are darker, as on real instruments
        tb = _table(bright)
        td = _table(dark) if (tau or inst == "tanpura") else tb
        note = np.zeros(i1 - i0)
        for c in range(copies):
            detune = 1.0 + (0 if copies == 1 else (c - (copies - 1) / 2) * 0.005 + rng.normal(0, 0.001))
            freq = np.full(len(t), f0 * detune)
            if vib_depth:
                ramp = np.minimum(t / 0.25, 1.0)
                freq *= 1 + vib_depth * ramp * np.sin(2 * np.pi * vib_rate * (1 + 0.05 * c) * t
                                                       + rng.uniform(0, 2 * np.pi))
            if inst == "sitar" and prev_f0 is not None:  # meend: glide in from the last note
                freq *= (prev_f0 / f0) ** np.exp(-t / 0.03)
            phase = np.cumsum(freq) / sr + rng.random()
            idx = (phase * TABLE).astype(np.int64) & (TABLE - 1)
            if tau:
                w = np.exp(-t / tau)
                note += tb[idx] * w + td[idx] * (1 - w)
            elif inst == "tanpura":
                w = 0.5 + 0.5 * np.sin(2 * np.pi * 0.6 * t + rng.uniform(0, 6.3))
                note += tb[idx] * w + td[idx] * (1 - w)
            else:
                note += tb[idx]
        if inst == "flute":  # breath: high-passed noise following the envelope
            note += 0.08 * np.diff(rng.standard_normal(len(t) + 1))
        if inst == "piano":  # hammer knock
            m = min(len(t), int(0.006 * sr))
            note[:m] += 0.3 * vel * rng.standard_normal(m) * np.linspace(1, 0, m)
        out[i0:i1] += vel * env * note
        prev_f0 = f0
    if inst == "organ":  # rotary-speaker tremolo
        out *= 1 + 0.15 * np.sin(2 * np.pi * 6.5 * np.arange(n) / sr)
    if inst == "electric_guitar":  # overdrive
        peak = np.abs(out).max()
        if peak > 0:
            out = np.tanh(6.0 * out / peak)
    return out


def _drum_sounds(kit: str, sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One-shot samples per sound name for a kit (drawn once per clip)."""
    def t(sec):
        return np.arange(int(sec * sr)) / sr

    def noise(sec):
        return rng.standard_normal(int(sec * sr))

    def hp(x, order=1):
        for _ in range(order):
            x = np.diff(x, prepend=0.0)
        return x

    if kit == "hand":
        tl, th = t(0.5), t(0.35)
        low = np.sin(2 * np.pi * np.cumsum(70 + 50 * (1 - np.exp(-tl / 0.08))) / sr) * np.exp(-tl / 0.18)
        high = sum(g * np.sin(2 * np.pi * f * th) for f, g in ((380, 1.0), (760, 0.5), (1150, 0.3)))
        high = high * np.exp(-th / 0.12) + 0.3 * hp(noise(0.35)) * np.exp(-th / 0.01)
        return {"low": low, "high": high}
    electronic = kit == "electronic"
    tk = t(0.7 if electronic else 0.4)
    kf = (45 + 90 * np.exp(-tk / 0.05)) if electronic else (50 + 110 * np.exp(-tk / 0.03))
    kick = np.sin(2 * np.pi * np.cumsum(kf) / sr) * np.exp(-tk / (0.35 if electronic else 0.12))
    kick[: int(0.002 * sr)] += 0.5 * noise(0.002)
    ts = t(0.35)
    if electronic:  # clap: three quick bursts and a tail
        env = sum(np.exp(-np.maximum(ts - d, 0) / 0.006) * (ts >= d) for d in (0, 0.009, 0.018))
        snare = hp(noise(0.35)) * (env + 0.5 * np.exp(-ts / 0.12))
    else:
        snare = 0.7 * hp(noise(0.35)) * np.exp(-ts / 0.09) + np.sin(2 * np.pi * 190 * ts) * np.exp(-ts / 0.04)
    hat_t, open_t = t(0.12), t(0.5)
    hat = hp(noise(0.12), 2) * np.exp(-hat_t / 0.02) * 0.5
    open_hat = hp(noise(0.5), 2) * np.exp(-open_t / 0.15) * 0.4
    return {"kick": kick, "snare": snare, "hat": hat, "open_hat": open_hat}


def _render_drums(drums, sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    sounds = _drum_sounds(drums.kit, sr, rng)
    out = np.zeros(n)
    for onset, name, vel in drums.hits:
        s = sounds[name]
        i0 = int(round(onset * sr))
        m = min(len(s), n - i0)
        if m > 0:
            out[i0:i0 + m] += vel * s[:m]
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


def render_dry(score: Score, sample_rate: int = 16000, seconds: float | None = None) -> np.ndarray:
    """`float64 (samples,)` the parts and drums balanced by their gains, before the mix."""
    seconds = score.seconds if seconds is None else seconds
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng([score.render_seed, 1])
    dry = np.zeros(n)
    tracks = [(_render_part(p, sample_rate, n, rng), p.gain_db) for p in score.parts]
    if score.drums is not None:
        tracks.append((_render_drums(score.drums, sample_rate, n, rng), score.drums.gain_db))
    for track, gain_db in tracks:
        r = _rms(track)
        if r > 0:  # each track at unit RMS, then its gain: balance does not depend on note count
            dry += track * (10 ** (gain_db / 20) / r)
    return dry


def render(score: Score, sample_rate: int = 16000, seconds: float | None = None) -> np.ndarray:
    """`float32 (round(seconds * sample_rate),)` the finished clip (parts, drums, mix)."""
    if sample_rate < 4000:
        raise ValueError(f"sample rate {sample_rate}: too low to render music (need >= 4000 Hz)")
    dry = render_dry(score, sample_rate, seconds)
    rng = np.random.default_rng([score.render_seed, 2])
    return apply_mix(dry, score.mix, LEVEL_DBFS[score.dynamics], sample_rate, rng)
