"""WordCNN (Kim 2014) in random mode, CNN-rand: embedding 300 drawn from U[-0.25, 0.25], filter widths 3/4/5 with
100 feature maps each, ReLU, max-over-time pooling, dropout 0.5, and a max-norm (l2 <= 3) constraint on the
output layer's per-class weight vectors, applied after each update (`apply_constraints`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model


class WordCNN(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int, widths: tuple[int, ...], maps: int,
                 dropout: float, max_norm: float | None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        nn.init.uniform_(self.embed.weight, -0.25, 0.25)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, maps, w) for w in widths)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(maps * len(widths), num_classes)
        self.max_norm = max_norm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.embed(tokens).transpose(1, 2)  # N x D x L
        h = torch.cat([F.relu(c(e)).amax(dim=2) for c in self.convs], dim=1)
        return self.fc(self.drop(h))

    @torch.no_grad()
    def apply_constraints(self) -> None:
        if self.max_norm:
            self.fc.weight.copy_(torch.renorm(self.fc.weight, p=2, dim=0, maxnorm=self.max_norm))


@register_model("wordcnn", input_kind="text")
def wordcnn(num_classes: int, in_shape: tuple[int, ...], vocab_size: int, embed_dim: int = 300,
            widths: tuple[int, ...] = (3, 4, 5), maps: int = 100, dropout: float = 0.5,
            max_norm: float | None = 3.0) -> nn.Module:
    return WordCNN(vocab_size, num_classes, embed_dim, tuple(widths), maps, dropout, max_norm)
