#!/usr/bin/env python3
"""Random-weight checkpoints at 1B-class widths for `harness bench --model DIR --device cuda` (graph decoding per family).

    make-bench-model.py NAME OUT_DIR [--dtype bf16|fp32] [--device cpu|cuda] [--layers N] [--vocab V]

NAME: llama-3.2-1b, qwen2-vl-2b, gemma3n-e2b-text (ci/make-published-dims.py's published dimensions), or
gemma4-1b-class: a gemma4_text config of this script's own at Gemma3n E2B's widths (hidden 1536 here, 8 heads, 1 kv
head, head_dim 256, global_head_dim 512, sliding 4 : full 1, 6 KV-shared layers, per-layer inputs 256, final soft cap
30): no released Gemma4 config.json was found to copy (see make-published-dims.py), so these are NOT published
dimensions, only a 1B-class width. gemma4-moe-1b-class: the same decoder with enable_moe_block (issue 20 item 2's
graph-decoded MoE row): beside a dense MLP of 2048, 32 experts of moe_intermediate_size 768, top 4 per token, no per-layer
inputs and no KV sharing (as the released 26B-A4B's block, 128 experts of 704 top 8 at hidden 2816, scaled to hidden
1536); again not published dimensions. --layers N keeps the first N layers; --vocab V shrinks the vocabularies (a smoke
test of the script, not a bench). Weights as make-published-dims.py makes them (HF's init, constant tensors moved by
seeded noise).
"""
import argparse
import importlib.util
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("published", os.path.join(here, "make-published-dims.py"))
published = importlib.util.module_from_spec(spec)
spec.loader.exec_module(published)

GEMMA4_1B_CLASS = {
    "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_size": 1536, "intermediate_size": 6144,
    "num_hidden_layers": 20, "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "global_head_dim": 512,
    "sliding_window": 512, "num_kv_shared_layers": 6, "hidden_size_per_layer_input": 256, "vocab_size": 262144,
    "vocab_size_per_layer_input": 262144, "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-06,
    "layer_types": ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(20)],
    "rope_parameters": {"full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768, "use_double_wide_mlp": True,
    "attention_k_eq_v": False, "enable_moe_block": False, "tie_word_embeddings": True,
    "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
}

GEMMA4_MOE_1B_CLASS = dict(GEMMA4_1B_CLASS, **{
    "intermediate_size": 2048, "enable_moe_block": True, "num_experts": 32, "top_k_experts": 4, "moe_intermediate_size": 768,
    "num_kv_shared_layers": 0, "hidden_size_per_layer_input": 0, "use_double_wide_mlp": False,
})

MODELS = {name: published.MODELS[name] for name in ("llama-3.2-1b", "qwen2-vl-2b", "gemma3n-e2b-text")}
MODELS["gemma4-1b-class"] = GEMMA4_1B_CLASS
MODELS["gemma4-moe-1b-class"] = GEMMA4_MOE_1B_CLASS


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("out_dir")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cfg = json.loads(json.dumps(MODELS[a.name]))
    if a.layers:
        cfg = published.keep_layers(cfg, a.layers)
    if a.vocab:
        for key in ("vocab_size", "vocab_size_per_layer_input"):
            if key in cfg:
                cfg[key] = a.vocab
    published.write_random(cfg, a.name, a.out_dir, a.dtype, a.device, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
