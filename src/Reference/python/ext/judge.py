# Judging other engines (README, "Judging another engine"): the checkpoint's tokenizer, the tiny Llama with a real
# SentencePiece tokenizer the tests build, the packaged GGUF converter and metadata editor, and llama-server started
# and stopped under this worker (so the worker's supervision covers it: a killed worker takes its server with it).

import signal
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
    """llama.cpp's convert_hf_to_gguf.py (the packaged one) on an HF folder: args model_dir, outfile, outtype (f32)."""
    import shutil
    converter = args.get("converter") or next(
        (c for c in GGUF_CONVERTERS if os.path.isfile(c)), None) or shutil.which("convert_hf_to_gguf.py")
    if converter is None:
        raise RuntimeError(f"no GGUF converter: none of {GGUF_CONVERTERS} exists (Debian package llama.cpp-tools)")
    log = _run_tool([sys.executable, converter, args["model_dir"], "--outfile", args["outfile"],
                     "--outtype", args.get("outtype", "f32")], int(args.get("timeout", 300)), "GGUF conversion")
    return {"converter": converter, "log_tail": "\n".join(log.splitlines()[-5:])}, []


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


def _die_with_parent():
    """In the server's child before exec: SIGKILL when this worker dies, however it dies (PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


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


OPS["judge_build_sp_llama"] = op_judge_build_sp_llama
OPS["judge_tokenize"] = op_judge_tokenize
OPS["judge_decode"] = op_judge_decode
OPS["judge_gguf_convert"] = op_judge_gguf_convert
OPS["judge_gguf_set_metadata"] = op_judge_gguf_set_metadata
OPS["llama_server_start"] = op_llama_server_start
OPS["llama_server_stop"] = op_llama_server_stop
