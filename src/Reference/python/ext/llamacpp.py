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
