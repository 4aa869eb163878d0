"""Writes a random Llama for `harness bench --model DIR`: python3 ci/make-bench-llama.py OUT_DIR [device] [--size 1b|155m]
  1b   (default): TinyLlama-1.1B's shape (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 kv heads, vocab 32000),
       bf16 safetensors; the GPU bench.
  155m: hidden 1024, intermediate 2816, 8 layers, 16 heads, 4 kv heads, vocab 32000, rope_theta 5e5, rms_norm_eps 1e-5,
       fp32 safetensors; the CPU bench (issue 15). With the reference interpreter:
       ~/.cache/harness/reference-python ci/make-bench-llama.py /tmp/llama155m cpu --size 155m
       (inside the chroot /tmp is ~/.cache/harness/forky/tmp), or `harness bench --random-llama 155m`, which does this."""
import sys
import torch
import transformers

args = [a for a in sys.argv[1:]]
size = "1b"
if "--size" in args:
    i = args.index("--size")
    size = args[i + 1]
    del args[i:i + 2]
out = args[0]
device = args[1] if len(args) > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
if size == "1b":
    config = transformers.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                                      rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu", initializer_range=0.02)
    dtype = torch.bfloat16
elif size == "155m":
    config = transformers.LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                                      rope_theta=500000.0, tie_word_embeddings=False, hidden_act="silu", initializer_range=0.02)
    dtype = torch.float32
else:
    sys.exit(f"make-bench-llama.py: unknown --size '{size}'; known: 1b, 155m")
torch.manual_seed(0)
with torch.device(device):
    model = transformers.LlamaForCausalLM(config).to(dtype)
model.save_pretrained(out, safe_serialization=True)
print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f}B parameters")
