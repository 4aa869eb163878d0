# llama.cpp module by module, and transformers' model debugger output (README, "Judging another engine"): src/Reference/python/llamacpp_dump.py run as a child of
# this worker on a GGUF, writing the harness dump format. A child process, not ctypes in the worker: libllama runs native
# code on the callback's tensors, and a crash there must not take the worker down with it. Uses judge.py's
# _die_with_parent (ext files are spliced in name order).


def op_judge_llamacpp_dump(args, tensors):
    """args: gguf, out_dir, input_ids (a list), script_source (llamacpp_dump.py's text), threads, timeout,
    llama_layout (Q and K left in llama.cpp's row order). Runs the
    prompt's forward through libllama with its evaluation callback and writes rank-0.{safetensors,json} in out_dir.
    Returns the script's summary (entries, unmapped llama.cpp names, the engine's description)."""
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
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              timeout=float(args.get("timeout", 120)), preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"llamacpp_dump.py on {args['gguf']} did not finish within {args.get('timeout', 120)} s")
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-8:])
        raise RuntimeError(f"llamacpp_dump.py on {args['gguf']} exited with {done.returncode}:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1]), []


def op_judge_hf_model_debugger(args, tensors):
    """transformers' own model debugger (model_addition_debugger_context, use_repr=False) on an HF folder's forward of
    input_ids, writing its call tree and per-module safetensors into out_dir (`harness judge --dump` reads them). args:
    model_dir, out_dir, input_ids (a list), config (fields overriding config.json's: a model that differs from the
    checkpoint, for the tests' planted bugs), do_prune_layers (default true, the debugger's own default)."""
    import torch
    config = transformers.AutoConfig.from_pretrained(args["model_dir"])
    for k, v in (args.get("config") or {}).items():
        setattr(config, k, v)
    model = transformers.AutoModelForCausalLM.from_pretrained(args["model_dir"], config=config, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    ids = torch.tensor([[int(i) for i in args["input_ids"]]])
    with transformers.model_addition_debugger_context(model, debug_path=args["out_dir"], use_repr=False,
                                                      do_prune_layers=bool(args.get("do_prune_layers", True))):
        model(input_ids=ids)
    return {"files": len(os.listdir(args["out_dir"]))}, []


OPS["judge_llamacpp_dump"] = op_judge_llamacpp_dump
OPS["judge_hf_model_debugger"] = op_judge_hf_model_debugger
