"""How the monitor samples, tests and trains: :class:`MonitorConfig` (the retrain policy says
*when*, per adapter; this says *how*, for the whole monitor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MonitorConfig:
    """How the monitor samples, tests and trains (the policy says *when*; this says *how*)."""

    window_size: int = 200
    """Production inputs in one drift window (the newest ones served by the champion)."""
    window_step: int = 50
    """New inputs needed before the next window is tested (windows slide by at least this)."""
    min_window: int = 50
    """Below this many window inputs a drift test reports insufficient data."""
    min_reference: int = 50
    """Below this many reference (training) inputs a drift test reports insufficient data."""
    drift_threshold: float = 0.01
    """p-value under which a window counts as drifted."""
    n_permutations: int = 500
    """Permutations of the input drift test."""
    quality_window: int = 1000
    """Newest feedback records of the champion used for its quality."""
    quality_min_labels: int = 30
    quality_min_ratings: int = 30
    quality_threshold: float = 0.01
    """p-value under which a quality drop counts (retrain trigger, rollback)."""
    rollback_watch_hours: float = 24.0
    """How long after a monitor promotion the new champion may be rolled back automatically."""
    eval_fraction: float = 0.2
    """Share of feedback examples held out as the new eval split (for the gate)."""
    replay_fraction: float = 0.2
    """Share of the champion's training data replayed into the new training set."""
    hyperparameters: dict[str, Any] | None = None
    """Fine-tuning job hyperparameters (None: the jobs API's "auto" defaults)."""
