"""Column layouts of the EmoPain files, as documented, overridable objects.

Raw per-session .mat files ("FAME" layout) hold one matrix, rows = frames at 60 Hz, with 0-based
columns: 78-81 four sEMG envelopes; 83-109 rater labels (four raters x seven behaviours, rater r
behaviour b at 83 + 7 r + b, values 0/1/2); 110-133 24 exercise indicators (1 while the exercise
runs); 134-159 26 motion features (13 joint angles, then 13 joint energies).

The model input has 30 signal columns in the order of the challenge files: 13 angles,
13 energies, 4 sEMG (:data:`CHANNEL_NAMES`).

The documented rater rule (rater r, behaviour b at 83 + 7 r + b for r < 4, b < 7) reaches
column 110, which the same documentation gives as the first exercise indicator (and the rater
block as 83-109). The two cannot both hold; :class:`FameLayout` keeps the documented blocks and
ends the rater block at ``rater_stop`` = 110 (exclusive), so rater 3 has behaviours 0-5 and
behaviour 6 of rater 3 is read as absent. Change ``rater_stop``/``exercise_start`` if a release
says otherwise.

Which exercise each of the 24 indicator columns marks is not part of the documented format.
:data:`DEFAULT_EXERCISES` is poolwise's assumption (12 movements x a normal and a difficult
instance) and is what ``poolwise pain synth`` writes; a user with the real files passes the
exercise names of their release to :class:`FameLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

N_ANGLES = 13
CHANNEL_NAMES: tuple[str, ...] = (
    *(f"angle_{j:02d}" for j in range(N_ANGLES)),
    *(f"energy_{j:02d}" for j in range(N_ANGLES)),
    *(f"emg_{k}" for k in range(4)),
)

_MOVEMENTS = (
    "sitting_still",
    "standing_still",
    "walking",
    "one_leg_stand",
    "reach_forward",
    "sit_to_stand",
    "stand_to_sit",
    "sit_to_stand_instructed",
    "stand_to_sit_instructed",
    "bend",
    "bend_pick_up",
    "transition",
)
DEFAULT_EXERCISES: tuple[str, ...] = (
    *_MOVEMENTS,
    *(f"{m}_difficult" for m in _MOVEMENTS),
)
_EXCLUDED = {"sitting_still", "standing_still", "walking", "transition"}
DEFAULT_USED_EXERCISES: frozenset[str] = frozenset(
    e for e in DEFAULT_EXERCISES if e.removesuffix("_difficult") not in _EXCLUDED
)


@dataclass(frozen=True)
class FameLayout:
    """Where each signal lives in a raw FAME matrix (0-based columns).

    Attributes:
        emg: The four sEMG envelope columns.
        rater_start: First rater-label column; rater r, behaviour b is at
            ``rater_start + n_behaviours * r + b``.
        rater_stop: End (exclusive) of the rater block; cells at or past it do not exist.
        n_raters, n_behaviours: 4 and 7 in EmoPain.
        exercise_start: First of the exercise indicator columns.
        exercises: One name per indicator column, in column order.
        used_exercises: The exercises that are windowed; the others are dropped.
        motion_start: First of the 26 motion columns (13 angles, then 13 energies).
    """

    emg: tuple[int, ...] = (78, 79, 80, 81)
    rater_start: int = 83
    rater_stop: int = 110
    n_raters: int = 4
    n_behaviours: int = 7
    exercise_start: int = 110
    exercises: tuple[str, ...] = DEFAULT_EXERCISES
    used_exercises: frozenset[str] = field(default=DEFAULT_USED_EXERCISES)
    motion_start: int = 134

    @property
    def motion(self) -> tuple[int, ...]:
        return tuple(range(self.motion_start, self.motion_start + 2 * N_ANGLES))

    @property
    def signals(self) -> tuple[int, ...]:
        """The 30 model columns in :data:`CHANNEL_NAMES` order."""
        return (*self.motion, *self.emg)

    @property
    def rater_cells(self) -> tuple[tuple[int, int, int], ...]:
        """(rater, behaviour, column) of every rater-label column that exists."""
        cells = []
        for r in range(self.n_raters):
            for b in range(self.n_behaviours):
                col = self.rater_start + self.n_behaviours * r + b
                if col < self.rater_stop:
                    cells.append((r, b, col))
        return tuple(cells)

    @property
    def raters(self) -> tuple[int, ...]:
        return tuple(col for _, _, col in self.rater_cells)

    @property
    def exercise_columns(self) -> tuple[int, ...]:
        return tuple(range(self.exercise_start, self.exercise_start + len(self.exercises)))

    @property
    def n_columns(self) -> int:
        return 1 + max(*self.signals, *self.raters, *self.exercise_columns)

    def column_role(self, col: int) -> str:
        """A human-readable name of a column, for error messages."""
        if col in self.emg:
            return f"column {col} (sEMG {self.emg.index(col)})"
        if col in self.motion:
            return f"column {col} ({CHANNEL_NAMES[col - self.motion_start]})"
        for r, b, c in self.rater_cells:
            if c == col:
                return f"column {col} (rater {r}, behaviour {b})"
        if col in self.exercise_columns:
            return f"column {col} (exercise {self.exercises[col - self.exercise_start]})"
        return f"column {col}"
