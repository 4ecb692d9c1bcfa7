#!/usr/bin/env python3
# Trains the bundled GPT-style decoder (causal self-attention, pre-LayerNorm, GELU MLP, tied LM head) on the
# already-tokenised documents of JOB.json and exports it to ONNX with a KV cache in the Optimum layout; with
# "random": true it only initialises (the benchmark decoder). Called by models/build/decoder-model.ts
# (`/usr/bin/python3 models/build/train-decoder.py JOB.json`); needs Debian's python3-torch and python3-onnx.
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

# One thread and deterministic kernels: a re-run on the same machine writes the same bytes.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


class Block(nn.Module):
    def __init__(self, hidden, heads, dropout):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc = nn.Linear(hidden, 4 * hidden)
        self.out = nn.Linear(4 * hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, past_k, past_v):
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=2)
        split = lambda t: t.view(b, s, self.heads, h // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), torch.cat([past_k, split(k)], dim=2), torch.cat([past_v, split(v)], dim=2)
        scores = (q @ k.transpose(2, 3)) / math.sqrt(h // self.heads)
        # Where, not -inf: a left-padding row whose keys are all masked gets a uniform (ignored) row, never NaN.
        scores = torch.where(mask, scores, torch.full_like(scores, -1e9))
        att = self.drop(F.softmax(scores, dim=-1)) @ v
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, s, h)))
        x = x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))
        return x, k, v


class Decoder(nn.Module):
    def __init__(self, vocab, ctx, hidden, layers, heads, dropout):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(ctx, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / (math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 1))
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        # Query i of s sits at absolute position total - s + i and sees keys up to it that the mask keeps.
        s, total = input_ids.shape[1], attention_mask.shape[1]
        query = torch.arange(s).unsqueeze(1) + (total - s)
        causal = torch.arange(total).unsqueeze(0) <= query
        mask = causal.unsqueeze(0).unsqueeze(0) & (attention_mask > 0).unsqueeze(1).unsqueeze(2)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))
        presents = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, mask, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.ln_f(x) @ self.wte.weight.t(), *presents)

    def empty_past(self, batch):
        return [torch.zeros(batch, self.heads, 0, self.head_dim) for _ in range(2 * len(self.blocks))]


def batches(docs, ctx, batch, steps, generator):
    """Windows of ctx + 1 tokens, each starting at a document and running on through the next ones."""
    stream = [t for d in docs for t in d]
    starts, at = [], 0
    for d in docs:
        starts.append(at)
        at += len(d)
    stream += stream[: ctx + 1]
    for _ in range(steps):
        picks = torch.randint(len(starts), (batch,), generator=generator).tolist()
        yield torch.tensor([stream[starts[p] : starts[p] + ctx + 1] for p in picks], dtype=torch.long)


def train(model, docs, s, generator):
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"], betas=(0.9, 0.95))
    ctx, log, began = s["train_ctx"], [], time.time()
    model.train()
    for step, rows in enumerate(batches(docs, ctx, s["batch_size"], s["steps"], generator)):
        lr = s["lr"] * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / s["steps"]))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, targets = rows[:, :-1], rows[:, 1:]
        positions = torch.arange(ctx).unsqueeze(0).expand(len(rows), ctx)
        logits = model(ids, torch.ones_like(ids), positions, *model.empty_past(len(rows)))[0]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == s["steps"] - 1:
            log.append({"step": step, "loss": round(loss.item(), 4)})
            print(f"decoder step {step}: loss {loss.item():.3f} ({time.time() - began:.0f} s)", flush=True)
    model.eval()
    return log


def export(model, layers, path):
    """torch.onnx.export at opset 17 with the Optimum / Transformers.js decoder inputs and outputs."""
    past_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    ids = torch.tensor([[5, 6], [7, 8]], dtype=torch.long)
    past = [torch.zeros(2, model.heads, 3, model.head_dim) for _ in past_names]
    mask = torch.ones(2, 5, dtype=torch.long)
    positions = torch.tensor([[3, 4], [3, 4]], dtype=torch.long)
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    axes.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in past_names})
    axes.update({n: {0: "batch_size", 2: "total_sequence_length"} for n in present_names})
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, positions, *past),
            path,
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *present_names],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
        )


def main():
    job = json.load(open(sys.argv[1]))
    s = job["settings"]
    torch.manual_seed(s["seed"])
    generator = torch.Generator().manual_seed(s["seed"])
    model = Decoder(job["vocab_size"], s["context"], s["hidden"], s["layers"], s["heads"], s.get("dropout", 0.0))
    log = [] if job.get("random") else train(model, job["docs"], s, generator)
    model.eval()
    export(model, s["layers"], f"{job['out']}/decoder.onnx")
    params = sum(p.numel() for p in model.parameters())
    json.dump({"parameters": params, "loss": log}, open(f"{job['out']}/train-log.json", "w"))


if __name__ == "__main__":
    main()
