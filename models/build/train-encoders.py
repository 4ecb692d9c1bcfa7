#!/usr/bin/env python3
# Trains the two bundled BERT-style encoders (sentiment classifier, sentence embedder) with PyTorch and exports
# them to ONNX; also writes the untrained MiniLM-shaped benchmark encoder. Called by scripts/build-models.ts
# (`/usr/bin/python3 models/build/train-encoders.py JOB.json`), which tokenises the data and checks the files.
# Needs Debian's python3-torch (1.13) and python3-onnx; CI never runs it: the ONNX files are committed.
import json
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from encoder import Encoder, EncoderConfig, masked_mean
from quantize import quantize_dynamic_int8

# One thread and deterministic kernels: a re-run on the same machine writes the same bytes.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


class Classifier(nn.Module):
    """Encoder, masked mean over tokens, a tanh layer (BERT's pooler), then one logit per label."""

    def __init__(self, cfg: EncoderConfig, labels: int):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.pooler = nn.Linear(cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, labels)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids, attention_mask)
        pooled = torch.tanh(self.pooler(masked_mean(hidden, attention_mask)))
        return self.head(self.drop(pooled))


class Embedder(nn.Module):
    """Encoder; last_hidden_state, and its masked mean L2-normalised as sentence_embedding."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.encoder = Encoder(cfg)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids, attention_mask)
        return hidden, F.normalize(masked_mean(hidden, attention_mask), dim=-1)


def pad(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def word_dropout(ids, mask, rate, mask_id, generator):
    """Hides a share of the words (never [CLS]/[SEP]/padding) behind [MASK], so no single word decides."""
    inner = mask.clone()
    inner[:, 0] = 0
    inner[torch.arange(ids.shape[0]), mask.sum(1) - 1] = 0
    hide = (torch.rand(ids.shape, generator=generator) < rate) & (inner == 1)
    return torch.where(hide, torch.full_like(ids, mask_id), ids)


def schedule(step, total, warmup):
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(model, batches_per_epoch, epochs, settings, loss_of, extra=()):
    opt = torch.optim.AdamW([*model.parameters(), *extra], lr=settings["lr"], weight_decay=settings["weight_decay"])
    total = batches_per_epoch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, total, total // 10))
    model.train()
    last = 0.0
    for epoch in range(epochs):
        running = 0.0
        for b in range(batches_per_epoch):
            loss = loss_of(epoch, b)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_([*model.parameters(), *extra], 1.0)
            opt.step()
            sched.step()
            running += loss.item()
        last = running / batches_per_epoch
        if epoch % 10 == 0 or epoch == epochs - 1:
            print(f"  epoch {epoch:3d} loss {last:.4f}", flush=True)
    model.eval()
    return last


def train_classifier(job):
    """Teachers of the same shape from other seeds, then the shipped student distilled from their mean.

    A few hundred reviews give a model whose held-out accuracy swings several points with the seed; the mean
    of several seeds' probabilities swings less, and distilling it into one model keeps the runners' cost.
    """
    s = job["classifier"]
    teachers = [fit_classifier(job, {**s, "seed": s["seed"] + k + 1}, [])[0] for k in range(s["teachers"])]
    student, loss = fit_classifier(job, s, teachers)
    # The validation sentences (never trained on) pick the model shipped: the student unless a teacher beats it.
    ids, mask = pad([e["ids"] for e in job["validation"]], job["pad_id"])
    labels = torch.tensor([e["label"] for e in job["validation"]])
    with torch.no_grad():
        scores = [round(float((m(ids, mask).argmax(-1) == labels).float().mean()), 4) for m in [student, *teachers]]
        mean = sum(m(ids, mask).softmax(-1) for m in teachers)
        mean_score = round(float((mean.argmax(-1) == labels).float().mean()), 4)
    print(f"  validation: student {scores[0]}, teachers {scores[1:]}, teachers' mean {mean_score}", flush=True)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    chosen = "student" if best == 0 else f"teacher {best}"
    validation = {"student": scores[0], "teachers": scores[1:], "teachers_mean": mean_score, "shipped": chosen}
    return [student, *teachers][best], loss, validation


def fit_classifier(job, s, teachers):
    """Cross-entropy on the labels; with teachers, mixed with the KL to their mean at temperature T (Hinton's)."""
    torch.manual_seed(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    model = Classifier(EncoderConfig.of(job, s), 2)
    data = job["train"] + job.get("lexicon", [])
    size = s["batch_size"]
    order = []
    t, alpha = s["temperature"], s["distill_weight"] if teachers else 0.0

    def loss_of(epoch, b):
        nonlocal order
        if b == 0:
            order = torch.randperm(len(data), generator=gen).tolist()
        chunk = [data[i] for i in order[b * size : (b + 1) * size]]
        ids, mask = pad([e["ids"] for e in chunk], job["pad_id"])
        ids = word_dropout(ids, mask, s["word_dropout"], job["mask_id"], gen)
        labels = torch.tensor([e["label"] for e in chunk])
        logits = model(ids, mask)
        loss = F.cross_entropy(logits, labels, label_smoothing=s["label_smoothing"])
        if not teachers:
            return loss
        with torch.no_grad():
            # The teachers see the same words hidden: the student learns their view of this very input.
            target = sum((m(ids, mask) / t).softmax(-1) for m in teachers) / len(teachers)
        soft = F.kl_div((logits / t).log_softmax(-1), target, reduction="batchmean") * t * t
        return (1 - alpha) * loss + alpha * soft

    role = "student" if teachers else f"teacher (seed {s['seed']})"
    print(f"sentiment {role}: {sum(p.numel() for p in model.parameters())} parameters", flush=True)
    return model, train(model, math.ceil(len(data) / size), s["epochs"], s, loss_of)


def train_embedder(job):
    """Cosine softmax towards learned topic and sentiment proxies, plus in-batch contrast of paraphrase pairs."""
    s = job["embedder"]
    torch.manual_seed(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    model = Embedder(EncoderConfig.of(job, s))
    topics = nn.Parameter(torch.randn(job["topics"], s["hidden"], generator=gen))
    moods = nn.Parameter(torch.randn(2, s["hidden"], generator=gen))
    data = [e for e in job["train"] if e["topic"] >= 0]
    pairs = job["pairs"]
    size = s["batch_size"]
    order, pair_order = [], []

    def embed(rows):
        ids, mask = pad(rows, job["pad_id"])
        return model(word_dropout(ids, mask, s["word_dropout"], job["mask_id"], gen), mask)[1]

    def loss_of(epoch, b):
        nonlocal order, pair_order
        if b == 0:
            order = torch.randperm(len(data), generator=gen).tolist()
            pair_order = torch.randperm(len(pairs), generator=gen).tolist()
        chunk = [data[i] for i in order[b * size : (b + 1) * size]]
        u = embed([e["ids"] for e in chunk])
        scale = s["scale"]
        topic_logits = scale * u @ F.normalize(topics, dim=-1).T
        mood_logits = scale * u @ F.normalize(moods, dim=-1).T
        loss = F.cross_entropy(topic_logits, torch.tensor([e["topic"] for e in chunk]))
        loss = loss + s["sentiment_weight"] * F.cross_entropy(mood_logits, torch.tensor([e["label"] for e in chunk]))
        p = [pairs[i] for i in pair_order[(b * size) % len(pairs) :][:size]]
        if len(p) > 1:
            a, c = embed([x[0] for x in p]), embed([x[1] for x in p])
            target = torch.arange(len(p))
            loss = loss + s["pair_weight"] * F.cross_entropy(scale * a @ c.T, target)
        return loss

    print(f"embedder: {sum(p.numel() for p in model.encoder.parameters())} parameters", flush=True)
    loss = train(model, math.ceil(len(data) / size), s["epochs"], s, loss_of, extra=(topics, moods))
    return model, loss


def export(model, path, outputs, max_length, pad_id):
    """torch.onnx.export at opset 17 (LayerNormalization as one op), batch and sequence axes dynamic."""
    ids = torch.tensor([[2, 7, 8, 3, pad_id], [2, 9, 3, pad_id, pad_id]], dtype=torch.long)
    mask = (ids != pad_id).long()
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    for name in outputs:
        axes[name] = {0: "batch", 1: "sequence"} if name == "last_hidden_state" else {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask),
            path,
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
        )


def main():
    job = json.load(open(sys.argv[1], encoding="utf8"))
    out = job["out"]
    log = {}
    if job.get("bench"):
        cfg = EncoderConfig.of(job, job["bench"])
        torch.manual_seed(job["bench"]["seed"])
        model = Embedder(cfg).eval()
        count = sum(p.numel() for p in model.parameters())
        print(f"bench encoder: {count} parameters", flush=True)
        export(model, f"{out}/model.onnx", ["last_hidden_state", "sentence_embedding"], job["max_length"], job["pad_id"])
        quantize_dynamic_int8(f"{out}/model.onnx", f"{out}/model_quantized.onnx")
        log["parameters"] = count
    else:
        classifier, loss, validation = train_classifier(job)
        export(classifier, f"{out}/sentiment.onnx", ["logits"], job["max_length"], job["pad_id"])
        log["sentiment"] = {
            "final_loss": round(loss, 4),
            "parameters": sum(p.numel() for p in classifier.parameters()),
            "validation": validation,
        }
        embedder, loss = train_embedder(job)
        export(embedder, f"{out}/embedder.onnx", ["last_hidden_state", "sentence_embedding"], job["max_length"], job["pad_id"])
        log["embedder"] = {"final_loss": round(loss, 4), "parameters": sum(p.numel() for p in embedder.encoder.parameters())}
    json.dump(log, open(f"{out}/train-log.json", "w", encoding="utf8"))


if __name__ == "__main__":
    main()
