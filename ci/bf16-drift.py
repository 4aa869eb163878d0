#!/usr/bin/env python3
"""bf16 drift of make-published-dims.py's random checkpoints: per decoder layer, the relative L2 of the bf16 model's hidden
states against a float64 copy of the same (bf16) weights on the same 64 seeded ids, next to the residual stream's RMS and
the attention's mean max probability. A trained model stays at a few % at the last layer; above ~10% the harness's
per-module verdicts cannot name a bug.

    bf16-drift.py NAME LAYERS [--unconditioned] [--vocab V] [--small]

Run by the reference interpreter on the CPU (HARNESS_PYTHON; inside its chroot the script must be under /tmp). --vocab
shrinks the vocabularies for memory (default 8192; an embedding row's scale does not depend on the vocabulary size);
--unconditioned builds the checkpoint as it was written before condition() (the comparison in
notes/issue-22-conditioning.md).
"""
import argparse
import copy
import importlib.util
import os

import torch

spec = importlib.util.spec_from_file_location("mpd", os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-published-dims.py"))
mpd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mpd)

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("name", choices=sorted(mpd.MODELS))
p.add_argument("layers", type=int)
p.add_argument("--unconditioned", action="store_true")
p.add_argument("--vocab", type=int, default=8192)
p.add_argument("--small", action="store_true", help="make-published-dims' SMALL widths")
a = p.parse_args()
cfg = dict(mpd.MODELS[a.name])
if a.small:
    cfg.update(mpd.SMALL[a.name])
cfg = mpd.keep_layers(cfg, a.layers)
for k in ("vocab_size", "vocab_size_per_layer_input"):
    if k in cfg:
        cfg[k] = a.vocab
model = mpd.build_random(cfg, "bf16", "cpu", 0, conditioned=not a.unconditioned)
model.config._attn_implementation = "eager"  # attention probabilities for the table
m64 = copy.deepcopy(model).to(torch.float64)
if getattr(model.config, "enable_moe_block", False):
    m64.set_experts_implementation("eager")  # grouped_mm takes no float64
ids = torch.randint(3, a.vocab - 100, (1, 64), generator=torch.Generator().manual_seed(1))

maxprob = {}
def record(i):
    def hook(mod, args, kwargs, out):  # out: (attn_output, attn_weights [B, heads, q, k])
        maxprob[i] = out[1].float().amax(-1).mean().item()
    return hook

runs = []
for m in (model, m64):
    layers = m.model.language_model.layers if hasattr(m.model, "language_model") else m.model.layers
    hooks = [l.self_attn.register_forward_hook(record(i), with_kwargs=True) for i, l in enumerate(layers)] if m is model else []
    with torch.no_grad():
        o = m(input_ids=ids, output_hidden_states=True, output_attentions=m is model)
    for h in hooks:
        h.remove()
    runs.append([h.double() for h in o.hidden_states] + [o.logits.double()])

n = len(runs[0])
print(f"{a.name}, {a.layers} layers, {'unconditioned' if a.unconditioned else 'conditioned'}: bf16 vs float64")
print("output       rel_L2   rms(f64)  attn max prob")
for i, (x, ref) in enumerate(zip(*runs)):
    # HF's last hidden state is model.norm's output (Llama, Gemma4) or the last layer's (Gemma3n, before its AltUp collapse)
    label = "embeddings" if i == 0 else "last hidden" if i == n - 2 else "logits" if i == n - 1 else f"layers.{i - 1}"
    mp = maxprob.get(i - 1) if 0 < i < n - 2 else None
    print(f"{label:12s} {((x - ref).norm() / ref.norm()).item():7.4f}  {ref.pow(2).mean().sqrt().item():8.3f}  {'' if mp is None else f'{mp:.3f}'}")
print("greedy token bf16 / float64:", runs[0][-1][0, -1].argmax().item(), runs[1][-1][0, -1].argmax().item())
