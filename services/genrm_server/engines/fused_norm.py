"""RMSNorm as one fused kernel (``torch.nn.functional.rms_norm``) instead of transformers' eight.

transformers' Llama-family RMSNorm upcasts, squares, averages, adds, takes rsqrt, multiplies, downcasts and
scales: eight small kernels, four norms per layer (q/k norms in Qwen3). In a decode step at small batch those
~1,100 kernels of ~2 µs each are a fifth of the GPU time (bench/gpu_step_profile.py). The fused kernel computes
the same normalisation in float32 and rounds once, after the scale (transformers rounds before it): the same
result up to one bfloat16 rounding.
"""

from __future__ import annotations

import types
from typing import Any

import torch

# Norms computing weight * x / rms(x) with `variance_epsilon` (Gemma's (1 + weight) variant is not one of them).
FUSABLE = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Qwen3MoeRMSNorm"}


def _fused_forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.rms_norm(hidden_states, (hidden_states.shape[-1],), self.weight,
                                        self.variance_epsilon)


def fuse(model: Any) -> int:
    """Swap the forward of every fusable norm in ``model``; returns how many were swapped."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in FUSABLE and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count


def unfuse(model: Any) -> None:
    """Back to transformers' own forward (bench ablations)."""
    for module in model.modules():
        if "forward" in vars(module) and type(module).__name__ in FUSABLE:
            del module.forward
