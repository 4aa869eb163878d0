# `harness bench --model DIR` (issue 15): HF transformers eager timed in the worker with the engine's thread count, on the
# CPU (bench_model) and on the GPU (bench_generate, the worker started on the engine's device).

def op_bench_model(args, tensors):
    """Prefill ms (median of runs) per prompt length (one forward, the last token's logits: logits_to_keep=1 as generate
    runs it), and greedy decode tokens/s (a manual loop over the KV cache: one
    forward of one token and an argmax per step, the first two steps not timed), for one model dtype."""
    import statistics
    dt = torch_dtype(args.get("dtype", "float32"))
    before = torch.get_num_threads()
    set_threads(int(args["threads"]))
    try:
        threads = torch.get_num_threads()
        model = transformers.AutoModelForCausalLM.from_pretrained(args["model"], dtype=dt, attn_implementation="eager").eval()
        ids_all = [int(i) for i in args["ids"]]
        runs = max(1, int(args.get("runs", 3)))
        budget = float(args.get("budget_s", 4.0))
        prefill = {}
        with torch.no_grad():
            for n in args["prompts"]:
                ids = torch.tensor([ids_all[:int(n)]])
                t0 = time.perf_counter(); model(ids, logits_to_keep=1); first = time.perf_counter() - t0
                times = []
                for _ in range(runs if first < budget else 1):
                    t0 = time.perf_counter(); model(ids, logits_to_keep=1); times.append(time.perf_counter() - t0)
                prefill[str(n)] = statistics.median(times) * 1e3
            new = int(args["new"])
            ids = torch.tensor([ids_all[:int(args["decode_prompt"])]])
            out = model(ids, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
            steps = []
            for _ in range(new):
                t0 = time.perf_counter()
                out = model(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
                steps.append(time.perf_counter() - t0)
        timed = steps[2:] if len(steps) > 2 else steps
        decode = len(timed) / max(sum(timed), 1e-9)
    finally:
        set_threads(before)
    return {"prefill_ms": prefill, "decode_tps": decode, "threads": threads,
            "torch": torch.__version__, "transformers": transformers.__version__}, []


def op_make_random_llama(args, tensors):
    """A random Llama for the bench, saved to args["out"] (config fields as args give them), seeded."""
    cfg = dict(args["config"])
    dt = torch_dtype(args.get("dtype", "float32"))
    config = transformers.LlamaConfig(**cfg)
    torch.manual_seed(int(args.get("seed", 0)))
    model = transformers.LlamaForCausalLM(config).to(dt)
    model.save_pretrained(args["out"], safe_serialization=True)
    return {"parameters": sum(p.numel() for p in model.parameters())}, []


def op_bench_generate(args, tensors):
    """`harness bench --model DIR --device cuda`'s HF peer: the checkpoint's own class (config.architectures, else
    AutoModelForCausalLM) in eager attention on args["device"]; prefill ms (median of runs, after one warm-up), greedy
    decode tokens/s from generate() (its time less one prefill), and the device's peak memory in MiB."""
    import statistics
    dev = args["device"]
    dt = torch_dtype(args.get("dtype", "bfloat16"))
    before = torch.get_num_threads()
    set_threads(int(args["threads"]))
    try:
        cfg = transformers.AutoConfig.from_pretrained(args["model"])
        arch = (getattr(cfg, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        model = (cls or transformers.AutoModelForCausalLM).from_pretrained(args["model"], dtype=dt, attn_implementation="eager").to(dev).eval()
        ids = torch.tensor([[int(i) for i in args["ids"]]], device=dev)

        def sync():
            if dev.startswith("cuda"):
                torch.cuda.synchronize()

        with torch.no_grad():
            model(ids); sync()
            if dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            pre = []
            for _ in range(max(1, int(args["runs"]))):
                sync(); t = time.perf_counter(); model(ids); sync(); pre.append((time.perf_counter() - t) * 1e3)
            n = int(args["new"])
            sync(); t = time.perf_counter()
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)
            sync(); total = time.perf_counter() - t
        prefill = statistics.median(pre)
        peak = torch.cuda.max_memory_allocated() / 2**20 if dev.startswith("cuda") else 0.0
        del model
    finally:
        set_threads(before)
    return {"prefill_ms": prefill, "decode_tps": n / max(total - prefill / 1e3, 1e-9), "peak_mib": peak,
            "torch": torch.__version__, "transformers": transformers.__version__}, []


OPS["bench_model"] = op_bench_model
OPS["bench_generate"] = op_bench_generate
OPS["make_random_llama"] = op_make_random_llama
