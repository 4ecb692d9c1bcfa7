# The BERT-shaped encoder the bundled models and the benchmark model share (models/build/train-encoders.py):
# token + position embeddings, LayerNorm, then layers of masked multi-head self-attention and a GELU
# feed-forward, each followed by a residual add and LayerNorm (post-LN, as BERT and MiniLM are).
import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EncoderConfig:
    vocab_size: int
    max_length: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    dropout: float

    @staticmethod
    def of(job, settings):
        return EncoderConfig(
            vocab_size=job["vocab_size"],
            max_length=job["max_length"],
            hidden=settings["hidden"],
            layers=settings["layers"],
            heads=settings["heads"],
            ffn=settings["ffn"],
            dropout=settings["dropout"],
        )


def masked_mean(hidden, attention_mask):
    """Mean over the tokens the mask keeps: padding added for other rows of a batch changes nothing."""
    keep = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.heads = cfg.heads
        self.size = cfg.hidden // cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.output = nn.Linear(cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask_bias):
        def split(t):
            return t.reshape(t.shape[0], t.shape[1], self.heads, self.size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # [batch, heads, query, key]: softmax over the key (sequence) axis, masked keys pushed to -10000.
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.size) + mask_bias
        weights = self.drop(scores.softmax(dim=-1))
        context = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], self.heads * self.size)
        return self.output(context)


class Layer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.intermediate = nn.Linear(cfg.hidden, cfg.ffn)
        self.out = nn.Linear(cfg.ffn, cfg.hidden)
        self.out_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask_bias):
        x = self.attention_norm(x + self.drop(self.attention(x, mask_bias)))
        return self.out_norm(x + self.drop(self.out(nn.functional.gelu(self.intermediate(x)))))


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_length, cfg.hidden)
        self.register_buffer("position_ids", torch.arange(cfg.max_length).unsqueeze(0), persistent=False)
        self.embedding_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.apply(init_weights)

    def forward(self, input_ids, attention_mask):
        positions = self.position_ids[:, : input_ids.shape[1]]
        if self.training:
            # A random shift of all positions per batch: trained on short sentences of few shapes, the model
            # would otherwise tie a word's meaning to where it stands. Never taken in export (eval mode).
            room = self.position_ids.shape[1] - input_ids.shape[1]
            positions = positions + int(torch.randint(0, room + 1, (1,)))
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = self.drop(self.embedding_norm(x))
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


def init_weights(module):
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
