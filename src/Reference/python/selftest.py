"""Self-test of the reference worker through its real protocol (see ../PROTOCOL.md).

    python3 selftest.py PYTHON

PYTHON is the interpreter that has torch (e.g. the chroot wrapper from ci/reference-env.sh).
This client needs only the standard library. Prints PASS/FAIL per check; exits 1 on any failure.
"""

import json
import math
import os
import struct
import subprocess
import sys
import threading
import time

MAGIC = b"HRN1"
HERE = os.path.dirname(os.path.abspath(__file__))
BOOTSTRAP = (
    "import sys, struct\n"
    "n = struct.unpack(\"<I\", sys.stdin.buffer.read(4))[0]\n"
    "src = sys.stdin.buffer.read(n).decode(\"utf-8\")\n"
    "exec(compile(src, \"harness_worker.py\", \"exec\"), {\"__name__\": \"__harness_worker__\"})\n"
)
FMT = {"float32": ("f", 4), "int64": ("q", 8), "int32": ("i", 4), "float16": ("e", 2)}


# --- values <-> bytes ------------------------------------------------------------------------

def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_bits(x):
    """float -> bfloat16 bit pattern, round to nearest even (as torch does)."""
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def bf16_value(bits):
    return struct.unpack("<f", struct.pack("<I", bits << 16))[0]


def pack(name, dtype, shape, values):
    if dtype == "bfloat16":
        blob = struct.pack(f"<{len(values)}H", *[bf16_bits(v) for v in values])
    else:
        code, _ = FMT[dtype]
        blob = struct.pack(f"<{len(values)}{code}", *values)
    return {"name": name, "dtype": dtype, "shape": list(shape), "nbytes": len(blob)}, blob


def unpack(desc, blob):
    n = 1
    for s in desc["shape"]:
        n *= s
    if desc["dtype"] == "bfloat16":
        return [bf16_value(b) for b in struct.unpack(f"<{n}H", blob)]
    code, _ = FMT[desc["dtype"]]
    return list(struct.unpack(f"<{n}{code}", blob))


# --- the worker process ----------------------------------------------------------------------

# The tests' fault ops (crash, hang, garbage, allocate): not in the shipped worker; spliced in at its extension marker,
# as ReferenceWorker.Source(extra) does for the C# supervision tests.
FAULT_OPS = os.path.join(HERE, "..", "..", "..", "tests", "Correctness", "Live", "worker_faults.py")
MARKER = b"# @@HARNESS_EXTENSIONS@@"


class Worker:
    def __init__(self, python, with_faults=False):
        worker_src = open(os.path.join(HERE, "harness_worker.py"), "rb").read()
        if with_faults:
            worker_src = worker_src.replace(MARKER, MARKER + b"\n" + open(FAULT_OPS, "rb").read())
        self.proc = subprocess.Popen([python, "-u", "-c", BOOTSTRAP], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr_lines = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.proc.stdin.write(struct.pack("<I", len(worker_src)) + worker_src)
        self.proc.stdin.flush()
        self.next_id = 1

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", "replace").rstrip())

    def send_raw(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, header, blobs=()):
        raw = json.dumps(header).encode("utf-8")
        self.send_raw(MAGIC + struct.pack("<I", len(raw)) + raw + b"".join(blobs))

    def read_exact(self, n):
        data = self.proc.stdout.read(n)
        if len(data) != n:
            raise RuntimeError(f"worker closed stdout (exit {self.proc.poll()}); stderr tail:\n"
                               + "\n".join(self.stderr_lines[-15:]))
        return data

    def receive(self):
        magic = self.read_exact(4)
        if magic != MAGIC:
            raise RuntimeError(f"bad magic from worker: {magic!r}")
        (hlen,) = struct.unpack("<I", self.read_exact(4))
        header = json.loads(self.read_exact(hlen))
        tensors = {}
        for d in header.get("tensors", []):
            tensors[d["name"]] = (d, unpack(d, self.read_exact(d["nbytes"])))
        return header, tensors

    def call(self, op, args=None, tensors=()):
        req_id = self.next_id
        self.next_id += 1
        descs = [t[0] for t in tensors]
        self.send({"id": req_id, "op": op, "args": args or {}, "tensors": descs}, [t[1] for t in tensors])
        header, out = self.receive()
        if header["id"] != req_id:
            raise RuntimeError(f"reply id {header['id']} != request id {req_id}")
        return header, out

    def ok(self, op, args=None, tensors=()):
        header, out = self.call(op, args, tensors)
        if not header["ok"]:
            raise RuntimeError(f"{op} failed: {header['error']['message']}\n{header['error']['traceback']}")
        return header["result"], out

    def wait(self, timeout=30):
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- checks ----------------------------------------------------------------------------------

RESULTS = []


def check(name, fn):
    t0 = time.perf_counter()
    try:
        detail = fn()
        RESULTS.append(True)
        print(f"PASS {name} ({time.perf_counter() - t0:.2f}s){': ' + detail if detail else ''}", flush=True)
    except Exception as e:  # a failing check must not stop the others
        RESULTS.append(False)
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def expect(cond, message):
    if not cond:
        raise AssertionError(message)


def matmul_py(a, b, m, k, n):
    return [sum(a[i * k + p] * b[p * n + j] for p in range(k)) for i in range(m) for j in range(n)]


def test_hello(w):
    t0 = time.perf_counter()
    r, _ = w.ok("hello", {"threads": 1})
    for key in ("python", "torch", "transformers", "safetensors", "threads", "host_root", "pid", "blas"):
        expect(key in r, f"hello lacks {key}")
    expect(r["threads"] == 1, f"threads {r['threads']} after asking for 1")
    w.ok("hello", {})
    return (f"python {r['python']} torch {r['torch']} transformers {r['transformers']} blas {r['blas']} "
            f"imports {r.get('import_seconds')}s, first reply after {time.perf_counter() - t0:.2f}s")


def test_matmul_f32(w):
    m, k, n = 3, 5, 4
    a = [f32(0.1 * i - 0.7) for i in range(m * k)]
    b = [f32(0.3 - 0.05 * i * i) for i in range(k * n)]
    _, out = w.ok("matmul", {}, [pack("a", "float32", (m, k), a), pack("b", "float32", (k, n), b)])
    d, got = out["out"]
    expect(d["shape"] == [m, n] and d["dtype"] == "float32", f"out {d}")
    want = matmul_py(a, b, m, k, n)
    err = max(abs(x - y) / max(1.0, abs(y)) for x, y in zip(got, want))
    expect(err < 1e-5, f"max rel error {err}")
    return f"max rel error {err:.2e}"


def test_matmul_bf16(w):
    m, k, n = 2, 8, 3
    a = [bf16_value(bf16_bits(0.37 * i - 1.1)) for i in range(m * k)]
    b = [bf16_value(bf16_bits(1.3 - 0.21 * i)) for i in range(k * n)]
    _, out = w.ok("matmul", {}, [pack("a", "bfloat16", (m, k), a), pack("b", "bfloat16", (k, n), b)])
    d, got = out["out"]
    expect(d["shape"] == [m, n] and d["dtype"] == "bfloat16", f"out {d}")
    want = matmul_py(a, b, m, k, n)
    # fp32 accumulation, one final rounding to bf16: within one bf16 ulp of the exact product.
    for x, y in zip(got, want):
        expect(abs(x - y) <= abs(y) * 2 ** -7 + 1e-6, f"{x} vs exact {y}")
    return f"{got[:3]} ~ {[round(v, 4) for v in want[:3]]}"


def test_error_reply(w):
    a = pack("a", "float32", (2, 3), [1.0] * 6)
    b = pack("b", "float32", (2, 3), [1.0] * 6)
    header, _ = w.call("matmul", {}, [a, b])
    expect(header["ok"] is False, "shape mismatch did not fail")
    err = header["error"]
    expect("Traceback" in err["traceback"] and err["type"] == "RuntimeError", f"error {err}")
    header, _ = w.call("no_such_op")
    expect(header["ok"] is False and "unknown op" in header["error"]["message"], f"{header}")
    d, blob = pack("a", "float32", (2, 2), [1.0] * 4)
    header, _ = w.call("matmul", {}, [(dict(d, shape=[3, 2]), blob), b])
    expect(header["ok"] is False and "nbytes" in header["error"]["message"], f"nbytes mismatch {header}")
    raw = b"{not json"
    w.send_raw(MAGIC + struct.pack("<I", len(raw)) + raw)
    header, _ = w.receive()
    expect(header["ok"] is False and header["id"] == -1, f"bad JSON reply {header}")
    w.ok("hello")
    return err["message"].splitlines()[0][:80]


TINY_LLAMA = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 128, "intermediate_size": 128, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}
PROMPT = [1, 17, 42, 99, 5, 63]
CAPTURE = ["model.layers.0.self_attn", "model.layers.1.mlp", "model.norm", "lm_head"]


def test_build_forward_generate(w):
    model_dir = f"/tmp/harness-selftest-{os.getpid()}"
    r, _ = w.ok("build_model", {"config": TINY_LLAMA, "seed": 0, "dtype": "float32", "out_dir": model_dir})
    names = {p["name"] for p in r["params"]}
    expect("model.embed_tokens.weight" in names and "lm_head.weight" in names, f"params {sorted(names)[:5]}")
    expect(any(f.endswith(".safetensors") for f in r["files"]), f"files {r['files']}")

    T = len(PROMPT)
    ids = pack("input_ids", "int64", (1, T), PROMPT)
    fwd = {"model_dir": model_dir, "dtype": "float32", "input_kind": "input_ids",
           "capture": CAPTURE + ["model.embed_tokens"]}
    r, out = w.ok("forward", fwd, [ids])
    want_shapes = {"model.layers.0.self_attn": [1, T, 64], "model.layers.1.mlp": [1, T, 64],
                   "model.norm": [1, T, 64], "lm_head": [1, T, 128], "logits": [1, T, 128]}
    for name, shape in want_shapes.items():
        expect(name in out and out[name][0]["shape"] == shape, f"{name}: {out.get(name, [None])[0]}")
    expect([c["module"] for c in r["captured"]] == fwd["capture"], f"captured {r['captured']}")
    logits = out["logits"][1]
    expect(out["lm_head"][1] == logits, "lm_head output differs from logits")

    emb_desc, emb = out["model.embed_tokens"]
    r2, out2 = w.ok("forward", dict(fwd, input_kind="inputs_embeds", capture=[]),
                    [pack("inputs_embeds", "float32", emb_desc["shape"], emb)])
    err = max(abs(x - y) for x, y in zip(out2["logits"][1], logits))
    expect(err < 1e-5, f"inputs_embeds forward differs by {err}")

    r, g = w.ok("generate", {"model_dir": model_dir, "dtype": "float32", "max_new_tokens": 4, "top_k": 5,
                             "input_kind": "input_ids"}, [ids])
    tokens, top_ids, top_lp = g["tokens"][1], g["topk_ids"][1], g["topk_logprobs"][1]
    expect(g["tokens"][0]["shape"] == [4] and g["topk_ids"][0]["shape"] == [4, 5]
           and g["topk_logprobs"][0]["shape"] == [4, 5], "generate shapes")
    for s in range(4):
        row = top_lp[s * 5:(s + 1) * 5]
        expect(top_ids[s * 5] == tokens[s], f"step {s}: token {tokens[s]} is not the top-1 {top_ids[s * 5]}")
        expect(all(x >= y for x, y in zip(row, row[1:])) and row[0] <= 0, f"step {s}: logprobs {row}")

    # The cached greedy loop must agree with a full forward of prompt + generated tokens.
    full = PROMPT + tokens[:3]
    _, out3 = w.ok("forward", {"model_dir": model_dir, "dtype": "float32", "capture": []},
                   [pack("input_ids", "int64", (1, len(full)), full)])
    lg = out3["logits"][1]
    for s in range(4):
        pos = T - 1 + s
        row = lg[pos * 128:(pos + 1) * 128]
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        want = sorted(((v - lse, i) for i, v in enumerate(row)), key=lambda p: -p[0])[:5]
        expect([i for _, i in want] == top_ids[s * 5:(s + 1) * 5], f"step {s}: ids {want} vs {top_ids}")
        err = max(abs(a - b) for (a, _), b in zip(want, top_lp[s * 5:(s + 1) * 5]))
        expect(err < 1e-4, f"step {s}: logprob error {err}")

    rb, outb = w.ok("forward", {"model_dir": model_dir, "dtype": "bfloat16", "capture": ["model.norm"]}, [ids])
    expect(outb["model.norm"][0]["dtype"] == "bfloat16", f"bf16 capture {outb['model.norm'][0]}")
    return f"tokens {tokens}, top-1 logprobs {[round(top_lp[s * 5], 3) for s in range(4)]}"


def test_crash(python):
    w = Worker(python, with_faults=True)
    try:
        w.ok("hello")
        w.send({"id": 99, "op": "fault_crash", "args": {"code": 7}, "tensors": []})
        code = w.wait()
        expect(code == 7, f"exit code {code}")
    finally:
        w.kill()


def test_bad_magic(python):
    w = Worker(python)
    try:
        w.ok("hello")
        w.send_raw(b"XXXX" + b"\0" * 8)
        code = w.wait()
        expect(code == 3, f"exit code {code}")
        expect(any("framing" in line for line in w.stderr_lines[-3:]), f"stderr {w.stderr_lines[-3:]}")
    finally:
        w.kill()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    python = sys.argv[1]
    w = Worker(python)
    try:
        check("hello", lambda: test_hello(w))
        check("matmul float32", lambda: test_matmul_f32(w))
        check("matmul bfloat16", lambda: test_matmul_bf16(w))
        check("error reply with traceback", lambda: test_error_reply(w))
        check("build_model + forward capture + generate (tiny llama)", lambda: test_build_forward_generate(w))

        def shutdown():
            w.ok("shutdown")
            code = w.wait()
            expect(code == 0, f"exit code {code}")
        check("shutdown exits 0", shutdown)
    finally:
        if RESULTS and not all(RESULTS):
            print("worker stderr tail:\n  " + "\n  ".join(w.stderr_lines[-20:]), file=sys.stderr)
        w.kill()
    check("a worker killed mid-request (fault_crash) exits with its code", lambda: test_crash(python))
    check("bad magic: stderr line, exit 3", lambda: test_bad_magic(python))
    failed = RESULTS.count(False)
    print(f"{len(RESULTS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
