"""A synthetic EmoPain-like cohort written in the raw FAME .mat layout, or as challenge-style
CSV sessions (one file per subject: a header of the 30 channel names and ``protective``, then
one frame per row at 60 Hz), which ``poolwise pain windows --challenge`` and
``poolwise pain stream --input`` read.

EmoPain is released only on application, so every poolwise path must also run without it. The
generative model (documented in docs/pain.md, "The synthetic cohort") in short:

- Subjects: ``C01..`` healthy and ``P01..`` CLBP. Each has a range-of-motion scale
  (lognormal, sd 0.25), a movement speed (sd 0.2), four resting sEMG levels (sd 0.5), a
  sensor-noise level, joint offsets, a *protective propensity* (Beta(1, 12), mean 0.08, for
  healthy people; Beta(2.5, 4), mean 0.38, for CLBP) and an *expression* of guarding: four
  factors in [0.2, 1.2] scaling how much this person's range, speed, sEMG and trunk bracing
  change when guarded (people protect in different ways, so LOSO is not trivial).
- A session is a sequence of exercises separated by 1-3 s gaps: each used movement once at the
  normal and, with probability 1/2, once at the difficult level, plus sitting still, standing
  still and walking (excluded from windowing). Used exercises last 8-14 s.
- An exercise instance turns protective with probability propensity x movement hardness
  (x 1.6 when difficult), over a span covering 50-100 % of it. A guard level g(t) in [0, 1] is
  the protective indicator smoothed over 0.5 s.
- Joint angles: per movement, 13 joint amplitudes and phase lags; angle = offset + ROM x
  amplitude x (1 - 0.3 e_range g) x waveform(phase) + noise, with the phase advancing at
  f0 x speed x (1 - 0.3 e_speed g): guarded movement is slower, smaller and stiffer (the
  second harmonic, i.e. fluid movement, fades with g; trunk joints brace by up to
  4 e_brace degrees).
  Energies: 0.5 x (angular velocity in rad/s)^2, a kinetic-energy proxy, plus noise.
- sEMG (four back-muscle envelopes): rest level x (1 + 2.5 |trunk velocity| + 1.2 e_emg g),
  the g term a tonic, sustained activation; rectified noise, smoothed over 0.25 s (upper
  envelope).
- Four raters with sensitivities in [0.6, 0.95] mark each true episode with jittered
  boundaries (0.4 s) on a behaviour column (value 2 with probability 0.3), and each adds false
  alarms of 1-3 s on 5 % of instances: realistic disagreement.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from poolwise._io import write_bytes, write_text
from poolwise.pain.constants import FRAME_RATE
from poolwise.pain.data.layout import CHANNEL_NAMES, N_ANGLES, FameLayout

N_COLUMNS = 160

# movement: (base frequency Hz, hardness: multiplier of the protective probability)
MOVEMENTS = {
    "one_leg_stand": (0.15, 0.8),
    "reach_forward": (0.30, 1.0),
    "sit_to_stand": (0.28, 1.2),
    "stand_to_sit": (0.28, 1.0),
    "sit_to_stand_instructed": (0.25, 1.2),
    "stand_to_sit_instructed": (0.25, 1.0),
    "bend": (0.22, 1.4),
    "bend_pick_up": (0.20, 1.5),
}
STILL = {"sitting_still": 0.05, "standing_still": 0.08, "walking": 0.9}
TRUNK_JOINTS = (0, 1, 2)
EMG_SMOOTH_S, GUARD_SMOOTH_S = 0.25, 0.5


@dataclass
class _Subject:
    name: str
    group: str
    rom: float
    speed: float
    emg_rest: np.ndarray
    noise: float
    offsets: np.ndarray
    propensity: float
    expression: np.ndarray  # how strongly this person shows guarding: range, speed, sEMG, brace
    rater_sensitivity: np.ndarray


def _smooth(x: np.ndarray, frames: int) -> np.ndarray:
    """Moving average along axis 0, same length (edge-padded)."""
    k = max(1, frames)
    pad = np.pad(x, [(k // 2, k - 1 - k // 2)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    c = np.cumsum(pad, axis=0, dtype=np.float64)
    c = np.concatenate([np.zeros((1, *x.shape[1:])), c])
    return (c[k:] - c[:-k]) / k


def _movement_patterns(seed: int = 1234) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per movement, fixed for every cohort: 13 joint amplitudes (degrees) and phase lags."""
    rng = np.random.default_rng(seed)
    patterns = {}
    for name in [*MOVEMENTS, *STILL]:
        amp = rng.gamma(2.0, 8.0, N_ANGLES)
        if name in STILL and name != "walking":
            amp *= 0.08
        patterns[name] = (amp, rng.uniform(0, 0.6, N_ANGLES))
    return patterns


def _subject(rng: np.random.Generator, name: str, group: str) -> _Subject:
    clbp = group == "CLBP"
    return _Subject(
        name=name,
        group=group,
        rom=float(rng.lognormal(0.0, 0.25)),
        speed=float(rng.lognormal(0.0, 0.2)),
        emg_rest=rng.lognormal(np.log(0.05), 0.5, 4),
        noise=float(rng.uniform(0.5, 1.5)),
        offsets=rng.normal(0.0, 5.0, N_ANGLES),
        propensity=float(rng.beta(2.5, 4.0) if clbp else rng.beta(1.0, 12.0)),
        expression=rng.uniform(0.2, 1.2, 4),
        rater_sensitivity=rng.uniform(0.6, 0.95, 4),
    )


def _session_plan(rng: np.random.Generator) -> list[tuple[str, bool, int]]:
    """(movement, difficult, frames) in a shuffled order."""
    plan = []
    for name in MOVEMENTS:
        plan.append((name, False, int(rng.uniform(8, 14) * FRAME_RATE)))
        if rng.random() < 0.5:
            plan.append((name, True, int(rng.uniform(8, 14) * FRAME_RATE)))
    for name in STILL:
        plan.append((name, False, int(rng.uniform(6, 10) * FRAME_RATE)))
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


def _instance_signals(rng, subj, movement, guard, patterns):
    """(frames, 13) angles in degrees, (frames, 13) energies, (frames, 4) sEMG envelopes."""
    n = len(guard)
    amp, lag = patterns[movement]
    f0 = MOVEMENTS[movement][0] if movement in MOVEMENTS else STILL[movement]
    e_range, e_speed, e_emg, e_brace = subj.expression
    freq = f0 * subj.speed * (1.0 - 0.3 * e_speed * guard)
    phase = 2 * np.pi * np.cumsum(freq) / FRAME_RATE + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase[:, None] + 2 * np.pi * lag) + 0.35 * (1.0 - guard[:, None]) * np.sin(
        2 * phase[:, None] + 2 * np.pi * lag
    )
    angles = subj.offsets + subj.rom * amp * (1.0 - 0.3 * e_range * guard[:, None]) * wave
    angles[:, list(TRUNK_JOINTS)] += 4.0 * e_brace * guard[:, None]  # bracing of the trunk
    drift = _smooth(rng.normal(0.0, 1.0, (n, N_ANGLES)), int(FRAME_RATE) // 4) * subj.noise * 2
    angles += drift
    velocity = np.gradient(np.deg2rad(angles), axis=0) * FRAME_RATE
    energies = 0.5 * velocity**2 + np.abs(rng.normal(0.0, 0.002, velocity.shape))
    trunk_speed = np.abs(velocity[:, list(TRUNK_JOINTS)]).mean(1, keepdims=True)
    drive = 1.0 + 2.5 * trunk_speed + 1.2 * e_emg * guard[:, None]
    raw = np.abs(subj.emg_rest * drive * (1.0 + 0.4 * rng.normal(0.0, 1.0, (n, 4))))
    emg = _smooth(raw, int(EMG_SMOOTH_S * FRAME_RATE))
    return angles, energies, emg


def _episode(rng, n: int, fraction: tuple[float, float]) -> tuple[int, int]:
    length = int(n * rng.uniform(*fraction))
    start = int(rng.integers(0, n - length + 1))
    return start, start + length


def _rater_marks(rng, subj, truth_spans, n, n_instances_frames, layout):
    """(frames, rater-label columns of the layout) in {0, 1, 2}."""
    marks = np.zeros((n, len(layout.rater_cells)), dtype=np.int8)
    jitter = int(0.4 * FRAME_RATE)
    for r in range(layout.n_raters):
        columns = [j for j, (rr, _, _) in enumerate(layout.rater_cells) if rr == r]
        spans = [s for s in truth_spans if rng.random() < subj.rater_sensitivity[r]]
        for a, b in n_instances_frames:  # false alarms on 5 % of instances
            if rng.random() < 0.05:
                length = int(rng.uniform(1, 3) * FRAME_RATE)
                start = int(rng.integers(a, max(a + 1, b - length)))
                spans.append((start, start + length))
        for a, b in spans:
            a = int(np.clip(a + rng.integers(-jitter, jitter + 1), 0, n))
            b = int(np.clip(b + rng.integers(-jitter, jitter + 1), a, n))
            marks[a:b, columns[int(rng.integers(0, len(columns)))]] = 2 if rng.random() < 0.3 else 1
    return marks


def synth_session(
    rng: np.random.Generator, subj: _Subject, layout: FameLayout, patterns: dict
) -> np.ndarray:
    """One raw FAME matrix (frames x 160) for a subject."""
    plan = _session_plan(rng)
    gaps = [int(rng.uniform(1, 3) * FRAME_RATE) for _ in plan]
    n = sum(f for _, _, f in plan) + sum(gaps)
    matrix = np.zeros((n, N_COLUMNS), dtype=np.float32)
    protective = np.zeros(n, dtype=np.float64)
    exercise_col = {name: layout.exercise_start + i for i, name in enumerate(layout.exercises)}
    t = 0
    spans, instances, pieces = [], [], []
    for (movement, difficult, frames), gap in zip(plan, gaps, strict=True):
        t += gap
        name = f"{movement}_difficult" if difficult else movement
        matrix[t : t + frames, exercise_col[name]] = 1
        if movement in MOVEMENTS:
            hardness = MOVEMENTS[movement][1] * (1.6 if difficult else 1.0)
            if rng.random() < min(0.95, subj.propensity * hardness):
                a, b = _episode(rng, frames, (0.5, 1.0))
                protective[t + a : t + b] = 1
                spans.append((t + a, t + b))
            instances.append((t, t + frames))
        pieces.append((movement, t, t + frames))
        t += frames
    guard = np.clip(_smooth(protective, int(GUARD_SMOOTH_S * FRAME_RATE)), 0, 1)
    # the gaps are quiet standing
    still = np.ones(n, dtype=bool)
    for _, a, b in pieces:
        still[a:b] = False
    pieces += [("standing_still", a, b) for a, b in _runs(still)]
    for movement, a, b in pieces:
        angles, energies, emg = _instance_signals(rng, subj, movement, guard[a:b], patterns)
        matrix[a:b, list(layout.motion[:N_ANGLES])] = angles
        matrix[a:b, list(layout.motion[N_ANGLES:])] = energies
        matrix[a:b, list(layout.emg)] = emg
    matrix[:, list(layout.raters)] = _rater_marks(rng, subj, spans, n, instances, layout)
    return matrix


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def write_synthetic_cohort(
    out_dir: str | os.PathLike,
    *,
    n_subjects: int = 30,
    seed: int = 0,
    n_healthy: int | None = None,
    fmt: str = "mat",
) -> list[Path]:
    """Writes one session per subject: raw FAME .mat files under ``randomised C`` /
    ``randomised P`` (``fmt="mat"``), or ``<subject>.csv`` challenge-style files in ``out_dir``
    (``fmt="csv"``: the 30 signals of :data:`~poolwise.pain.data.layout.CHANNEL_NAMES` and the
    frame label fused from the raters as in the FAME reader, 2 of 4 raters).

    Args:
        out_dir: Destination folder (created).
        n_subjects: Subjects in all; the default 30 gives about 4,000 windows.
        seed: Everything (subjects, sessions, raters, variable names) follows from it; both
            formats hold the same sessions.
        n_healthy: Healthy controls; default 40 % of the subjects (12 of 30, as EmoPain).
        fmt: ``"mat"`` or ``"csv"``.

    Returns:
        The files written, each atomically (temporary file, then rename).
    """
    if fmt not in ("mat", "csv"):
        raise ValueError(f"fmt={fmt!r} is not one of 'mat', 'csv'")
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    n_healthy = round(0.4 * n_subjects) if n_healthy is None else n_healthy
    if not 0 <= n_healthy <= n_subjects:
        raise ValueError(f"n_healthy={n_healthy} is not in [0, n_subjects={n_subjects}]")
    layout = FameLayout()
    patterns = _movement_patterns()
    root = Path(out_dir)
    written = []
    for i in range(n_subjects):
        healthy = i < n_healthy
        name = f"C{i + 1:02d}" if healthy else f"P{i - n_healthy + 1:02d}"
        rng = np.random.default_rng([seed, i])
        subj = _subject(rng, name, "healthy" if healthy else "CLBP")
        matrix = synth_session(rng, subj, layout, patterns)
        variable = ["data", "mat", "session", f"{name}_fame"][int(rng.integers(0, 4))]
        if fmt == "mat":
            folder = root / ("randomised C" if healthy else "randomised P")
            buffer = io.BytesIO()
            scipy.io.savemat(buffer, {variable: matrix}, do_compression=True)
            written.append(write_bytes(folder / f"{name}.mat", buffer.getvalue()))
        else:
            written.append(write_text(root / f"{name}.csv", _challenge_csv(matrix, layout)))
    return written


def _challenge_csv(matrix: np.ndarray, layout: FameLayout) -> str:
    from poolwise.pain.data.fame import matrix_frame_labels

    labels = matrix_frame_labels(matrix, layout).astype(np.float64)
    table = np.column_stack([matrix[:, list(layout.signals)], labels])
    buffer = io.StringIO()
    buffer.write(",".join([*CHANNEL_NAMES, "protective"]) + "\n")
    np.savetxt(buffer, table, delimiter=",", fmt="%.7g")
    return buffer.getvalue()
