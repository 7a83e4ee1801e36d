"""A model the tool has never seen, following the contract a custom factory can return: a small text classifier
(token embedding, GRU, linear head) with its own batch and loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional

from pytest_mlestimate import MeasuredModel

VOCABULARY = 1000


class TextClassifier(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, 32)
        self.gru = nn.GRU(32, 64, batch_first=True)
        self.head = nn.Linear(64, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.embed(tokens))
        last = states[torch.arange(len(tokens)), lengths - 1]
        return self.head(last)


def build(num_classes: int = 4) -> MeasuredModel:
    def make_batch(batch_size: int, input_size: tuple[int, int]) -> tuple[Any, Any]:
        length = input_size[1]
        tokens = torch.randint(0, VOCABULARY, (batch_size, length))
        lengths = torch.full((batch_size,), length)
        return (tokens, lengths), torch.randint(0, num_classes, (batch_size,))

    return MeasuredModel(TextClassifier(num_classes), make_batch, functional.cross_entropy)


def plain_module() -> nn.Module:
    return TextClassifier(4)
