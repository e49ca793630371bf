"""Server optimizers applied to the mean update (Reddi et al., ICLR 2021, Algorithm 2).

The mean of the hospitals' updates acts as a pseudo-gradient. FedAvg adds it (times the
server learning rate); FedAdam and FedYogi keep first and second moments of it. State is a
plain dict of arrays so a checkpoint can store it.
"""

from dataclasses import dataclass, field

import numpy as np

from common.types import NDArrays


@dataclass(slots=True)
class ServerOptimizer:
    """One of ``fedavg``, ``fedadam``, ``fedyogi`` with its moment state.

    Attributes
    ----------
    name : str
        The optimizer.
    learning_rate : float
        Server learning rate eta (FedAvg: 1.0 means plain averaging).
    beta_1, beta_2, tau : float
        Moment decay rates and the adaptivity (epsilon) of Reddi et al.
    """

    name: str
    learning_rate: float
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    state: dict[str, NDArrays] = field(default_factory=dict)

    def step(self, weights: NDArrays, mean_update: NDArrays) -> NDArrays:
        """Return the new global weights from the current ones and the mean update."""
        if self.name == "fedavg":
            return [w + self.learning_rate * d for w, d in zip(weights, mean_update, strict=True)]
        m = self.state.get("m") or [np.zeros_like(d) for d in mean_update]
        v = self.state.get("v") or [np.full_like(d, self.tau**2) for d in mean_update]
        m = [self.beta_1 * mi + (1 - self.beta_1) * d
             for mi, d in zip(m, mean_update, strict=True)]
        if self.name == "fedadam":
            v = [self.beta_2 * vi + (1 - self.beta_2) * d**2
                 for vi, d in zip(v, mean_update, strict=True)]
        elif self.name == "fedyogi":
            v = [vi - (1 - self.beta_2) * d**2 * np.sign(vi - d**2)
                 for vi, d in zip(v, mean_update, strict=True)]
        else:
            raise ValueError("server optimizer must be fedavg, fedadam or fedyogi, "
                             f"got {self.name!r}")
        self.state = {"m": m, "v": v}
        return [
            (w + self.learning_rate * mi / (np.sqrt(vi) + self.tau)).astype(w.dtype)
            for w, mi, vi in zip(weights, m, v, strict=True)
        ]
