"""A deep ensemble: several networks trained alike with different seeds, their softmax averaged.

Averaging the class probabilities of independently initialised and trained networks reduces the
part of the error that depends on the seed (Lakshminarayanan et al., "Simple and scalable predictive
uncertainty estimation using deep ensembles", NeurIPS 2017); nnU-Net averages its five
cross-validation models the same way (Isensee et al. 2021).  For small lesions the seed decides
which false positives a single network makes, and different seeds make different ones, so the
average keeps the lesions they agree on.

:class:`Ensemble` is a drop-in ``nn.Module``: its output is the *log* of the mean softmax, so every
prediction path that applies ``softmax`` to a network's output (slices, sliding window, test-time
mirroring, validation) gets exactly the mean probability, ``softmax(log p̄) = p̄``.
"""

from __future__ import annotations

import torch
from torch import nn


class Ensemble(nn.Module):
    """Mean softmax of ``members`` (same input and output channels), returned as log-probabilities.

    Shapes: input ``(N, C_in, *S)`` float; output ``(N, C_out, *S)`` float32, ``log`` of the mean
    over members of ``softmax(member(x), dim=1)`` (deep supervision: the full-resolution head).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.size_divisor = int(getattr(members[0], "size_divisor", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for m in self.members:
            out = m(x)
            out = out[0] if isinstance(out, list | tuple) else out
            p = torch.softmax(out.float(), dim=1)
            total = p if total is None else total + p
        return torch.log((total / len(self.members)).clamp_min(1e-12))
