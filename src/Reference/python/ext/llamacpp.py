# llama.cpp module by module (README, "Judging another engine"): src/Reference/python/llamacpp_dump.py run as a child of
# this worker on a GGUF, writing the harness dump format. A child process, not ctypes in the worker: libllama runs native
# code on the callback's tensors, and a crash there must not take the worker down with it. Uses judge.py's
# _die_with_parent (ext files are spliced in name order).


def op_judge_llamacpp_dump(args, tensors):
    """args: gguf, out_dir, input_ids (a list), script_source (llamacpp_dump.py's text), threads, timeout,
    llama_layout (Q and K left in llama.cpp's row order), max_new_tokens (the prompt's forward and max_new_tokens - 1
    decode steps), forced (the tokens decode steps 1, 2, ... are fed; absent: llama.cpp's own greedy picks), top_k.
    Runs them through libllama with its evaluation callback and writes rank-0.{safetensors,json} in out_dir.
    Returns the script's summary (entries, unmapped llama.cpp names, the engine's description, and its generation:
    every step's fed token, own choice and top-k log-probabilities)."""
    import json
    import subprocess
    import tempfile
    work = tempfile.mkdtemp(prefix="harness-llamacpp-")
    script = os.path.join(work, "llamacpp_dump.py")
    with open(script, "w") as f:
        f.write(args["script_source"])
    ids = ",".join(str(int(i)) for i in args["input_ids"])
    argv = [sys.executable, script, args["gguf"], args["out_dir"], "--ids", ids, "--threads", str(int(args.get("threads", 1)))]
    if args.get("llama_layout"):
        argv.append("--llama-layout")
    argv += ["--max-new-tokens", str(int(args.get("max_new_tokens", 1))), "--top-k", str(int(args.get("top_k", 5)))]
    if args.get("forced") is not None:
        argv += ["--forced", ",".join(str(int(t)) for t in args["forced"])]
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              timeout=float(args.get("timeout", 120)), preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"llamacpp_dump.py on {args['gguf']} did not finish within {args.get('timeout', 120)} s")
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-8:])
        raise RuntimeError(f"llamacpp_dump.py on {args['gguf']} exited with {done.returncode}:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1]), []


OPS["judge_llamacpp_dump"] = op_judge_llamacpp_dump


# A lossy GGUF (bf16, f16, q8_0, k-quants) judged against HF needs HF's model with the GGUF's own weights: the reference
# of `judge --gguf` and `judge --endpoint --served-gguf` on such a file (README, "Judging another engine"). The map from
# HF's names to the GGUF's is the converter's own (gguf-py's TensorNameMap, which convert_hf_to_gguf.py writes with);
# llama's q_proj and k_proj rows are permuted back (convert_hf_to_gguf.py's LlamaModel.permute, undone).


def _unpermute_rows(w, n_head):
    """LlamaModel.permute undone: weights.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2) was written."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def op_judge_gguf_dequantize(args, tensors):
    """args gguf, model_dir (the HF checkpoint it was converted from), out_dir. Writes out_dir as model_dir's checkpoint
    (its config and tokenizer files, HF's config: not the GGUF's metadata, whose planted errors stay the engine's) with
    every weight replaced by the GGUF's, dequantized to float32 by gguf-py (gguf.quants.dequantize). Returns each
    tensor's GGUF type and its relative L2 distance from the original weight (the quantization's own error on the
    weights), and the count of tensors per type. A weight of model_dir with no GGUF tensor, or a GGUF tensor with no
    weight, is an error naming it."""
    import json
    import shutil
    import numpy as np
    import gguf
    from safetensors import safe_open
    from safetensors.torch import save_file
    reader = gguf.GGUFReader(args["gguf"])
    field = reader.get_field("general.architecture")
    arch_name = bytes(field.parts[field.data[0]]).decode()
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    if arch is None:
        raise ValueError(f"{args['gguf']}: general.architecture {arch_name!r} is not one gguf-py knows")
    with open(os.path.join(args["model_dir"], "config.json")) as f:
        config = json.load(f)
    n_blocks = int(config["num_hidden_layers"])
    n_head, n_head_kv = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or config["num_attention_heads"])
    names = gguf.get_tensor_name_map(arch, n_blocks)
    by_name = {t.name: t for t in reader.tensors}
    original = {}
    for fname in sorted(os.listdir(args["model_dir"])):
        if fname.endswith(".safetensors"):
            with safe_open(os.path.join(args["model_dir"], fname), framework="pt") as f:
                for key in f.keys():
                    original[key] = f.get_tensor(key)
    out, report, used, counts = {}, [], set(), {}
    for key in sorted(original):
        gname = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gname is None or gname not in by_name:
            raise ValueError(f"{args['gguf']}: no GGUF tensor for HF weight {key} (gguf-py maps it to {gname!r})")
        t = by_name[gname]
        used.add(gname)
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed([int(d) for d in t.shape])))
        if arch == gguf.MODEL_ARCH.LLAMA and key.endswith("self_attn.q_proj.weight"):
            w = _unpermute_rows(w, n_head)
        elif arch == gguf.MODEL_ARCH.LLAMA and key.endswith("self_attn.k_proj.weight"):
            w = _unpermute_rows(w, n_head_kv)
        ref = original[key].to(torch.float32)
        if tuple(w.shape) != tuple(ref.shape):
            raise ValueError(f"{args['gguf']}: {gname} dequantizes to {list(w.shape)}, HF's {key} is {list(ref.shape)}")
        deq = torch.from_numpy(np.ascontiguousarray(w))
        out[key] = deq
        rel = float((deq.double() - ref.double()).norm() / ref.double().norm()) if ref.double().norm() > 0 else 0.0
        kind = t.tensor_type.name.lower()
        counts[kind] = counts.get(kind, 0) + 1
        report.append({"hf": key, "gguf": gname, "type": kind, "relative_l2": rel})
    # a tied lm_head is written by the converter as no tensor (llama.cpp reads token_embd); an untied one maps above
    extra = sorted(n for n in by_name if n not in used and not (n == "output.weight" and config.get("tie_word_embeddings")))
    if extra:
        raise ValueError(f"{args['gguf']}: GGUF tensor(s) {extra} have no HF weight in {args['model_dir']}")
    os.makedirs(args["out_dir"], exist_ok=True)
    for fname in os.listdir(args["model_dir"]):
        src = os.path.join(args["model_dir"], fname)
        if os.path.isfile(src) and not fname.endswith(".safetensors") and fname != "model.safetensors.index.json":
            shutil.copyfile(src, os.path.join(args["out_dir"], fname))
    save_file(out, os.path.join(args["out_dir"], "model.safetensors"), metadata={"format": "pt"})
    for fname in os.listdir(args["out_dir"]):
        os.chmod(os.path.join(args["out_dir"], fname), 0o644)
    return {"tensors": report, "types": counts, "architecture": arch_name}, []


OPS["judge_gguf_dequantize"] = op_judge_gguf_dequantize
