"""Writes a random Gemma3n text checkpoint (Gemma3nForCausalLM, model_type gemma3n_text) of hidden 64 that keeps
Gemma3n-E2B's real per-layer embedding table: vocab_size_per_layer_input 262144 x (30 layers x hidden_size_per_layer_input
256), bf16: 4,026,531,840 bytes, past the 2 GiB a span or a managed array holds (issue 22: "tensor
'model.embed_tokens_per_layer.weight': 4026531840 bytes exceeds the engine's per-tensor storage limit"). Every other
field is small and off the library default. The table is written by piece (64 MB at a time), so writing it never holds
more than one piece plus the small tensors; nothing else of the model is ever materialised at full size (the model is
built on the meta device for its parameter names and shapes).

  ~/.cache/harness/reference-python ci/make-gemma3n-ple.py /tmp/gemma3n-ple      (inside the chroot /tmp is
  ~/.cache/harness/forky/tmp), then
  harness compare --model ~/.cache/harness/forky/tmp/gemma3n-ple --dtype bf16 --tp 2 --prompt 2,139811,200000,262143,17,5

Sources of the kept values: E2B's config.json (google/gemma-3n-E2B-it, text_config): num_hidden_layers 30,
hidden_size_per_layer_input 256, vocab_size_per_layer_input 262144 (transformers' Gemma3nTextConfig defaults are E4B's:
35 layers)."""
import json
import os
import struct
import sys

import torch
import transformers

out = sys.argv[1]
layers = 30
config = transformers.Gemma3nTextConfig(
    vocab_size=262_272,                      # >= vocab_size_per_layer_input, so prompt ids reach every per-layer row (default 262400)
    vocab_size_per_layer_input=262_144,      # E2B's (the kept table)
    hidden_size_per_layer_input=256,         # E2B's (the kept table)
    num_hidden_layers=layers,                # E2B's (the kept table)
    hidden_size=64,
    intermediate_size=[96 if i % 2 == 0 else 80 for i in range(layers)],
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    layer_types=["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(layers)],
    sliding_window=5,
    num_kv_shared_layers=10,
    laurel_rank=8,
    altup_num_inputs=3,
    altup_active_idx=1,
    altup_correct_scale=True,
    activation_sparsity_pattern=[0.8] * 6 + [0.0] * (layers - 6),
    max_position_embeddings=160,
    rms_norm_eps=3e-6,
    hidden_activation="silu",
    final_logit_softcapping=9.5,
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 700.0},
                     "full_attention": {"rope_type": "default", "rope_theta": 30000.0}},
    pad_token_id=0, bos_token_id=2, eos_token_id=1,
    tie_word_embeddings=True,
)
config.architectures = ["Gemma3nForCausalLM"]
config.dtype = torch.bfloat16

with torch.device("meta"):
    model = transformers.Gemma3nForCausalLM(config)
shapes = {name: tuple(t.shape) for name, t in model.state_dict().items() if name != "lm_head.weight"}
big = "model.embed_tokens_per_layer.weight"
assert shapes[big] == (262_144, layers * 256), shapes[big]

gen = torch.Generator().manual_seed(22)


def random_small(name, shape):
    """The worker's Gemma3n randomisation (ext/gemma3n.py _gemma3n_randomize): every parameter off its initial value."""
    leaf = name.split(".")
    if name.endswith("norm.weight") or "norm" in leaf[-2] or name.endswith("correct_output_scale"):
        t = 1.0 + 0.2 * torch.randn(shape, generator=gen)
    elif len(shape) == 2 and "embed_tokens" in name:
        t = 0.5 * torch.randn(shape, generator=gen)
    elif len(shape) >= 2:
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        t = torch.randn(shape, generator=gen) / fan_in ** 0.5
    else:
        t = 0.5 * torch.randn(shape, generator=gen)
    return t.to(torch.bfloat16).contiguous()


small = {name: random_small(name, shape) for name, shape in shapes.items() if name != big}

# safetensors layout: the header lists tensors in data order; all are BF16 here, ordered by name as the crate does.
names = sorted(shapes)
header, offset = {"__metadata__": {"format": "pt"}}, 0
for name in names:
    n = 1
    for d in shapes[name]:
        n *= d
    header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, offset + 2 * n]}
    offset += 2 * n
blob = json.dumps(header, separators=(",", ":")).encode()
blob += b" " * (-len(blob) % 8)

os.makedirs(out, exist_ok=True)
rows_per_piece = 4096
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name in names:
        if name != big:
            f.write(small[name].view(torch.uint8).numpy().tobytes())
            continue
        rows, cols = shapes[big]
        for r in range(0, rows, rows_per_piece):
            piece = (0.5 * torch.randn((min(rows_per_piece, rows - r), cols), generator=gen)).to(torch.bfloat16)
            f.write(piece.view(torch.uint8).numpy().tobytes())
config.to_json_file(os.path.join(out, "config.json"))
total = sum(t.numel() for t in small.values()) + shapes[big][0] * shapes[big][1]
print(f"wrote {out}: {total / 1e9:.3f}B parameters, {big} {list(shapes[big])} bf16 = {2 * shapes[big][0] * shapes[big][1]} bytes")
