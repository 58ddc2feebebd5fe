"""Recurrent baselines for protective-behaviour detection.

- :class:`BANet`: Wang et al. 2019 ("Learning bodily and temporal attention in protective
  movement behavior detection"). Each of the 13 body segments is the pair (joint angle, joint
  energy) over time; one LSTM shared by all segments encodes each pair sequence, a temporal
  attention per segment summarises it, and a bodily attention across the 13 segments weighs the
  segments before the classifier. As published, it reads the 26 motion columns only; the sEMG
  columns are ignored.
- :class:`RecurrentNet`: a plain GRU or LSTM over all 30 signal columns, classifying from the
  mean of its hidden states over time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from poolwise.pain.models.common import check_batch


class BANet(nn.Module):
    """Args:
    n_channels: Signal columns of the input (angles first, then energies, then the rest).
    n_segments: Body segments: column s is the angle and ``n_segments + s`` the energy.
    hidden: LSTM hidden size.
    attention_dim: Size of the attention scoring layers.
    n_classes: Output classes.
    """

    def __init__(
        self,
        *,
        n_channels: int = 30,
        n_segments: int = 13,
        hidden: int = 32,
        attention_dim: int = 16,
        dropout: float = 0.2,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        if n_channels < 2:
            raise ValueError(f"BANet pairs an angle column with its energy column, so it needs "
                             f"at least 2 channels; the input has {n_channels}")
        if not isinstance(n_segments, int) or n_segments < 1 or 2 * n_segments > n_channels:
            raise ValueError(
                f"n_segments={n_segments!r}: BANet pairs column s (an angle) with column "
                f"n_segments + s (its energy), so it needs 2 x n_segments columns and the input "
                f"has {n_channels}; pass n_segments between 1 and {n_channels // 2} (EmoPain's "
                "30 columns: 13 angle + energy pairs)"
            )
        self.n_channels = n_channels
        self.n_segments = n_segments
        self.lstm = nn.LSTM(2, hidden, batch_first=True)
        self.temporal_score = nn.Sequential(
            nn.Linear(hidden, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1)
        )
        self.bodily_score = nn.Sequential(
            nn.Linear(hidden, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1)
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (segment summaries (B, S, H), temporal weights (B, S, T), bodily (B, S))."""
        check_batch(x, self.n_channels)
        b, _, t = x.shape
        s = self.n_segments
        pairs = torch.stack([x[:, :s], x[:, s : 2 * s]], dim=-1)  # (B, S, T, 2)
        states, _ = self.lstm(pairs.reshape(b * s, t, 2))  # shared over segments
        temporal = torch.softmax(self.temporal_score(states).squeeze(-1), dim=-1)
        summary = torch.einsum("nt,nth->nh", temporal, states).view(b, s, -1)
        bodily = torch.softmax(self.bodily_score(summary).squeeze(-1), dim=-1)
        return summary, temporal.view(b, s, t), bodily

    def forward(self, x: Tensor) -> Tensor:
        summary, _, bodily = self.attention(x)
        return self.classifier(torch.einsum("bs,bsh->bh", bodily, summary))


class RecurrentNet(nn.Module):
    """A GRU or LSTM over all signal columns; classifies the time-averaged hidden states."""

    def __init__(
        self,
        *,
        n_channels: int = 30,
        cell: str = "gru",
        hidden: int = 32,
        layers: int = 2,
        dropout: float = 0.2,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        cells = {"gru": nn.GRU, "lstm": nn.LSTM}
        if cell not in cells:
            raise ValueError(f"cell={cell!r} is not one of {sorted(cells)}")
        self.n_channels = n_channels
        self.rnn = cells[cell](
            n_channels,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x, self.n_channels)
        states, _ = self.rnn(x.transpose(1, 2))
        return self.classifier(states.mean(1))
