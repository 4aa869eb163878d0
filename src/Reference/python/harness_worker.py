"""Harness reference worker: HF transformers + torch behind the binary frame protocol.

See src/Reference/PROTOCOL.md. Started as `python -u -c BOOTSTRAP`, the bootstrap reads this
source from stdin and exec()s it with __name__ == "__harness_worker__"; frames then follow on
stdin. Replies go to a private duplicate of the original fd 1; fd 1 itself (and sys.stdout)
is pointed at stderr so that library prints never reach the frame channel.

Exit codes: 0 after `shutdown` or EOF at a frame boundary, 3 on broken framing, 4 when the harness that started it is
already gone (the worker dies with the harness: PR_SET_PDEATHSIG, see die_with_parent). The worker carries no
test hooks: the supervision tests splice their fault ops (crash, hang, garbage, allocate) in at the
extension marker (tests/Correctness/Live/worker_faults.py, ReferenceWorker.Source).
"""

import importlib
import inspect
import json
import os
import re
import struct
import sys
import time
import traceback

MAGIC = b"HRN1"
EXIT_FRAMING = 3
EXIT_ORPHANED = 4
UNKNOWN_ID = -1


# ---------------------------------------------------------------------------------------------
# Channel: stdin frames in, private fd frames out
# ---------------------------------------------------------------------------------------------

class FramingError(Exception):
    """The byte stream is no longer a sequence of frames: the worker cannot recover."""


class CleanEof(Exception):
    """stdin closed at a frame boundary."""


def take_frame_fd():
    """Keeps the real stdout for frames; everything else that writes to fd 1 lands on stderr."""
    frame_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return frame_fd


class Channel:
    def __init__(self, inp, frame_fd):
        self.inp = inp
        self.frame_fd = frame_fd

    def _read_exact(self, n, at_boundary=False):
        chunks, got = [], 0
        while got < n:
            chunk = self.inp.read(n - got)
            if not chunk:
                if at_boundary and got == 0:
                    raise CleanEof()
                raise FramingError(f"EOF after {got} of {n} bytes")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read_frame(self):
        """Returns (header, payload bytes). header is None when it is not a JSON object; the
        caller then answers with an error (its payload, if any, cannot be skipped)."""
        magic = self._read_exact(4, at_boundary=True)
        if magic != MAGIC:
            raise FramingError(f"bad magic {magic!r}")
        (hlen,) = struct.unpack("<I", self._read_exact(4))
        raw = self._read_exact(hlen)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return None, f"header is not JSON: {e}"
        if not isinstance(header, dict):
            return None, "header is not a JSON object"
        nbytes = payload_size(header.get("tensors", []))
        if nbytes is None:
            return None, "header['tensors'] has no readable nbytes"
        return header, self._read_exact(nbytes)

    def write_frame(self, header, blobs=()):
        raw = json.dumps(header).encode("utf-8")
        self._write_all(MAGIC + struct.pack("<I", len(raw)) + raw)
        for blob in blobs:
            self._write_all(blob)

    def write_raw(self, data):
        self._write_all(data)

    def _write_all(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.frame_fd, view)
            view = view[n:]


def payload_size(descs):
    if not isinstance(descs, list):
        return None
    total = 0
    for d in descs:
        n = d.get("nbytes") if isinstance(d, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return None
        total += n
    return total


# ---------------------------------------------------------------------------------------------
# Tensors on the wire
# ---------------------------------------------------------------------------------------------

def wire_dtypes(torch):
    return {
        "float32": (torch.float32, 4),
        "bfloat16": (torch.bfloat16, 2),
        "float16": (torch.float16, 2),
        "int64": (torch.int64, 8),
        "int32": (torch.int32, 4),
        "bool": (torch.bool, 1),
        "float64": (torch.float64, 8),
    }


def torch_dtype(name):
    if name not in WIRE:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(WIRE)}")
    return WIRE[name][0]


def dtype_name(dt):
    for name, (t, _) in WIRE.items():
        if t == dt:
            return name
    raise ValueError(f"dtype {dt} cannot go over the wire")


def decode_tensors(descs, payload):
    out, off = {}, 0
    for d in descs:
        name, dt, shape, nbytes = d.get("name"), d.get("dtype"), d.get("shape"), d["nbytes"]
        if not isinstance(name, str):
            raise ValueError(f"tensor descriptor without a name: {d}")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"tensor {name!r}: bad shape {shape!r}")
        tdt = torch_dtype(dt)
        count = 1
        for s in shape:
            count *= s
        if count * WIRE[dt][1] != nbytes:
            raise ValueError(f"tensor {name!r}: nbytes {nbytes} != prod({shape}) * itemsize of {dt}")
        if name in out:
            raise ValueError(f"tensor {name!r} given twice")
        chunk = payload[off:off + nbytes]
        off += nbytes
        if nbytes == 0:
            out[name] = torch.empty(shape, dtype=tdt)
        else:
            out[name] = torch.frombuffer(bytearray(chunk), dtype=tdt).reshape(shape)
    return out


def encode_tensor(name, t):
    t = t.detach().cpu().contiguous()
    dt = dtype_name(t.dtype)
    if t.dtype == torch.bfloat16:
        blob = t.view(torch.int16).numpy().tobytes()
    else:
        blob = t.numpy().tobytes()
    return {"name": name, "dtype": dt, "shape": list(t.shape), "nbytes": len(blob)}, blob


# ---------------------------------------------------------------------------------------------
# Helpers shared by ops
# ---------------------------------------------------------------------------------------------

def need(tensors, name):
    if name not in tensors:
        raise KeyError(f"missing input tensor {name!r} (given: {sorted(tensors)})")
    return tensors[name]


def blas_summary():
    """torch's build-time BLAS plus the library libblas actually resolved to (Debian's torch is
    built against generic libblas.so.3, which the alternatives system points at OpenBLAS)."""
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    info = found.group(1) if found else "unknown"
    loaded = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "blas" in os.path.basename(path):
                    loaded.add(os.path.realpath(path))
    except OSError:
        pass
    libs = sorted({os.path.basename(p) for p in loaded} - {"libblas.so.3"})
    return info + (" (" + ", ".join(libs) + ")" if libs else "")


_openblas = []


def set_threads(n):
    """torch's intra-op threads, and OpenBLAS's own pthread pool when OpenBLAS is loaded."""
    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    if not _openblas:
        import ctypes
        try:
            _openblas.append(ctypes.CDLL("libopenblas.so.0"))
        except OSError:
            _openblas.append(None)
    if _openblas[0] is not None:
        _openblas[0].openblas_set_num_threads(n)


def module_output(out):
    """A module's output as one tensor: first element of a tuple / ModelOutput."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"module output of type {type(out).__name__} has no leading tensor")


# ---------------------------------------------------------------------------------------------
# Models: build, load (cached), capture
# ---------------------------------------------------------------------------------------------

def model_class_named(name):
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ValueError(f"transformers has no class {name!r}")
    return cls


def instantiate(cls, config):
    if cls.__name__.startswith("Auto"):
        return cls.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return cls._from_config(config, attn_implementation="eager", dtype=torch.float32)


def dir_signature(path):
    entries = []
    for name in sorted(os.listdir(path)):
        st = os.stat(os.path.join(path, name))
        entries.append((name, st.st_size, st.st_mtime_ns))
    return tuple(entries)


_model_cache = {}

# HARNESS_REFERENCE_DEVICE=cuda (in this worker's own start: ReferenceWorker.Device, cuda under `harness run/compare --device cuda`):
# the reference model and its inputs go on the GPU.
REFERENCE_DEVICE = os.environ.get("HARNESS_REFERENCE_DEVICE", "cpu") or "cpu"


def reference_device_name():
    if REFERENCE_DEVICE.startswith("cuda") and torch.cuda.is_available():
        return f"{REFERENCE_DEVICE} ({torch.cuda.get_device_name(torch.device(REFERENCE_DEVICE))})"
    return REFERENCE_DEVICE


def placement():
    """from_pretrained's placement: the weights go straight from safetensors to the reference device at the asked dtype
    (no host copy first on the GPU); HARNESS_REFERENCE_DEVICE=auto spreads them over every GPU and the host (accelerate's
    device_map="auto") where one device is not enough."""
    if REFERENCE_DEVICE == "cpu":
        return {}
    if REFERENCE_DEVICE == "auto":
        return {"device_map": "auto"}
    return {"device_map": REFERENCE_DEVICE}


def load_model(model_dir, dtype_name_, class_name=None):
    """from_pretrained with eager attention; the last model stays cached until its directory
    changes (build_model rewrites it) or another model/dtype is asked for."""
    key = (os.path.realpath(model_dir), dtype_name_, class_name)
    sig = dir_signature(model_dir)
    hit = _model_cache.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    _model_cache.clear()
    if class_name is None:
        config = transformers.AutoConfig.from_pretrained(model_dir)
        archs = getattr(config, "architectures", None) or []
        class_name = archs[0] if archs and hasattr(transformers, archs[0]) else "AutoModelForCausalLM"
    cls = model_class_named(class_name)
    model = cls.from_pretrained(model_dir, dtype=torch_dtype(dtype_name_), attn_implementation="eager", **placement())
    model.eval()
    _model_cache[key] = (sig, model)
    return model


def model_inputs(args, tensors, model):
    kind = args.get("input_kind", "inputs_embeds" if "inputs_embeds" in tensors else "input_ids")
    if kind == "input_ids":
        ids = need(tensors, "input_ids")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be int64 or int32, got {ids.dtype}")
        return {"input_ids": ids.to(torch.int64).to(model.device)}
    if kind == "inputs_embeds":
        return {"inputs_embeds": need(tensors, "inputs_embeds").to(model.dtype).to(model.device)}
    raise ValueError(f"input_kind must be 'input_ids' or 'inputs_embeds', got {kind!r}")


class Capture:
    """Forward hooks on named modules; keeps each module's first output."""

    def __init__(self, model, paths):
        self.outputs, self.calls, self.handles = {}, {}, []
        for path in paths:
            module = model.get_submodule(path)
            self.handles.append(module.register_forward_hook(self._hook(path)))

    def _hook(self, path):
        def hook(_module, _inputs, output):
            self.calls[path] = self.calls.get(path, 0) + 1
            if path not in self.outputs:
                self.outputs[path] = module_output(output).detach().clone()
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def capture_run(model, paths, call):
    """Runs call(model) with forward hooks on the module paths; returns (call's result, [(path, output)], captured
    metadata). A path that never ran is an error naming it. Every model-specific op captures through this."""
    capture = Capture(model, paths)
    try:
        with torch.no_grad():
            result = call(model)
    finally:
        capture.close()
    outs, captured = [], []
    for path in paths:
        if path not in capture.outputs:
            raise RuntimeError(f"module {path!r} was not called during forward")
        t = capture.outputs[path]
        outs.append((path, t))
        captured.append({"module": path, "shape": list(t.shape), "dtype": dtype_name(t.dtype),
                         "calls": capture.calls[path]})
    return result, outs, captured


_oracle_cache = {}


def oracle_model(model):
    """The float64 twin of a loaded model (the same weights upcast), cached beside it: the whole-model oracle
    (args oracle_mode "whole"), 8 bytes a parameter beside the reference. The default is Float64Stream below, which
    computes the same float64 values at the cost of one decoder layer. HF keeps some internals in float32 even then
    (rotary, softmax casts), so the oracle is 'HF in float64 as far as HF goes'; its float32-computing RMSNorms
    (FLOAT32_NORMS, FLOAT32_T5_NORMS) run in float64 (float64_norms)."""
    import copy
    hit = _oracle_cache.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    _oracle_cache.clear()
    twin = copy.deepcopy(model).to(torch.float64).eval()
    float64_norms(twin)                                # float32-computing norms in float64 (FLOAT32_NORMS)
    # HF's grouped_mm experts kernels take no float64: the twin runs its MoE experts eagerly (the same sums per expert).
    eager_experts(twin)
    _oracle_cache[id(model)] = (model, twin)
    return twin


# RMSNorms whose HF forward computes in float32 whatever the input's dtype:
#   Gemma3nRMSNorm, Gemma4RMSNorm (FLOAT32_NORMS):
#     normed_output = self._norm(hidden_states.float()); normed_output * self.weight.float(); .type_as(hidden_states)
#   LlamaRMSNorm, Qwen2RMSNorm, Qwen2VLRMSNorm (FLOAT32_T5_NORMS, "equivalent to T5LayerNorm"):
#     hidden_states = hidden_states.to(torch.float32); variance = hidden_states.pow(2).mean(-1, keepdim=True)
#     hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
#     return self.weight * hidden_states.to(input_dtype)
# In the float64 oracle that rounds every such norm to float32 (the reference's own rounding: the oracle then shares it,
# and the reference's error there is a float32 sample of a float32 error, not its distance from float64). The oracle runs
# them in float64 instead (float64_norms): the same HF arithmetic on the float64 input.
FLOAT32_NORMS = ("Gemma3nRMSNorm", "Gemma4RMSNorm")
FLOAT32_T5_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen2VLRMSNorm")


def float64_norm_forward(module):
    """The forward of a FLOAT32_NORMS module that keeps a float64 input in float64 (HF's own _norm; other dtypes: HF's forward)."""
    hf_forward = type(module).forward

    def forward(hidden_states, *a, **kw):
        if not torch.is_tensor(hidden_states) or hidden_states.dtype != torch.float64:
            return hf_forward(module, hidden_states, *a, **kw)
        normed_output = module._norm(hidden_states)                       # HF: self._norm(hidden_states.float())
        if module.with_scale:
            normed_output = normed_output * module.weight.to(torch.float64)   # HF: normed_output * self.weight.float()
        return normed_output
    return forward


def float64_t5_norm_forward(module):
    """The forward of a FLOAT32_T5_NORMS module that keeps a float64 input in float64 (HF's forward without its
    .to(torch.float32); other dtypes: HF's forward)."""
    hf_forward = type(module).forward

    def forward(hidden_states, *a, **kw):
        if not torch.is_tensor(hidden_states) or hidden_states.dtype != torch.float64:
            return hf_forward(module, hidden_states, *a, **kw)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)           # HF: on hidden_states.to(torch.float32)
        hidden_states = hidden_states * torch.rsqrt(variance + module.variance_epsilon)
        return module.weight.to(torch.float64) * hidden_states           # HF: self.weight * hidden_states.to(input_dtype)
    return forward


def float64_norms(model):
    """Installs float64_norm_forward on every FLOAT32_NORMS module of model and float64_t5_norm_forward on every
    FLOAT32_T5_NORMS one; returns the undo (removes them)."""
    patched = []
    for module in model.modules():
        name = type(module).__name__
        if name in FLOAT32_NORMS or name in FLOAT32_T5_NORMS:
            module.forward = (float64_norm_forward if name in FLOAT32_NORMS else float64_t5_norm_forward)(module)
            patched.append(module)

    def undo():
        for module in patched:
            module.__dict__.pop("forward", None)
    return undo


def eager_experts(model):
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "_experts_implementation", None) not in (None, "eager"):
            config._experts_implementation = "eager"


class _Float64View:
    """The model as a call sees it under Float64Stream: every attribute is the model's, but `dtype` is the oracle's
    (calls write inputs.to(m.dtype); the reference's own dtype there would round the oracle's inputs)."""

    def __init__(self, model, dtype):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "dtype", dtype)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)


class Float64Stream:
    """The float64 oracle at the cost of one decoder layer: the loaded model itself runs in float64, each heavy part
    upcast only while it runs and put back after.

    - units (every child of an nn.ModuleList that is not inside another unit: decoder layers, tower blocks, AltUp
      projections): all their parameters and buffers are upcast by a forward pre-hook and the originals put back by
      the forward hook, so one layer's float64 copy exists at a time;
    - embeddings (nn.Embedding outside units): the lookup runs on a float64 table of only the rows the ids name (ids
      remapped), never the whole table (Gemma3n's per-layer table is 16 GB in float64);
    - large linear layers outside units (lm_head: weight above 2^24 elements): float64 in slices of output rows;
    - the rest (final norm, rotary buffers, small projections, embedders' norms): upcast for the whole call.
    The arithmetic is the whole-model twin's (the same ops on the same float64 values), so its captures equal the
    twin's; the reference's own tensors are the same objects before and after. `keep` maps a module path to the dtype
    that subtree runs in instead (float32 for a tower HF cannot run in float64), its input cast down and output up."""

    LARGE_LINEAR = 1 << 24

    def __init__(self, model, dtype=None, keep=None):
        self.model, self.dtype, self.keep = model, dtype or torch.float64, dict(keep or {})
        self.handles, self.saved, self.active = [], [], {}

    # -- swapping ------------------------------------------------------------------------------------------------
    def _swap(self, module, dtype, recurse, memo, log, kinds=("_parameters", "_buffers")):
        mods = module.modules() if recurse else [module]
        for m in mods:
            for kind in kinds:
                store = getattr(m, kind)
                for name, t in list(store.items()):
                    if t is None or not t.is_floating_point() or t.dtype == dtype:
                        continue
                    up = memo.get(id(t))
                    if up is None:
                        data = t.detach().to(dtype)
                        up = torch.nn.Parameter(data, requires_grad=False) if kind == "_parameters" else data
                        memo[id(t)] = up
                    log.append((store, name, t))
                    store[name] = up

    @staticmethod
    def _restore(log):
        for store, name, t in reversed(log):
            store[name] = t
        log.clear()

    def _unit_dtype(self, path):
        for prefix, dt in self.keep.items():
            if path == prefix or path.startswith(prefix + "."):
                return dt
        return self.dtype

    # -- hooks ---------------------------------------------------------------------------------------------------
    def _unit_hooks(self, path, module):
        dtype = self._unit_dtype(path)

        def pre(m, _args):
            log = []
            self.active[id(m)] = log
            self._swap(m, dtype, True, {}, log)

        def post(m, _args, _out):
            self._restore(self.active.pop(id(m), []))
        self.handles.append(module.register_forward_pre_hook(pre, prepend=True))
        self.handles.append(module.register_forward_hook(post, prepend=True))

    def _embedding_hooks(self, module):
        dtype = self._unit_dtype("")

        def pre(m, args, kwargs):
            if args:
                ids, args = args[0], args[1:]
            else:
                key = next(k for k, v in kwargs.items() if torch.is_tensor(v))
                ids = kwargs.pop(key)
            rows, inverse = torch.unique(ids, sorted=True, return_inverse=True)
            saved = (m._parameters["weight"], m.padding_idx)
            self.active[id(m)] = saved
            m._parameters["weight"] = torch.nn.Parameter(saved[0].detach()[rows].to(dtype), requires_grad=False)
            m.padding_idx = None                                    # only gradients read it; it may lie past the rows
            return (inverse,) + tuple(args), kwargs

        def post(m, _args, _kwargs, _out):
            saved = self.active.pop(id(m), None)
            if saved is not None:
                m._parameters["weight"], m.padding_idx = saved
        self.handles.append(module.register_forward_pre_hook(pre, prepend=True, with_kwargs=True))
        self.handles.append(module.register_forward_hook(post, prepend=True, with_kwargs=True))

    def _large_linear(self, module):
        dtype = self._unit_dtype("")
        weight, bias = module.weight, module.bias
        rows = max(1, self.LARGE_LINEAR // max(1, weight.shape[1]))

        def forward(x):
            # [.., in] -> [.., out]: output rows in slices, each slice of W upcast on its own
            parts = []
            for i in range(0, weight.shape[0], rows):
                w = weight.detach()[i:i + rows].to(dtype)
                b = None if bias is None else bias.detach()[i:i + rows].to(dtype)
                parts.append(torch.nn.functional.linear(x, w, b))
            return torch.cat(parts, dim=-1)
        module.forward = forward
        self.saved.append(lambda: module.__dict__.pop("forward", None))

    def _keep_hooks(self, module, dtype):
        def down(_m, a, kw):
            cast = lambda x: x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x   # noqa: E731
            return tuple(cast(x) for x in a), {k: cast(v) for k, v in kw.items()}

        def up(_m, _a, out):
            if hasattr(out, "last_hidden_state"):
                out.last_hidden_state = out.last_hidden_state.to(self.dtype)
                return out
            return out.to(self.dtype) if torch.is_tensor(out) and out.is_floating_point() else out
        self.handles.append(module.register_forward_pre_hook(down, with_kwargs=True))
        self.handles.append(module.register_forward_hook(up))

    # -- enter/exit ----------------------------------------------------------------------------------------------
    def __enter__(self):
        units, inside = [], set()
        for path, module in self.model.named_modules():
            if any(path.startswith(u + ".") for u in inside if u):
                continue
            if isinstance(module, torch.nn.ModuleList):
                for i, child in enumerate(module):
                    units.append((f"{path}.{i}" if path else str(i), child))
                    inside.add(f"{path}.{i}" if path else str(i))
        in_unit = set()
        for _, u in units:
            in_unit.update(id(m) for m in u.modules())
        self._rest_log, memo = [], {}
        try:
            if self.dtype == torch.float64:
                self.saved.append(float64_norms(self.model))   # float32-computing norms in float64 (FLOAT32_NORMS)
            for path, module in units:
                self._unit_hooks(path, module)
            for path, module in self.model.named_modules():
                if id(module) in in_unit:
                    continue
                if path in self.keep:
                    self._keep_hooks(module, self.keep[path])
                if isinstance(module, torch.nn.Embedding):
                    self._embedding_hooks(module)
                    self._swap(module, self._unit_dtype(path), False, memo, self._rest_log, kinds=("_buffers",))
                elif isinstance(module, torch.nn.Linear) and module.weight.numel() > self.LARGE_LINEAR:
                    self._large_linear(module)
                else:
                    self._swap(module, self._unit_dtype(path), False, memo, self._rest_log)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return _Float64View(self.model, self.dtype)

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for undo in self.saved:
            undo()
        self.saved.clear()
        for key, log in list(self.active.items()):                 # a call that raised mid-forward left these swapped
            if isinstance(log, list):
                self._restore(log)
            else:
                for m in self.model.modules():
                    if id(m) == key:
                        m._parameters["weight"], m.padding_idx = log
        self.active.clear()
        self._restore(getattr(self, "_rest_log", []))
        return False


def upcast(value):
    """Floating tensors (also inside dicts, lists and tuples) to float64, for the oracle's inputs; others unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: upcast(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(upcast(v) for v in value)
    return value


def oracle_outputs(args, model, paths, call, keep=None):
    """When args["oracle"] is true: the same call in float64, its captures and extra outputs named "oracle.<name>" in
    float64; else []. call(model, upcast_fn) -> [(name, tensor)] extra outputs (e.g. logits). args["oracle_mode"]:
    "stream" (default: Float64Stream, one layer's float64 copy at a time) or "whole" (the deep-copied float64 twin).
    keep: {module path: dtype} subtrees that run at that dtype instead (a tower HF cannot run in float64)."""
    if not args.get("oracle"):
        return []
    mode = args.get("oracle_mode") or "stream"
    if mode == "whole":
        twin = oracle_model(model)
        extra, outs, _ = capture_run(twin, paths, lambda m: call(m, upcast))
    elif mode == "stream":
        experts = [(m.config, m.config._experts_implementation) for m in model.modules()
                   if getattr(getattr(m, "config", None), "_experts_implementation", None) not in (None, "eager")]
        try:
            eager_experts(model)
            with Float64Stream(model, keep=keep) as view:
                extra, outs, _ = capture_run(model, paths, lambda m: call(view, upcast))
        finally:
            for config, impl in experts:
                config._experts_implementation = impl
    else:
        raise ValueError(f"oracle_mode must be 'stream' or 'whole', got {mode!r}")
    return [("oracle." + name, t.to(torch.float64)) for name, t in outs + list(extra)]


# ---------------------------------------------------------------------------------------------
# Ops: each takes (args, tensors) and returns (result dict, [(name, tensor)])
# ---------------------------------------------------------------------------------------------

def op_hello(args, tensors):
    if args.get("threads") is not None:
        set_threads(args["threads"])
    import safetensors
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "threads": torch.get_num_threads(),
        "host_root": os.environ.get("HARNESS_HOST_ROOT", ""),
        # the sandbox (ci/reference-env.sh's wrapper under HARNESS_SANDBOX=1): the host's files read-only under host_view,
        # this worker's private scratch folder, and the unprivileged user it runs as
        "host_view": os.environ.get("HARNESS_HOST_VIEW", ""),
        "scratch": os.environ.get("HARNESS_SCRATCH", ""),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "device": reference_device_name(),
        "pid": os.getpid(),
        "blas": blas_summary(),
        "import_seconds": round(IMPORT_SECONDS, 3),
    }, []


def op_matmul(args, tensors):
    return {}, [("out", torch.matmul(need(tensors, "a"), need(tensors, "b")))]


def op_activation(args, tensors):
    from transformers.activations import ACT2FN
    x = need(tensors, "x")
    return {}, [("out", ACT2FN[args["name"]](x).to(x.dtype))]


def op_gelu(args, tensors):
    approximate = args.get("approximate", "none")
    return {}, [("out", torch.nn.functional.gelu(need(tensors, "x"), approximate=approximate))]


def op_silu(args, tensors):
    return {}, [("out", torch.nn.functional.silu(need(tensors, "x")))]


def op_softmax(args, tensors):
    x = need(tensors, "x")
    return {}, [("out", torch.softmax(x, int(args.get("dim", -1))).to(x.dtype))]


def op_log_softmax(args, tensors):
    x = need(tensors, "x")
    return {}, [("out", torch.log_softmax(x, int(args.get("dim", -1))).to(x.dtype))]


def rms_norm_class(name):
    if not name.endswith("RMSNorm"):
        raise ValueError(f"{name!r} is not an RMSNorm class name")
    family = name[: -len("RMSNorm")].lower()
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    return getattr(module, name)


def op_rms_norm(args, tensors):
    x = need(tensors, "x")
    cls = rms_norm_class(args["cls"])
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"eps": float(args.get("eps", 1e-6))}
    if "with_scale" in params and args.get("with_scale") is not None:
        kwargs["with_scale"] = bool(args["with_scale"])
    module = cls(int(args.get("dim", x.shape[-1])), **kwargs).eval()
    weight = tensors.get("weight")
    if weight is not None:
        if getattr(module, "weight", None) is None:
            raise ValueError(f"{args['cls']} built with {kwargs} has no weight to copy into")
        module.weight.data.copy_(weight.to(module.weight.dtype))
    module.to(x.dtype)
    return {}, [("out", module(x))]


def op_mlp(args, tensors):
    from transformers.activations import ACT2FN
    dt = torch_dtype(args.get("dtype", "float32"))
    x, gate, up, down = (need(tensors, n).to(dt) for n in ("x", "gate_proj", "up_proj", "down_proj"))
    act = ACT2FN[args["hidden_act"]]
    linear = torch.nn.functional.linear
    return {}, [("out", linear(act(linear(x, gate)) * linear(x, up), down))]


def perturb_constant_parameters(model, seed):
    """HF initialises norm weights to 1 and biases to 0: an engine that ignores a norm's scale or a bias would pass
    every comparison on such a model. Each parameter whose elements are all equal gets seeded noise (N(0, 0.1) added),
    so a random tiny model exercises every parameter it has."""
    gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.numel() > 1 and p.is_floating_point() and bool((p == p.reshape(-1)[0]).all()):
                p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * 0.1)


def op_build_model(args, tensors):
    from safetensors import safe_open
    cfg = dict(args["config"])
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError("config has no model_type")
    for key in ("torch_dtype", "dtype", "_attn_implementation", "attn_implementation"):
        cfg.pop(key, None)
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    cls = model_class_named(args.get("model_class") or "AutoModelForCausalLM")
    dt = torch_dtype(args.get("dtype", "float32"))
    torch.manual_seed(int(args.get("seed", 0)))
    model = instantiate(cls, config)
    if args.get("perturb_constants", True):
        perturb_constant_parameters(model, int(args.get("seed", 0)))
    model = model.to(dt).eval()
    model.config.dtype = dt
    out_dir = args["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    _model_cache.clear()
    files = sorted(os.listdir(out_dir))
    params = []
    for name in files:
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(out_dir, name), framework="pt") as f:
                for key in f.keys():
                    t = f.get_slice(key)
                    params.append({"name": key, "shape": list(t.get_shape()),
                                   "dtype": wire_or_st_dtype(t.get_dtype())})
    params.sort(key=lambda p: p["name"])
    return {"params": params, "files": files, "model_class": type(model).__name__}, []


def wire_or_st_dtype(st):
    return {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "I64": "int64",
            "I32": "int32", "BOOL": "bool"}.get(st, st)


def oracle_source(args, model):
    """The model whose weights the float64 oracle upcasts: the reference's own, or with args["oracle_model_dir"] that
    checkpoint's (the same architecture). A lossy engine's reference carries the engine's rounded weights (a bf16 or
    quantized GGUF's, dequantized: `harness judge --gguf`) and its oracle the original's, so the reference's own error
    against the oracle is the quantization's own error, the yardstick of the engine's."""
    if not args.get("oracle") or not args.get("oracle_model_dir"):
        return model
    return load_model(args["oracle_model_dir"], args.get("dtype", "float32"), args.get("model_class"))


def op_forward(args, tensors):
    model = load_model(args["model_dir"], args.get("dtype", "float32"), args.get("model_class"))
    inputs = model_inputs(args, tensors, model)
    paths = list(args.get("capture", []))
    out, outs, captured = capture_run(model, paths, lambda m: m(**inputs, use_cache=False))
    outs.append(("logits", out.logits))
    outs += oracle_outputs(args, oracle_source(args, model), paths, lambda m, up: [("logits", m(**up(inputs), use_cache=False).logits)])
    return {"captured": captured}, outs


def op_generate(args, tensors):
    """Greedy decoding with a KV cache; top-k of log_softmax(float32 raw logits) per step.
    Exactly max_new_tokens steps (no EOS stop)."""
    model = load_model(args["model_dir"], args.get("dtype", "float32"), args.get("model_class"))
    inputs = model_inputs(args, tensors, model)
    first = next(iter(inputs.values()))
    if first.shape[0] != 1:
        raise ValueError(f"generate takes batch 1, got {first.shape[0]}")
    steps, k = int(args["max_new_tokens"]), int(args.get("top_k", 1))
    step_paths = list(args.get("capture_steps", []))        # modules captured at every decode step (StepCapture)
    outs = greedy_decode(model, inputs, steps, k, step_paths=step_paths, forced=tensors.get("forced_tokens"))
    if args.get("oracle"):
        outs += oracle_forced_logprobs(args, oracle_source(args, model), inputs, dict(outs)["tokens"], dict(outs)["topk_ids"], step_paths)
    return {"steps": steps}, outs


def oracle_forced_logprobs(args, model, inputs, tokens, topk_ids, step_paths=(), keep=None, twin=oracle_model, reset=None):
    """The float64 oracle teacher-forced on the reference's greedy tokens (its prompt forward, then each reference token
    fed with the KV cache, as greedy_decode feeds its own), in args["oracle_mode"] as oracle_outputs runs it: per step
    the float64 log_softmax at the reference's top-k ids. Returns [("oracle_topk_logprobs", [steps, k] float64)]: the
    yardstick of the token verdict (TokenComparison); with step_paths also each module's float64 output at every decode
    step, ("oracle.step<s>.<path>", [1, 1, ...]) for s = 1 .. steps-1 (StepCapture: the per-step module verdict's oracle,
    fed the same tokens as the reference's greedy run, so the reference's own step captures are its teacher-forced ones).
    Every model-specific generate op calls this one: `inputs` is the
    whole prompt (pixel values, audio features: the towers run in the oracle's prompt forward too); keep: {module path:
    dtype} subtrees kept at that dtype in stream mode (a tower HF cannot run in float64); twin: the whole-mode twin
    (model -> float64 model); reset(m): called before the prompt forward (state HF keeps on the module, e.g. Qwen2-VL's
    rope_deltas, which the forced steps then read as greedy_decode's do)."""
    steps = tokens.shape[0]
    k = topk_ids.shape[1] if topk_ids.dim() == 2 else 0

    def forced(m, hooked):
        rows = []
        if reset is not None:
            reset(m)
        capture = StepCapture(hooked, step_paths)
        try:
            with torch.no_grad():
                out = m(**upcast(inputs), use_cache=True)
                for step in range(steps):
                    logprobs = torch.log_softmax(out.logits[0, -1, :].to(torch.float64), dim=-1)
                    rows.append(logprobs[topk_ids[step]])
                    if step + 1 < steps:
                        capture.step = step + 1
                        out = m(input_ids=tokens[step].view(1, 1).to(out.logits.device), past_key_values=out.past_key_values, use_cache=True)
        finally:
            capture.close()
        if reset is not None:
            reset(m)
        stacked = torch.stack(rows) if rows else torch.empty(0, k, dtype=torch.float64)
        return stacked, [("oracle." + name, t.to(torch.float64)) for name, t in capture.results(steps)]

    mode = args.get("oracle_mode") or "stream"
    if mode == "whole":
        float64 = twin(model)
        result, captured = forced(float64, float64)
    elif mode == "stream":
        experts = [(m.config, m.config._experts_implementation) for m in model.modules()
                   if getattr(getattr(m, "config", None), "_experts_implementation", None) not in (None, "eager")]
        try:
            eager_experts(model)
            with Float64Stream(model, keep=keep) as view:
                result, captured = forced(view, model)
        finally:
            for config, impl in experts:
                config._experts_implementation = impl
    else:
        raise ValueError(f"oracle_mode must be 'stream' or 'whole', got {mode!r}")
    return [("oracle_topk_logprobs", result.to(torch.float64))] + captured


class StepCapture:
    """Forward hooks on named modules that keep each module's first output at every decode step: the caller sets `step`
    before each decode forward (1 = the forward after the prompt's; 0, the prompt's own forward, is not kept: the
    prefill captures are op_forward's). results(steps) names them "step<s>.<path>" ([1, 1, ...] rows, the module's
    output for the one fed token); a path that did not run at some decode step is an error naming both."""

    def __init__(self, model, paths):
        self.step, self.paths, self.outputs, self.handles = 0, list(paths), {}, []
        for path in self.paths:
            self.handles.append(model.get_submodule(path).register_forward_hook(self._hook(path)))

    def _hook(self, path):
        def hook(_module, _inputs, output):
            if self.step > 0 and (self.step, path) not in self.outputs:
                self.outputs[(self.step, path)] = module_output(output).detach().clone()
        return hook

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def results(self, steps):
        out = []
        for s in range(1, steps):
            for path in self.paths:
                if (s, path) not in self.outputs:
                    raise RuntimeError(f"module {path!r} was not called at decode step {s}")
                out.append((f"step{s}.{path}", self.outputs[(s, path)]))
        return out


def greedy_decode(model, inputs, steps, k, prompt_logits=False, step_paths=(), forced=None):
    """Greedy decoding with the KV cache from model(**inputs): exactly `steps` tokens (no EOS stop), each with the top-k
    of log_softmax(float32 raw logits). Returns [("tokens", [steps]), ("topk_ids", [steps, k]), ("topk_logprobs",
    [steps, k])], preceded by ("logits", the prompt's logits) when prompt_logits, followed by each of step_paths' outputs
    at every decode step ("step<s>.<path>", StepCapture) when given: greedy decoding is teacher forcing on its own tokens,
    so these are what an engine fed the same tokens must reproduce. With forced (int64 [n]) the loop is teacher-forced on
    those tokens instead of its own: decode step s is fed forced[s - 1] (another engine's tokens, from a dump: `harness
    judge --dump`), steps past them its own argmax, and "tokens" holds what was fed; the top-k stay the model's own.
    Every op that generates (plain and model-specific) decodes through this one loop."""
    if forced is not None:
        forced = forced.to(torch.int64).reshape(-1)
    tokens, ids, lps = [], [], []
    capture = StepCapture(model, step_paths)
    try:
        with torch.no_grad():
            out = model(**inputs, use_cache=True)
            first = [("logits", out.logits)] if prompt_logits else []
            for step in range(steps):
                logits = out.logits[0, -1, :].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                top = torch.topk(logprobs, min(k, logprobs.shape[-1]))
                tok = forced[step].to(logits.device) if forced is not None and step < forced.shape[0] else torch.argmax(logits)
                tokens.append(tok)
                ids.append(top.indices)
                lps.append(top.values)
                if step + 1 < steps:
                    capture.step = step + 1
                    out = model(input_ids=tok.view(1, 1), past_key_values=out.past_key_values, use_cache=True)
    finally:
        capture.close()
    if not steps:
        return first + [("tokens", torch.empty(0, dtype=torch.int64)), ("topk_ids", torch.empty(0, k, dtype=torch.int64)),
                        ("topk_logprobs", torch.empty(0, k))]
    return first + [("tokens", torch.stack(tokens).to(torch.int64)), ("topk_ids", torch.stack(ids).to(torch.int64)),
            ("topk_logprobs", torch.stack(lps).float())] + capture.results(steps)


def op_bench_matmul(args, tensors):
    m, n, k = int(args["m"]), int(args["n"]), int(args["k"])
    dt = torch_dtype(args.get("dtype", "float32"))
    repeats = max(1, int(args.get("repeats", 3)))
    before = torch.get_num_threads()
    if args.get("threads") is not None:
        set_threads(args["threads"])
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(m, k, generator=gen).to(dt)
        if args.get("transpose_b"):
            b = torch.randn(n, k, generator=gen).to(dt).t()  # a [N, K] weight seen as [K, N], as in F.linear
        else:
            b = torch.randn(k, n, generator=gen).to(dt)
        torch.matmul(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        threads = torch.get_num_threads()
    finally:
        if args.get("threads") is not None:
            set_threads(before)
    return {"seconds": best, "gflops": 2.0 * m * n * k / best / 1e9, "threads": threads}, []


def _walk(value, keys):
    for k in keys:
        if isinstance(value, list):
            i = int(k)
            if i >= len(value):
                raise KeyError(k)
            value = value[i]
        elif isinstance(value, dict):
            value = value[k]
        else:
            raise KeyError(k)
    return value


def op_config_defaults(args, tensors):
    """For each dotted path of a config dict, the value HF's config class takes when that key is ABSENT and every
    other field is as given: the library default, or the value it derives from other fields (head_dim from
    hidden_size / num_attention_heads). {"value": v} or {"absent": true} (HF has no such field then) or
    {"error": message} (HF cannot build the config without it)."""
    import copy
    cfg = dict(args["config"])
    out = {}
    for path in args["paths"]:
        c = copy.deepcopy(cfg)
        keys = path.split(".")
        try:
            parent = _walk(c, keys[:-1])
            if isinstance(parent, dict):
                parent.pop(keys[-1], None)
            model_type = c.pop("model_type")
            for key in ("torch_dtype", "dtype", "_attn_implementation", "attn_implementation", "transformers_version"):
                c.pop(key, None)
            d = transformers.AutoConfig.for_model(model_type, **c).to_dict()
            try:
                out[path] = {"value": _walk(d, keys)}
            except (KeyError, ValueError, IndexError):
                out[path] = {"absent": True}
        except Exception as e:  # noqa: BLE001 (any failure is an answer here)
            out[path] = {"error": f"{type(e).__name__}: {e}"}
    return {"defaults": out}, []


def op_tokenize(args, tensors):
    """A user's text through the checkpoint's own tokenizer (AutoTokenizer from model_dir): `input_ids` [T] int64. With
    chat: true, the text is one user message through the tokenizer's chat template with the generation prompt added
    (apply_chat_template), as a chat front end sends it."""
    model_dir, text = args["model_dir"], args["text"]
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    if args.get("chat"):
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"{model_dir}: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)")
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    else:
        ids = tok(text)
    if hasattr(ids, "keys"):                                  # BatchEncoding (transformers 5 returns one from both calls)
        ids = ids["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return {"tokenizer": type(tok).__name__, "chat": bool(args.get("chat"))}, [("input_ids", torch.tensor(ids, dtype=torch.int64))]


def op_memory_stats(args, tensors):
    """The worker's peak resident memory (VmHWM) and, where the reference uses a GPU, torch's peak allocated device
    memory, in bytes; args reset: true starts both peaks afresh (Linux clear_refs 5, torch.cuda.reset_peak_memory_stats)."""
    if args.get("reset"):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
    host = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                host = int(line.split()[1]) * 1024
    device = torch.cuda.max_memory_allocated() if torch.cuda.is_available() and torch.cuda.is_initialized() else 0
    return {"host_peak_bytes": host, "device_peak_bytes": device, "device": reference_device_name()}, []


def op_shutdown(args, tensors):
    STATE["exit_after_reply"] = 0
    return {}, []


OPS = {
    "hello": op_hello,
    "matmul": op_matmul,
    "activation": op_activation,
    "gelu": op_gelu,
    "silu": op_silu,
    "softmax": op_softmax,
    "log_softmax": op_log_softmax,
    "rms_norm": op_rms_norm,
    "mlp": op_mlp,
    "build_model": op_build_model,
    "forward": op_forward,
    "generate": op_generate,
    "bench_matmul": op_bench_matmul,
    "config_defaults": op_config_defaults,
    "memory_stats": op_memory_stats,
    "tokenize": op_tokenize,
    "shutdown": op_shutdown,
}

STATE = {"exit_after_reply": None}

# Model-specific ops (src/Reference/python/ext/*.py, in name order) are spliced in at the next line by the C# side
# (ReferenceWorker.ExtensionMarker); each file adds its ops with OPS["name"] = fn. Run directly, none are loaded.
# @@HARNESS_EXTENSIONS@@


# ---------------------------------------------------------------------------------------------
# Main loop
# ---------------------------------------------------------------------------------------------

def error_reply(req_id, exc_type, message, tb=""):
    return {"id": req_id, "ok": False, "error": {"type": exc_type, "message": message, "traceback": tb}}


def handle(header, payload):
    """One request -> (reply header, blobs). Never raises for request-level problems."""
    req_id = header.get("id")
    if not isinstance(req_id, int) or isinstance(req_id, bool):
        return error_reply(UNKNOWN_ID, "ValueError", f"request id must be an int, got {req_id!r}"), []
    try:
        op = header.get("op")
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; known: {sorted(OPS)}")
        args = header.get("args", {})
        if not isinstance(args, dict):
            raise ValueError("args must be a JSON object")
        tensors = decode_tensors(header.get("tensors", []), payload)
        with torch.no_grad():
            result, outs = OPS[op](args, tensors)
        descs, blobs = [], []
        for name, t in outs:
            d, blob = encode_tensor(name, t)
            descs.append(d)
            blobs.append(blob)
        return {"id": req_id, "ok": True, "result": result, "tensors": descs}, blobs
    except (Exception, SystemExit) as e:  # every op failure becomes a reply
        return error_reply(req_id, type(e).__name__, str(e), traceback.format_exc()), []


def serve(channel):
    while True:
        try:
            header, payload = channel.read_frame()
        except CleanEof:
            return 0
        except FramingError as e:
            sys.stderr.write(f"harness_worker: broken framing: {e}\n")
            sys.stderr.flush()
            return EXIT_FRAMING
        if header is None:
            reply, blobs = error_reply(UNKNOWN_ID, "ValueError", payload), []
        else:
            reply, blobs = handle(header, payload)
        channel.write_frame(reply, blobs)
        if STATE["exit_after_reply"] is not None:
            return STATE["exit_after_reply"]


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid):
    """SIGKILL this worker when the harness that started it dies, however it dies (issue 24: a killed CI run left its
    worker behind, stopped, as init's child: the worker ends on stdin's EOF, which a stopped process never reads, and
    SIGKILL ends a stopped process too). Set here, in the process the harness started (every step of the reference-python
    wrapper execs: unshare, chroot --userspec, env), after the wrapper's credential change: setuid/setgid clear
    PR_SET_PDEATHSIG. The harness passes its pid (argv after the bootstrap): if it died before this line, the signal
    will never come, and the worker exits now. Without a pid (a worker started by hand, selftest.py) only the signal."""
    import ctypes
    import signal
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG, SIGKILL) failed: {os.strerror(err)}")
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.stderr.write(f"harness_worker: the harness (pid {parent_pid}) is gone (parent now {os.getppid()}): exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_ORPHANED)


def parent_pid_from_argv(argv):
    """The harness's pid, passed as the one argument after the bootstrap (`python -u -c BOOTSTRAP PID`); None when absent."""
    if len(argv) >= 2 and argv[1].isdigit():
        return int(argv[1])
    return None


def main():
    global torch, transformers, WIRE, IMPORT_SECONDS, CHANNEL, REFERENCE_DEVICE
    die_with_parent(parent_pid_from_argv(sys.argv))
    frame_fd = take_frame_fd()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    t0 = time.perf_counter()
    import torch
    import transformers
    import safetensors.torch  # noqa: F401  (the rest: so that the first op is not slowed by imports)
    import transformers.activations  # noqa: F401
    import transformers.modeling_utils  # noqa: F401
    transformers.AutoModelForCausalLM, transformers.AutoConfig
    IMPORT_SECONDS = time.perf_counter() - t0
    transformers.logging.set_verbosity_error()
    if REFERENCE_DEVICE != "cpu" and not torch.cuda.is_available():
        # `compare --device cuda` asks for the GPU; an interpreter without one (a CPU-only torch) keeps the reference on
        # the host, and `hello`/`memory_stats` say so
        sys.stderr.write(f"harness_worker: HARNESS_REFERENCE_DEVICE={REFERENCE_DEVICE} but torch sees no GPU: the reference runs on the cpu\n")
        REFERENCE_DEVICE = "cpu"
    if REFERENCE_DEVICE.startswith("cuda"):
        # a float32 reference computes in float32 on the GPU too: no TF32 in matmuls (torch's default) nor in cuDNN
        # convolutions (Gemma4's audio tower; cuDNN allows TF32 by default)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    WIRE = wire_dtypes(torch)
    sys.stderr.write(f"harness_worker: pid {os.getpid()}, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}, imports {IMPORT_SECONDS:.2f}s\n")
    sys.stderr.flush()
    CHANNEL = Channel(sys.stdin.buffer, frame_fd)
    code = serve(CHANNEL)
    sys.stderr.flush()
    os._exit(code)


if __name__ in ("__main__", "__harness_worker__"):
    main()
