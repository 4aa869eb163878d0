"""llamacpp_dump: llama.cpp's graph outputs, module by module, in the harness dump format (docs/dump-format.md).

Runs a GGUF through libllama (ctypes; needs numpy and safetensors) with the scheduler's evaluation callback
(llama_context_params.cb_eval), reads every named graph output of the prompt's forward and of each decode step after it
(ggml_get_name, ggml_backend_tensor_get), and writes those that have an HF counterpart under the HF module's name, in HF's layout
(the converter's Q/K rotary permutation undone), so `harness judge --dump DIR --model HF_DIR` judges them with the
oracle verdict. The llama.cpp names without an HF module are listed in the index's "unmapped".

    python3 llamacpp_dump.py MODEL.gguf OUT_DIR --ids 2,100,200,300 [--max-new-tokens 4 [--forced 17,5,9]]

Written against libllama 0.7.0 / libggml 0.27.0 (Debian forky: libllama0 1:0.7.0+dfsg-2, libggml0 0.27.0-1; the struct
layouts below are llama.h's and ggml.h's of those versions, checked at load against the library's defaults). The
context is float32 throughout (flash attention off, f32 K and V caches) and every position is an output, so the last
layer is computed for all of them (llama.cpp otherwise drops all but the last token before the last layer's output).
"""

import argparse
import ctypes
import json
import os
import re
import sys

import numpy as np

FORMAT = "harness-dump/1"

# ---------------------------------------------------------------------------------------------------------------------
# The map: llama.cpp graph name (with the layer's "-N" removed), which occurrence in the forward (the same name is set
# on several nodes, e.g. Qcur after the matmul, after the reshape and after RoPE), the HF module, and the layout change.
# A llama.cpp tensor [ne0, ne1, ...] is numpy's [..., ne1, ne0]; every mapped one is reshaped to HF's [1, T, features].
#   "rope_unpermute:<heads>": convert_hf_to_gguf.py permutes the rows of q_proj and k_proj (LlamaModel.permute) so that
#   llama.cpp's RoPE rotates adjacent pairs (2i, 2i+1) where HF's rotate_half rotates (i, i + d/2): the projection's
#   output is undone per head, llama [.., H, d/2, 2] -> HF [.., H, 2, d/2].
# One table for the code and the README ("Judging another engine").
LLAMA_TO_HF = (
    # (llama.cpp name, occurrence, HF module (L = layer), layout)
    ("embd",        0, "model.embed_tokens",                      None),
    ("attn_norm",   0, "model.layers.L.input_layernorm",          None),
    ("Qcur",        0, "model.layers.L.self_attn.q_proj",         "rope_unpermute:n_head"),
    ("Kcur",        0, "model.layers.L.self_attn.k_proj",         "rope_unpermute:n_head_kv"),
    ("Vcur",        0, "model.layers.L.self_attn.v_proj",         None),
    ("attn_out",    0, "model.layers.L.self_attn.o_proj",         None),
    ("attn_out",    0, "model.layers.L.self_attn",                None),
    ("ffn_norm",    0, "model.layers.L.post_attention_layernorm", None),
    ("ffn_gate",    0, "model.layers.L.mlp.gate_proj",            None),
    ("ffn_up",      0, "model.layers.L.mlp.up_proj",              None),
    ("ffn_out",     0, "model.layers.L.mlp.down_proj",            None),
    ("ffn_out",     0, "model.layers.L.mlp",                      None),
    ("l_out",       0, "model.layers.L",                          None),
    ("result_norm", 0, "model.norm",                              None),
    ("result_output", 0, "lm_head",                               None),
)
# HF modules with no llama.cpp graph output: model.rotary_emb (cos/sin; llama.cpp's ggml_rope computes them inside the
# op) and mlp.act_fn (SiLU(gate) alone: llama.cpp fuses it with the up product, ffn_swiglu = SiLU(gate) * up).
# llama.cpp outputs with no HF module (HF computes them inside a module's forward, not as a module's output): norm-N
# (RMSNorm before its weight), Qcur/Kcur after RoPE, kq-N, kq_soft_max-N, kqv-N, kqv_out-N (attention before o_proj),
# ffn_inp-N (the residual after attention), ffn_swiglu-N, norm (the final RMSNorm before its weight), the KV cache
# views and the last layer's output-row selection (node_*).

# ---------------------------------------------------------------------------------------------------------------------
# libllama 0.7.0 / libggml 0.27.0 ABI (llama.h, ggml.h, ggml-backend.h)

GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64
GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16 = 0, 1, 30


class GgmlTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


EVAL_CB = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.POINTER(GgmlTensor), ctypes.c_bool, ctypes.c_void_p)
LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class ModelParams(ctypes.Structure):
    _fields_ = [
        ("devices", ctypes.c_void_p),
        ("tensor_buft_overrides", ctypes.c_void_p),
        ("n_gpu_layers", ctypes.c_int32),
        ("split_mode", ctypes.c_int),
        ("load_mode", ctypes.c_int),
        ("lazy_mode", ctypes.c_int),
        ("main_gpu", ctypes.c_int32),
        ("tensor_split", ctypes.c_void_p),
        ("progress_callback", ctypes.c_void_p),
        ("progress_callback_user_data", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("vocab_only", ctypes.c_bool),
        ("check_tensors", ctypes.c_bool),
        ("use_extra_bufts", ctypes.c_bool),
        ("no_host", ctypes.c_bool),
        ("no_alloc", ctypes.c_bool),
        ("load_mtp", ctypes.c_bool),
    ]


class ContextParams(ctypes.Structure):
    _fields_ = [
        ("n_ctx", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint32),
        ("n_ubatch", ctypes.c_uint32),
        ("n_seq_max", ctypes.c_uint32),
        ("n_rs_seq", ctypes.c_uint32),
        ("n_outputs_max", ctypes.c_uint32),
        ("n_outputs_max_per_seq", ctypes.c_uint32),
        ("n_threads", ctypes.c_int32),
        ("n_threads_batch", ctypes.c_int32),
        ("ctx_type", ctypes.c_int),
        ("rope_scaling_type", ctypes.c_int),
        ("pooling_type", ctypes.c_int),
        ("attention_type", ctypes.c_int),
        ("flash_attn_type", ctypes.c_int),
        ("rope_freq_base", ctypes.c_float),
        ("rope_freq_scale", ctypes.c_float),
        ("yarn_ext_factor", ctypes.c_float),
        ("yarn_attn_factor", ctypes.c_float),
        ("yarn_beta_fast", ctypes.c_float),
        ("yarn_beta_slow", ctypes.c_float),
        ("yarn_orig_ctx", ctypes.c_uint32),
        ("defrag_thold", ctypes.c_float),
        ("cb_eval", EVAL_CB),
        ("cb_eval_user_data", ctypes.c_void_p),
        ("type_k", ctypes.c_int),
        ("type_v", ctypes.c_int),
        ("moe_cache_size", ctypes.c_size_t),
        ("abort_callback", ctypes.c_void_p),
        ("abort_callback_data", ctypes.c_void_p),
        ("embeddings", ctypes.c_bool),
        ("offload_kqv", ctypes.c_bool),
        ("no_perf", ctypes.c_bool),
        ("op_offload", ctypes.c_bool),
        ("swa_full", ctypes.c_bool),
        ("kv_unified", ctypes.c_bool),
        ("samplers", ctypes.c_void_p),
        ("n_samplers", ctypes.c_size_t),
        ("ctx_other", ctypes.c_void_p),
    ]


class Batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("token", ctypes.POINTER(ctypes.c_int32)),
        ("embd", ctypes.POINTER(ctypes.c_float)),
        ("pos", ctypes.POINTER(ctypes.c_int32)),
        ("n_seq_id", ctypes.POINTER(ctypes.c_int32)),
        ("seq_id", ctypes.POINTER(ctypes.POINTER(ctypes.c_int32))),
        ("logits", ctypes.POINTER(ctypes.c_int8)),
    ]


def _load_libraries():
    llama = ctypes.CDLL("libllama.so.0")
    ggml = ctypes.CDLL("libggml.so.0")
    base = ctypes.CDLL("libggml-base.so.0")
    sig = {
        (llama, "llama_model_default_params"): ([], ModelParams),
        (llama, "llama_context_default_params"): ([], ContextParams),
        (llama, "llama_backend_init"): ([], None),
        (llama, "llama_backend_free"): ([], None),
        (llama, "llama_log_set"): ([LOG_CB, ctypes.c_void_p], None),
        (llama, "llama_model_load_from_file"): ([ctypes.c_char_p, ModelParams], ctypes.c_void_p),
        (llama, "llama_init_from_model"): ([ctypes.c_void_p, ContextParams], ctypes.c_void_p),
        (llama, "llama_model_free"): ([ctypes.c_void_p], None),
        (llama, "llama_free"): ([ctypes.c_void_p], None),
        (llama, "llama_model_n_head"): ([ctypes.c_void_p], ctypes.c_int32),
        (llama, "llama_model_n_head_kv"): ([ctypes.c_void_p], ctypes.c_int32),
        (llama, "llama_model_n_layer"): ([ctypes.c_void_p], ctypes.c_int32),
        (llama, "llama_model_desc"): ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int32),
        (llama, "llama_batch_init"): ([ctypes.c_int32, ctypes.c_int32, ctypes.c_int32], Batch),
        (llama, "llama_batch_free"): ([Batch], None),
        (llama, "llama_decode"): ([ctypes.c_void_p, Batch], ctypes.c_int32),
        (llama, "llama_print_system_info"): ([], ctypes.c_char_p),
        (ggml, "ggml_backend_load_all"): ([], None),
        (ggml, "ggml_backend_dev_count"): ([], ctypes.c_size_t),
        (base, "ggml_get_name"): ([ctypes.POINTER(GgmlTensor)], ctypes.c_char_p),
        (base, "ggml_nbytes"): ([ctypes.POINTER(GgmlTensor)], ctypes.c_size_t),
        (base, "ggml_backend_tensor_get"): ([ctypes.POINTER(GgmlTensor), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t], None),
        (base, "ggml_type_name"): ([ctypes.c_int], ctypes.c_char_p),
        (base, "ggml_op_desc"): ([ctypes.POINTER(GgmlTensor)], ctypes.c_char_p),
    }
    for (lib, name), (args, res) in sig.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, res
    return llama, ggml, base


def _check_abi(mp, cp):
    """The defaults llama.h 0.7.0 documents, read back through the structs above: a library whose layout differs
    (another version) reads other values here and is refused instead of being fed a misplaced callback."""
    want = {"n_ctx": 512, "n_batch": 2048, "n_ubatch": 512, "n_seq_max": 1, "flash_attn_type": -1, "type_k": GGML_TYPE_F16,
            "type_v": GGML_TYPE_F16, "rope_freq_base": 0.0, "rope_freq_scale": 0.0}
    got = {k: getattr(cp, k) for k in want}
    if got != want or mp.n_gpu_layers not in (-1, 0, 999) or bool(cp.cb_eval):
        raise RuntimeError(f"libllama's llama_context_default_params() reads {got} (n_gpu_layers {mp.n_gpu_layers}) through "
                           f"this script's llama.h 0.7.0 layout, which expects {want}: another libllama version")


def _array(base, t):
    """The tensor's values as float32 numpy in ggml's layout read back to front: ne [ne0, ne1, ne2] -> [ne2, ne1, ne0]."""
    dtype = {GGML_TYPE_F32: np.float32, GGML_TYPE_F16: np.float16}.get(t.contents.type)
    if dtype is None:
        return None
    n = base.ggml_nbytes(t)
    buf = (ctypes.c_uint8 * n)()
    base.ggml_backend_tensor_get(t, buf, 0, n)
    ne = [t.contents.ne[i] for i in range(GGML_MAX_DIMS)]
    nb = [t.contents.nb[i] for i in range(GGML_MAX_DIMS)]
    # strides as ggml gives them (a view is not contiguous), then copied
    arr = np.lib.stride_tricks.as_strided(np.frombuffer(buf, dtype=dtype), shape=ne[::-1], strides=nb[::-1])
    return np.array(arr, dtype=np.float32)


def _unpermute(x, heads):
    """[1, T, H*d] in llama.cpp's rotary row order -> HF's: per head [d/2, 2] -> [2, d/2] (LlamaModel.permute undone)."""
    b, t, f = x.shape
    d = f // heads
    return x.reshape(b, t, heads, d // 2, 2).swapaxes(3, 4).reshape(b, t, f)


def _topk(logits, k):
    """The k largest log-probabilities of one position's logits (float64 log-softmax), ids by descending logprob."""
    x = logits.astype(np.float64)
    logp = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
    ids = np.argsort(-logp, kind="stable")[:k]
    return [int(i) for i in ids], [float(logp[i]) for i in ids]


def dump(gguf, out_dir, ids, threads=1, llama_layout=False, new_tokens=1, forced=None, top_k=5):
    """Writes rank-0.{safetensors,json} in out_dir: the prompt's forward (step 0), then new_tokens - 1 decode steps, each
    fed one token at the next position through the KV cache: forced[s - 1] at step s when given (teacher forcing: the
    judge feeds llama.cpp the reference's tokens, as `harness run` feeds its engine), else llama.cpp's own greedy pick
    of the step before. Every step's mapped graph outputs are written as that step's entries, each step's fed token as
    inputs["s"], and the index's "generation" holds llama.cpp's own next-token choice and top_k log-probabilities at
    every step (from result_output's last row). llama_layout: Q and K left in llama.cpp's rotary row order (to look at
    llama.cpp's own tensors; the judge then fails them at q_proj and k_proj)."""
    from safetensors.numpy import save_file
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be at least 1, got {new_tokens}")
    if forced is not None and len(forced) < new_tokens - 1:
        raise ValueError(f"{len(forced)} forced tokens for {new_tokens - 1} decode steps")
    llama, ggml, base = _load_libraries()
    logs = []

    @LOG_CB
    def on_log(level, text, _user):
        if level >= 3 and text:              # warnings and errors, for the failure message
            logs.append(text.decode("utf-8", "replace").rstrip())

    llama.llama_log_set(on_log, None)
    ggml.ggml_backend_load_all()
    llama.llama_backend_init()
    mp, cp = llama.llama_model_default_params(), llama.llama_context_default_params()
    _check_abi(mp, cp)
    mp.n_gpu_layers = 0
    model = llama.llama_model_load_from_file(os.fsencode(gguf), mp)
    if not model:
        raise RuntimeError(f"libllama could not load {gguf}: {' | '.join(logs[-4:])}")
    ctx = None
    batch = None
    try:
        n_head, n_head_kv, n_layer = (llama.llama_model_n_head(model), llama.llama_model_n_head_kv(model),
                                      llama.llama_model_n_layer(model))
        desc = ctypes.create_string_buffer(256)
        llama.llama_model_desc(model, desc, 256)
        captured = []                        # (llama name, numpy array, op) in graph order, of the step being decoded

        @EVAL_CB
        def on_eval(t, ask, _user):
            name = base.ggml_get_name(t).decode("utf-8", "replace")
            if ask:
                return True                  # every node's value, after it is computed
            value = _array(base, t)
            if value is not None and name:
                captured.append((name, value, base.ggml_op_desc(t).decode()))
            return True

        cp.n_ctx = max(64, len(ids) + new_tokens + 8)
        cp.n_batch = cp.n_ubatch = max(len(ids), 1)
        cp.n_threads = cp.n_threads_batch = threads
        cp.flash_attn_type = 0               # disabled: its CPU kernel rounds through f16
        cp.type_k = cp.type_v = GGML_TYPE_F32
        cp.cb_eval = on_eval
        cp.no_perf = True
        ctx = llama.llama_init_from_model(model, cp)
        if not ctx:
            raise RuntimeError(f"llama_init_from_model failed on {gguf}: {' | '.join(logs[-4:])}")
        batch = llama.llama_batch_init(max(len(ids), 1), 0, 1)
        entries, tensors, unmapped, generation = [], {}, [], []
        inputs = {"0": {"input_ids": "input/input_ids/step0"}}
        tensors["input/input_ids/step0"] = np.array([ids], dtype=np.int64)
        heads = {"n_head": n_head, "n_head_kv": n_head_kv}

        def decode(step, tokens, first_pos):
            """One llama_decode of `tokens` at positions first_pos.. (every one an output), its mapped graph outputs
            written as `step`'s entries; returns llama.cpp's top-k at the last position."""
            captured.clear()
            batch.n_tokens = len(tokens)
            for i, tok in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = int(tok), first_pos + i, 1, 1
                batch.seq_id[i][0] = 0
            rc = llama.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} at step {step} ({len(tokens)} token(s) at position {first_pos}): "
                                   f"{' | '.join(logs[-4:])}")
            t_len, seen, logits = len(tokens), {}, None
            for name, value, op in captured:
                m = re.fullmatch(r"(.+?)-(\d+)", name)
                stem, layer = (m.group(1), m.group(2)) if m else (name, None)
                occurrence = seen.get(name, 0)
                seen[name] = occurrence + 1
                rows = [r for r in LLAMA_TO_HF if r[0] == stem and r[1] == occurrence]
                if not rows:
                    if step == 0:
                        unmapped.append({"name": name, "occurrence": occurrence, "op": op, "shape": list(value.shape)})
                    continue
                if value.size % t_len:
                    raise RuntimeError(f"{name} has {value.size} values at step {step}, not a multiple of its {t_len} token(s)")
                x = value.reshape(1, t_len, -1)                      # [1, tokens, features]
                if stem == "result_output":
                    logits = x[0, -1]                                 # [vocab]: the next token's logits
                for _, _, hf, layout in rows:
                    module = hf.replace(".L", f".{layer}") if layer is not None else hf
                    y = _unpermute(x, heads[layout.split(":")[1]]) if layout and not llama_layout else x
                    key = f"{module}/step{step}/call0"
                    tensors[key] = np.ascontiguousarray(y)
                    entries.append({"module": module, "step": step, "call": 0, "tensor": key, "shape": list(y.shape),
                                    "dtype": "float32", "placement": {"kind": "replicate", "source": "default"},
                                    "source": {"engine": "llama.cpp", "name": name, "occurrence": occurrence, "op": op,
                                               "layout": (layout if not llama_layout else None) or "reshape"}})
            if logits is None:
                raise RuntimeError(f"step {step}: the graph has no result_output (the logits) to choose the next token from")
            return _topk(logits, top_k)

        top_ids, top_logprobs = decode(0, ids, 0)
        generation.append({"step": 0, "choice": top_ids[0], "topk_ids": top_ids, "topk_logprobs": top_logprobs})
        for step in range(1, new_tokens):
            fed = int(forced[step - 1]) if forced is not None else generation[-1]["choice"]
            key = f"input/input_ids/step{step}"
            tensors[key] = np.array([[fed]], dtype=np.int64)        # [1, 1]: the one token this step is fed
            inputs[str(step)] = {"input_ids": key}
            top_ids, top_logprobs = decode(step, [fed], len(ids) + step - 1)
            generation.append({"step": step, "fed": fed, "choice": top_ids[0], "topk_ids": top_ids, "topk_logprobs": top_logprobs})
        os.makedirs(out_dir, exist_ok=True)
        base_path = os.path.join(out_dir, "rank-0")
        save_file(tensors, base_path + ".safetensors.tmp")
        os.replace(base_path + ".safetensors.tmp", base_path + ".safetensors")
        index = {"format": FORMAT, "rank": 0, "world_size": 1, "tensors_file": "rank-0.safetensors",
                 "inputs": inputs, "entries": entries, "errors": [],
                 "engine": {"name": "llama.cpp", "model": desc.value.decode(), "gguf": os.path.abspath(gguf),
                            "system_info": llama.llama_print_system_info().decode().strip(),
                            "n_layer": n_layer, "n_head": n_head, "n_head_kv": n_head_kv,
                            "decode": "teacher-forced" if forced is not None else "greedy"},
                 "generation": generation,
                 "unmapped": unmapped}
        with open(base_path + ".json.tmp", "w") as f:
            json.dump(index, f, indent=1)
        os.replace(base_path + ".json.tmp", base_path + ".json")
        return index
    finally:
        if batch is not None:
            llama.llama_batch_free(batch)
        if ctx:
            llama.llama_free(ctx)
        llama.llama_model_free(model)
        llama.llama_backend_free()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("gguf")
    p.add_argument("out_dir")
    p.add_argument("--ids", required=True, help="the prompt's token ids, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--llama-layout", action="store_true", help="leave Q and K in llama.cpp's rotary row order")
    p.add_argument("--max-new-tokens", type=int, default=1,
                   help="tokens to choose: the prompt's forward, then this many minus one decode steps (default 1)")
    p.add_argument("--forced", default=None,
                   help="the tokens decode steps 1, 2, ... are fed, comma-separated (default: llama.cpp's own greedy picks)")
    p.add_argument("--top-k", type=int, default=5, help="log-probabilities kept per step in the index's generation")
    a = p.parse_args(argv)
    ids = [int(s) for s in a.ids.split(",") if s.strip()]
    forced = [int(s) for s in a.forced.split(",") if s.strip()] if a.forced is not None else None
    index = dump(a.gguf, a.out_dir, ids, a.threads, a.llama_layout, a.max_new_tokens, forced, a.top_k)
    print(json.dumps({"entries": len(index["entries"]), "unmapped": [u["name"] for u in index["unmapped"]],
                      "engine": index["engine"], "generation": index["generation"]}))


if __name__ == "__main__":
    sys.exit(main())
