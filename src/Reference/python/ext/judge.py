# Judging other engines (README, "Judging another engine"): the checkpoint's tokenizer, the tiny Llama with a real
# SentencePiece tokenizer the tests build, the packaged GGUF converter and metadata editor, and llama-server started
# and stopped under this worker (so the worker's supervision covers it: a killed worker takes its server with it).

import json
import os
import subprocess

# Debian's llama.cpp-tools installs the converter as documentation; a source checkout has it at the top level.
GGUF_CONVERTERS = ("/usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py", "convert_hf_to_gguf.py")

# The tiny tokenizer's training text: seeded sentences over a fixed word list, so the trained model is the same bytes
# on every machine (SentencePiece trains deterministically on one thread).
SP_WORDS = (
    "the of and to in is was for on that with as by at from it an be this which or are have had not but were his her "
    "their they one all been has more when there can who will would into its only other time new some these two may "
    "first then do any like my now over such our man me even most made after also did many before must through back "
    "years where much your way well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day same another know while last "
    "might us great old year off come since against go came right used take three").split()


def _training_sentences(seed, count):
    import random
    rng = random.Random(seed)
    for _ in range(count):
        words = [rng.choice(SP_WORDS) for _ in range(rng.randint(5, 14))]
        yield " ".join(words).capitalize() + "."


def op_judge_build_sp_llama(args, tensors):
    """A tiny HF Llama (op_build_model: seeded, constant parameters perturbed) with a SentencePiece BPE tokenizer trained
    here (unk 0, bos and eos the config's ids) and saved as HF's LlamaTokenizer beside tokenizer.model, which is what
    llama.cpp's converter reads. args: config (its vocab_size is the tokenizer's), seed, out_dir, byte_fallback (default
    false: llama-server's logprobs leave out a token that ends inside a UTF-8 character, merging it into the next one's
    entry, and a random model generates such byte tokens often)."""
    import io
    import sentencepiece as spm
    cfg = dict(args["config"])
    vocab = int(cfg["vocab_size"])
    out_dir = args["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_sentences(int(args.get("seed", 0)), 3000), model_writer=proto, vocab_size=vocab,
        model_type="bpe", byte_fallback=bool(args.get("byte_fallback", False)), num_threads=1, character_coverage=1.0, unk_id=0,
        bos_id=int(cfg["bos_token_id"]), eos_id=int(cfg["eos_token_id"]),
        pad_id=-1, minloglevel=2)
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(proto.getvalue())
    built, _ = op_build_model({"config": cfg, "seed": args.get("seed", 0), "dtype": args.get("dtype", "float32"),
                               "out_dir": out_dir}, {})
    tok = transformers.LlamaTokenizer.from_pretrained(out_dir, add_bos_token=True)
    if len(tok) != vocab:
        raise ValueError(f"the trained tokenizer has {len(tok)} tokens, the config's vocab_size is {vocab}")
    tok.save_pretrained(out_dir)
    return {"files": sorted(os.listdir(out_dir)), "params": built["params"]}, []


_tokenizers = {}


def _tokenizer(model_dir):
    key = (os.path.realpath(model_dir), dir_signature(model_dir))
    if key not in _tokenizers:
        _tokenizers.clear()
        _tokenizers[key] = transformers.AutoTokenizer.from_pretrained(model_dir)
    return _tokenizers[key]


def op_judge_tokenize(args, tensors):
    """The checkpoint's tokenizer on each text (special tokens as the tokenizer adds them). Returns ids per text and
    the tokenizer's class and eos id."""
    tok = _tokenizer(args["model_dir"])
    ids = [tok(text).input_ids for text in args["texts"]]
    return {"ids": ids, "class": type(tok).__name__, "eos_token_id": tok.eos_token_id}, []


def op_judge_decode(args, tensors):
    """Each id alone as text (for display), through the checkpoint's tokenizer."""
    tok = _tokenizer(args["model_dir"])
    return {"text": [tok.decode([int(i)]) for i in args["ids"]]}, []


def _run_tool(argv, timeout, what):
    """A tool as a child of this worker: its failure is an error naming the command with its output's tail."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, text=True)
    except FileNotFoundError as e:
        raise RuntimeError(f"{what}: {argv[0]} not found ({e}); ci/reference-env.sh installs llama.cpp-tools and python3-gguf")
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: {' '.join(argv)} did not finish within {timeout} s")
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise RuntimeError(f"{what}: {' '.join(argv)} exited with {done.returncode}:\n{tail}")
    return done.stdout


def op_judge_gguf_convert(args, tensors):
    """llama.cpp's convert_hf_to_gguf.py (the packaged one) on an HF folder: args model_dir, outfile, outtype (f32); or
    outputs, a list of {outfile, outtype}: one converter per output, run side by side (each imports torch: ~14 s)."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor
    converter = args.get("converter") or next(
        (c for c in GGUF_CONVERTERS if os.path.isfile(c)), None) or shutil.which("convert_hf_to_gguf.py")
    if converter is None:
        raise RuntimeError(f"no GGUF converter: none of {GGUF_CONVERTERS} exists (Debian package llama.cpp-tools)")
    outputs = args.get("outputs") or [{"outfile": args["outfile"], "outtype": args.get("outtype", "f32")}]

    def convert(o):
        return _run_tool([sys.executable, converter, args["model_dir"], "--outfile", o["outfile"], "--outtype", o.get("outtype", "f32")],
                         int(args.get("timeout", 300)), f"GGUF conversion to {o.get('outtype', 'f32')}")
    with ThreadPoolExecutor(max_workers=len(outputs)) as pool:
        logs = list(pool.map(convert, outputs))
    return {"converter": converter, "log_tail": "\n".join(logs[-1].splitlines()[-5:])}, []


def op_judge_gguf_set_metadata(args, tensors):
    """gguf-set-metadata (python3-gguf) on a GGUF file in place: args file, key, value."""
    _run_tool([sys.executable, "-m", "gguf.scripts.gguf_set_metadata", args["file"], args["key"], str(args["value"]),
               "--force"], int(args.get("timeout", 120)), "gguf-set-metadata")
    return {}, []


_servers = {}


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_WORKER_PID = os.getpid()


def _die_with_parent():
    """In this worker's child (llama-server, a TP rank, a llama.cpp tool) before exec: SIGKILL when this worker dies,
    however it dies, and exit at once if it is already gone (the worker's own die_with_parent: PR_SET_PDEATHSIG, checked)."""
    die_with_parent(_WORKER_PID)


def op_llama_server_start(args, tensors):
    """Starts llama-server on 127.0.0.1 at a free port and waits until /health answers 200 (args: gguf, ctx, threads,
    timeout, extra [more arguments]). Returns port, pid and the server's version line. The server is this worker's child
    and dies with it; a server that exits or stays unhealthy is stopped and the error carries its log's tail."""
    import json as _json
    import tempfile
    import urllib.request
    timeout = float(args.get("timeout", 60))
    last = ""
    for attempt in range(3):                       # another process may take the free port between probe and bind
        port = _free_port()
        log = tempfile.TemporaryFile(mode="w+")
        argv = ["llama-server", "-m", args["gguf"], "--host", "127.0.0.1", "--port", str(port),
                "-c", str(int(args.get("ctx", 512))), "-t", str(int(args.get("threads", 1))), "--no-webui"]
        argv += [str(a) for a in args.get("extra", [])]
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent)
        except FileNotFoundError as e:
            raise RuntimeError(f"llama-server not found ({e}); ci/reference-env.sh installs llama.cpp-tools")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        log.seek(0)
        last = "\n".join(log.read().splitlines()[-12:])
        if proc.poll() is None and time.monotonic() < deadline:
            _servers[proc.pid] = (proc, log)
            version = ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/props", timeout=5) as r:
                    props = _json.loads(r.read())
                    version = str(props.get("build_info", ""))
            except (OSError, ValueError):
                pass
            return {"port": port, "pid": proc.pid, "argv": argv, "build_info": version}, []
        _stop(proc)
        log.close()
        if "bind" not in last and "address already in use" not in last.lower():
            break
    raise RuntimeError(f"llama-server did not become healthy within {timeout:.0f} s ({' '.join(argv)}):\n{last}")


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def op_llama_server_stop(args, tensors):
    """Stops a server op_llama_server_start started (SIGTERM, then SIGKILL after 10 s). Returns its exit code and its
    log's tail. Stopping one that is already gone is not an error."""
    entry = _servers.pop(int(args["pid"]), None)
    if entry is None:
        return {"stopped": False}, []
    proc, log = entry
    code = _stop(proc)
    log.seek(0)
    tail = "\n".join(log.read().splitlines()[-12:])
    log.close()
    return {"stopped": True, "code": code, "log_tail": tail}, []


TP_RUNNER = r'''
import json, os, sys
rank, world, model_dir, out_dir, init_file, ids_json, plan_json, new_tokens, doctor = sys.argv[1:10]
rank, world, new_tokens = int(rank), int(world), int(new_tokens)
os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch, torch.distributed as dist, transformers, harness_dump
torch.set_num_threads(1)
# torchrun's rendezvous needs libuv, which Debian's torch lacks: the group is initialised through a file
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
from transformers.integrations.tensor_parallel import ALL_PARALLEL_STYLES, ParallelInterface, RowwiseParallel


class RowwiseWithoutAllReduce(RowwiseParallel):
    """A planted bug a plan can name: row-wise sharding whose partial sums are never all-reduced (each rank goes on with
    its own partial output, as a custom layer that forgets the reduction does)."""

    def _prepare_output_fn(self, mod, outputs, device_mesh):
        return outputs


ALL_PARALLEL_STYLES["rowwise_without_all_reduce"] = RowwiseWithoutAllReduce()
ParallelInterface.register_plan_to_weight_dim("rowwise_without_all_reduce", -1)
ParallelInterface.register_plan_to_bias_dim("rowwise_without_all_reduce", None)
config = transformers.AutoConfig.from_pretrained(model_dir)
plan = json.loads(plan_json)
if plan:
    config.base_model_tp_plan = {**config.base_model_tp_plan, **plan}
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32, tp_plan="auto",
                                                          attn_implementation="eager").eval()
ids = torch.tensor([json.loads(ids_json)])
forwards = [0]
model.register_forward_pre_hook(lambda _m, _a: forwards.__setitem__(0, forwards[0] + 1))
if doctor:                                   # "<rank>:<module>": that rank's module output x1.5 at decode step 2 only
    on_rank, module = doctor.split(":", 1)
    if int(on_rank) == rank:
        def scaled(_m, _a, out):
            if forwards[0] != 3:
                return None
            return out * 1.5 if isinstance(out, torch.Tensor) else (out[0] * 1.5,) + tuple(out[1:])
        model.get_submodule(module).register_forward_hook(scaled)   # before the dump's hooks: the dump sees the doctored output
dump = harness_dump.Dump(model, out_dir, rank, world, placements=harness_dump.placements_from_tp_plan(model))
try:
    if new_tokens:                           # generate(): every decode step, each rank feeding the same greedy tokens
        with torch.no_grad(), dump.generation():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    else:
        with torch.no_grad(), dump.step(0, input_ids=ids):
            model(input_ids=ids, use_cache=False)
finally:
    dump.close()
    dist.destroy_process_group()
'''


def op_judge_hf_tp_dump(args, tensors):
    """transformers' own tensor parallelism (tp_plan="auto", gloo on the CPU) run as world_size processes of this
    interpreter, each dumping every module through harness_dump.py (args dump_source: its text) into out_dir. args:
    model_dir, out_dir, world_size, input_ids (a list), plan (entries that override the config's base_model_tp_plan),
    timeout; max_new_tokens (0: the prompt's forward only; else generate() dumped at every decode step through
    harness_dump's generation()), doctor ("<rank>:<module>": that rank's module output scaled by 1.5 at decode step 2
    only, a bug on one rank after the prompt; the hook sits before the dump's, so the dump records the doctored output). Returns each rank's exit code and stderr tail; a rank that fails still writes its dump with the error."""
    import tempfile
    work = tempfile.mkdtemp(prefix="harness-tp-")
    with open(os.path.join(work, "harness_dump.py"), "w") as f:
        f.write(args["dump_source"])
    with open(os.path.join(work, "runner.py"), "w") as f:
        f.write(TP_RUNNER)
    world = int(args.get("world_size", 2))
    init = os.path.join(work, "init")
    procs = []
    for r in range(world):
        log = tempfile.TemporaryFile(mode="w+")
        procs.append((subprocess.Popen([sys.executable, os.path.join(work, "runner.py"), str(r), str(world), args["model_dir"],
                                        args["out_dir"], init, json.dumps(args["input_ids"]), json.dumps(args.get("plan", {})),
                                        str(int(args.get("max_new_tokens", 0))), args.get("doctor") or ""],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       preexec_fn=_die_with_parent), log))
    deadline = time.monotonic() + float(args.get("timeout", 240))
    ranks = []
    for r, (proc, log) in enumerate(procs):
        try:
            code = proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.seek(0)
        ranks.append({"rank": r, "code": code, "log_tail": "\n".join(log.read().splitlines()[-8:])})
        log.close()
    return {"ranks": ranks}, []


def op_judge_hf_generate_dump(args, tensors):
    """HF's own generate() (greedy, KV cache, max_new_tokens steps) on model_dir, dumped in this process through
    harness_dump.py's generation() (args dump_source: its text) into out_dir: the drop-in hook on a foreign decode loop.
    args fault plants a bug in the generating model (the "engine"), before the dump's hooks so the dump sees its effect:
      "decode-position-off-by-one": every decode step's position ids one past the truth (the prompt's are right), as an
        engine whose decode loop counts positions from one; rotary_emb's output is then wrong from step 1;
      "doctor-step2:<module>": that module's output scaled by 1.5 at decode step 2 only (bf16 judges a decode step within 6 times the reference's own error, which for the tiny Llama's layer-1 mlp is 1.7e-2 relative L2: a 10 % change passes there).
    Returns the generated token ids."""
    import importlib.util
    import tempfile
    work = tempfile.mkdtemp(prefix="harness-generate-")
    path = os.path.join(work, "harness_dump.py")
    with open(path, "w") as f:
        f.write(args["dump_source"])
    spec = importlib.util.spec_from_file_location("harness_dump_under_test", path)
    harness_dump = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness_dump)
    model = transformers.AutoModelForCausalLM.from_pretrained(args["model_dir"], dtype=torch_dtype(args.get("dtype", "float32")),
                                                              attn_implementation="eager").eval()
    fault, forwards = args.get("fault"), [0]

    def count(_m, _a):
        forwards[0] += 1                                   # 1: the prompt's forward, 2: decode step 1, ...

    def shift(_m, a, kw):
        if forwards[0] < 2:
            return None
        if kw.get("position_ids") is not None:
            kw["position_ids"] = kw["position_ids"] + 1
        else:
            kw["position_ids"] = (kw["cache_position"] + 1).unsqueeze(0)
        return a, kw

    handles = [model.register_forward_pre_hook(count)]
    if fault == "decode-position-off-by-one":
        handles.append(model.model.register_forward_pre_hook(shift, with_kwargs=True))
    elif fault and fault.startswith("doctor-step2:"):
        def doctor(_m, _a, out):
            if forwards[0] != 3:
                return None
            return out * 1.5 if isinstance(out, torch.Tensor) else (out[0] * 1.5,) + tuple(out[1:])
        handles.append(model.get_submodule(fault.split(":", 1)[1]).register_forward_hook(doctor))
    elif fault:
        raise ValueError(f"fault must be decode-position-off-by-one or doctor-step2:<module>, got {fault!r}")
    steps = int(args["max_new_tokens"])
    ids = torch.tensor([args["input_ids"]], dtype=torch.int64)
    dump = harness_dump.Dump(model, args["out_dir"])
    try:
        with torch.no_grad(), dump.generation():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                                 do_sample=False, pad_token_id=0)
    finally:
        dump.close()
        for h in handles:
            h.remove()
    for f in os.listdir(args["out_dir"]):
        os.chmod(os.path.join(args["out_dir"], f), 0o644)
    return {"tokens": out[0, ids.shape[1]:].tolist(), "forwards": forwards[0]}, []


OPS["judge_hf_generate_dump"] = op_judge_hf_generate_dump
OPS["judge_hf_tp_dump"] = op_judge_hf_tp_dump
OPS["judge_build_sp_llama"] = op_judge_build_sp_llama
OPS["judge_tokenize"] = op_judge_tokenize
OPS["judge_decode"] = op_judge_decode
OPS["judge_gguf_convert"] = op_judge_gguf_convert
OPS["judge_gguf_set_metadata"] = op_judge_gguf_set_metadata
OPS["llama_server_start"] = op_llama_server_start
OPS["llama_server_stop"] = op_llama_server_stop
