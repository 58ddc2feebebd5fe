"""What a LOSO run is: the model, its protocol, training, seed and model arguments
(``run.json`` holds :meth:`LosoConfig.to_dict` with the data's description)."""

from __future__ import annotations

from dataclasses import dataclass, field

from poolwise.pain.loso.protocols import Protocol, make_protocol
from poolwise.pain.models import list_models
from poolwise.pain.train import TrainConfig


@dataclass(frozen=True)
class LosoConfig:
    """A LOSO (or challenge) run's configuration; checked on construction."""

    model: str
    protocol: str = "clean"
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    n_select_subjects: int = 3
    model_kwargs: dict = field(default_factory=dict)
    split: dict | None = None

    def __post_init__(self) -> None:
        self.evaluation  # noqa: B018 (checks the protocol's name and its split)
        if self.n_select_subjects < 1:
            raise ValueError("n_select_subjects must be at least 1")
        if self.model not in list_models():
            raise ValueError(f"unknown pain model {self.model!r}; known: "
                             f"{', '.join(list_models())}")
        # the model's arguments are checked against the data's shape by run_loso

    @property
    def evaluation(self) -> Protocol:
        """The run's protocol, with its parameters (:mod:`poolwise.pain.loso.protocols`)."""
        return make_protocol(self.protocol, n_select_subjects=self.n_select_subjects,
                             seed=self.seed, split=self.split)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "protocol": self.protocol,
            "train": self.train.to_dict(),
            "seed": self.seed,
            "n_select_subjects": self.n_select_subjects,
            "model_kwargs": self.model_kwargs,
            **({"split": self.split} if self.split is not None else {}),
        }
