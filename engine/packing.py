"""Packed runs: K networks of one architecture (one per seed) trained as one module in one step (issue 11).

`PackedNet` stacks the K networks' parameters and buffers along a new leading dimension
(`torch.func.stack_module_state`) and runs them with `vmap(functional_call)`: the input is the K slots'
batches concatenated slot-major, (K*B, ...), the output (K*B, C). Each slot keeps exactly its own seed's initial
weights; batch norm keeps per-slot running statistics; gradients of a sum of per-slot losses reach each slot's
parameters only from its own terms; element-wise optimizers (SGD, Adam) over the stacked tensors update each
slot as its own optimizer would. So a packed run equals K unpacked runs up to float rounding.

A network can be packed when its forward is deterministic and it has no per-update hook: no dropout with p > 0
(vmap draws other masks than an unpacked run) and no `apply_constraints`. Whether a method can be packed is the
method's declaration (`Method.packable`).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap


def unpackable_reason(net: nn.Module) -> str | None:
    """Why `net` cannot be packed, or None when it can."""
    if hasattr(net, "apply_constraints"):
        return f"{type(net).__name__} applies constraints after every update"
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return f"{type(net).__name__} has dropout (p={m.p})"
    return None


class PackedNet(nn.Module):
    """K networks of one architecture as one module: (K*B, ...) in, (K*B, C) out, slot-major."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        for net in nets:
            why = unpackable_reason(net)
            if why:
                raise ValueError(f"cannot pack: {why}")
        self.k = len(nets)
        params, buffers = stack_module_state(nets)
        self._pnames, self._bnames = list(params), list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(params[n].detach().clone(),
                                                     requires_grad=params[n].requires_grad) for n in self._pnames)
        for i, n in enumerate(self._bnames):
            self.register_buffer(f"buf{i}", buffers[n].clone())
        base = copy.deepcopy(nets[0]).to("meta")
        object.__setattr__(self, "base", base)  # a template, not a submodule: its meta tensors are not state
        self.train(nets[0].training)

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.train(mode)
        return self

    def _state(self):
        params = dict(zip(self._pnames, self.stacked))
        buffers = {n: getattr(self, f"buf{i}") for i, n in enumerate(self._bnames)}
        return params, buffers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params, buffers = self._state()

        def one(p, b, xi):
            return functional_call(self.base, (p, b), (xi,))

        return vmap(one, randomness="different")(params, buffers, x.unflatten(0, (self.k, -1))).flatten(0, 1)

    def slot_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Slot k's state as the unpacked network's `state_dict` (for checkpoints other runs restore)."""
        params, buffers = self._state()
        return {n: t[k].detach().clone() for n, t in {**params, **buffers}.items()}
