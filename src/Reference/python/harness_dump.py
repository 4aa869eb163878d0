"""harness_dump: records every named module's output of a PyTorch model, per rank and step, for `harness judge --dump`.

Drop-in, one file, needs only torch and safetensors. The format is docs/dump-format.md: each rank writes
rank-<R>.safetensors (the tensors) and rank-<R>.json (the index: module, step, call, shape, dtype, placement). Outputs
are cloned at capture (in-place kernels mutate a module's output after its hook: nnsight#630).

    import harness_dump
    dump = harness_dump.Dump(model, "dump-dir", rank=rank, world_size=world,
                             placements=harness_dump.placements_from_tp_plan(model))
    with dump.step(0, input_ids=ids):
        model(ids)
    dump.close()

or, for every decode step of a generation (each forward of the model is one step: 0 the prompt's, then 1, 2, ...; the
tokens each step was fed are saved with it, and the judge feeds the reference the same ones):

    with dump.generation():
        model.generate(ids, max_new_tokens=4, do_sample=False)
    dump.close()

Placement of a module's output, per module (glob patterns allowed, the first match wins):
  "replicate"            every rank holds the whole tensor (the default);
  "shard:<dim>"          rank r holds chunk r of <dim> (equal chunks, as TP layers cut them);
  "partial"              every rank holds a partial sum: the whole tensor is the sum over ranks;
  or dimension annotations in SGLang's style, one name per dimension: "b t h(tp)" (h sharded over the TP ranks),
  "b t h(tp,partial)" (partial sums). A DTensor output brings its own placements (Shard, Replicate, Partial).
"""

import fnmatch
import json
import os
import re

import torch
from safetensors.torch import save_file

FORMAT = "harness-dump/1"


def placements_from_tp_plan(model):
    """Placements implied by a transformers tp_plan ({"layers.*.self_attn.q_proj": "colwise", ...}): a colwise layer's
    output is sharded on its last dimension, the rest is whole (rowwise layers all-reduce). Patterns are made to match
    the full module names (the base model's plan is relative to model.model)."""
    plan = dict(getattr(model, "tp_plan", None) or getattr(model, "_tp_plan", None) or {})
    out = {}
    for pattern, style in plan.items():
        if style in ("colwise", "packed_colwise"):
            full = "*" + pattern if not pattern.startswith("*") else pattern
            out[full] = "shard:-1"
            if full.endswith(".gate_proj"):                  # the gated MLP's activation sees the gate's local shard
                out[full[: -len("gate_proj")] + "act_fn"] = "shard:-1"
    return out


def parse_placement(spec, ndim):
    """"replicate" | "shard:<dim>" | "partial" | annotations "b t h(tp)" -> {"kind": ..., "dim": ...}."""
    spec = spec.strip()
    if spec in ("replicate", "partial"):
        return {"kind": spec}
    m = re.fullmatch(r"shard:(-?\d+)", spec)
    if m:
        return {"kind": "shard", "dim": int(m.group(1))}
    names = re.findall(r"\w+(?:\([^)]*\))?", spec)
    if len(names) != ndim:
        raise ValueError(f"annotation {spec!r} names {len(names)} dimensions, the output has {ndim}")
    kind, dim = "replicate", None
    for i, name in enumerate(names):
        flags = re.search(r"\(([^)]*)\)", name)
        if not flags:
            continue
        parts = [p.strip() for p in flags.group(1).split(",")]
        if "partial" in parts:
            kind = "partial"
        elif "tp" in parts:
            kind, dim = "shard", i
    return {"kind": kind, "dim": dim} if dim is not None else {"kind": kind}


def _leading_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


class Dump:
    """Forward hooks on every named module (or those matching `modules`) of `model`."""

    def __init__(self, model, out_dir, rank=0, world_size=1, placements=None, modules=None):
        self.out_dir, self.rank, self.world_size = out_dir, int(rank), int(world_size)
        self.placements = dict(placements or {})
        self.tensors, self.entries, self.errors = {}, [], []
        self.inputs = {}
        self._step, self._calls, self._stack = None, {}, []
        self._handles = []
        self._model = model
        for name, module in model.named_modules():
            if not name or (modules is not None and not any(fnmatch.fnmatchcase(name, p) for p in modules)):
                continue
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._record(name)))
        os.makedirs(out_dir, exist_ok=True)

    def _placement(self, name, value):
        if hasattr(value, "placements") and hasattr(value, "to_local"):       # a DTensor
            p = value.placements[0]
            local = value.to_local()
            if p.is_shard():
                return local, {"kind": "shard", "dim": p.dim, "source": "dtensor"}
            if p.is_partial():
                return local, {"kind": "partial", "source": "dtensor"}
            return local, {"kind": "replicate", "source": "dtensor"}
        for pattern, spec in self.placements.items():
            if fnmatch.fnmatchcase(name, pattern):
                return value, dict(parse_placement(spec, value.dim()), source=spec)
        return value, {"kind": "replicate", "source": "default"}

    def _enter(self, name):
        def hook(_module, _args):
            if self._step is not None:
                self._stack.append(name)
        return hook

    def _record(self, name):
        def hook(_module, _args, output):
            if self._step is None:
                return
            if self._stack and self._stack[-1] == name:
                self._stack.pop()
            value = _leading_tensor(output)
            if value is None or not value.is_floating_point():
                return
            local, placement = self._placement(name, value)
            call = self._calls.get((name, self._step), 0)
            self._calls[(name, self._step)] = call + 1
            key = f"{name}/step{self._step}/call{call}"
            self.tensors[key] = local.detach().to("cpu", copy=True).contiguous()   # cloned now: later in-place ops
            self.entries.append({"module": name, "step": self._step, "call": call, "tensor": key,
                                 "shape": list(local.shape), "dtype": str(local.dtype).replace("torch.", ""),
                                 "placement": placement})
        return hook

    def step(self, index, **inputs):
        """The forward passes inside belong to step `index`; keyword tensors (e.g. input_ids) are saved as inputs. An
        exception inside is recorded with the innermost module that had started and not finished, then re-raised."""
        dump = self

        class _Step:
            def __enter__(self):
                dump._step, dump._stack = int(index), []
                for k, v in inputs.items():
                    dump._save_input(index, k, v)
                return dump

            def __exit__(self, kind, exc, _tb):
                dump._leave(kind, exc)
                return False

        return _Step()

    def _leave(self, kind, exc):
        """End of a step or generation block: an exception is recorded with its step and the innermost module that had
        started and not finished (then the dump is written; the caller re-raises)."""
        if exc is not None:
            self.errors.append({"step": self._step, "module": self._stack[-1] if self._stack else None,
                                "type": kind.__name__, "message": str(exc).splitlines()[0] if str(exc) else ""})
            self.close()
        self._step = None

    def _save_input(self, step, name, value):
        key = f"input/{name}/step{step}"
        self.tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        self.inputs.setdefault(str(step), {})[name] = key

    def generation(self):
        """Every forward of the model inside is one step, numbered in call order: 0 the prompt's forward, then 1, 2, ...
        (model.generate()'s decode steps, one forward each). Each step's inputs are saved as the model got them: the
        prompt's input_ids (or inputs_embeds) at step 0, at each decode step the token ids it was fed ([1, 1]): the
        judge runs the reference teacher-forced on them. An exception inside is recorded with its step and the innermost
        module that had started and not finished, then re-raised."""
        dump = self

        def pre(_module, args, kwargs):
            step = dump._next_step
            dump._next_step += 1
            dump._step, dump._stack = step, []
            embeds = kwargs.get("inputs_embeds")
            ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
            if embeds is not None:
                dump._save_input(step, "inputs_embeds", embeds)
            elif ids is not None:
                dump._save_input(step, "input_ids", ids)

        def post(_module, _args, _output):
            dump._step = None

        class _Generation:
            def __enter__(self):
                dump._next_step = 0
                self.handles = [dump._model.register_forward_pre_hook(pre, with_kwargs=True),
                                dump._model.register_forward_hook(post)]
                return dump

            def __exit__(self, kind, exc, _tb):
                for h in self.handles:
                    h.remove()
                dump._leave(kind, exc)
                return False

        return _Generation()

    def close(self):
        """Writes rank-<R>.safetensors and rank-<R>.json (the JSON last: a reader takes a rank whose JSON exists)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        base = os.path.join(self.out_dir, f"rank-{self.rank}")
        save_file(self.tensors, base + ".safetensors.tmp")
        os.replace(base + ".safetensors.tmp", base + ".safetensors")
        index = {"format": FORMAT, "rank": self.rank, "world_size": self.world_size,
                 "tensors_file": os.path.basename(base) + ".safetensors", "inputs": self.inputs,
                 "entries": self.entries, "errors": self.errors}
        with open(base + ".json.tmp", "w") as f:
            json.dump(index, f, indent=1)
        os.replace(base + ".json.tmp", base + ".json")
