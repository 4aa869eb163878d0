"""Writes the random 1.1B Llama the GPU bench uses (TinyLlama-1.1B's shape: hidden 2048, intermediate 5632, 22 layers,
32 heads, 4 kv heads, vocab 32000) as bf16 safetensors: python3 ci/make-bench-llama.py OUT_DIR [device]"""
import sys
import torch
import transformers

out = sys.argv[1]
device = sys.argv[2] if len(sys.argv) > 2 else ("cuda" if torch.cuda.is_available() else "cpu")
config = transformers.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                                  num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                                  rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu", initializer_range=0.02)
torch.manual_seed(0)
with torch.device(device):
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True)
print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
