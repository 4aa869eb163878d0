# Gemma4's audio and vision towers (HF 5.12.1 Gemma4ForConditionalGeneration), for the engine's Gemma4AudioModel and
# Gemma4VisionModel. Spliced into harness_worker.py before main(): torch, transformers, need(), capture_run(),
# oracle_outputs(), torch_dtype(), dtype_name(), OPS are its globals.
#
# Reference consistency (issue 10, item 6): HF's audio tower is wrong under attn_implementation="eager" in 5.12.1
# (create_bidirectional_mask returns an additive float mask for eager, which Gemma4AudioAttention uses as a boolean one:
# transformers issue 48818). The tower ops therefore run under "sdpa" (the implementation whose semantics the engine
# documents) and `gemma4_towers_consistency` runs each tower (and a text-only prompt) under both, naming the first module
# where they disagree beyond tolerance.

_G4T_MODELS = {}


def _g4t_load(model_dir, dtype_name_, attn):
    """Gemma4ForConditionalGeneration from a folder under one attention implementation, cached per (dir, dtype, attn)."""
    key = (os.path.realpath(model_dir), dtype_name_, attn)
    sig = dir_signature(model_dir)
    hit = _G4T_MODELS.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    if len(_G4T_MODELS) > 4:
        _G4T_MODELS.clear()
    model = transformers.Gemma4ForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch_dtype(dtype_name_), attn_implementation=attn)
    model.to(REFERENCE_DEVICE)                              # the GPU under `harness run --device cuda`
    model.eval()
    _G4T_MODELS[key] = (sig, model)
    return model


def _g4t_perturb(model, seed):
    """Moves the towers' parameters and buffers off their init values, so a port that reads a default (a ones norm, a
    zero per_dim_scale, an infinite clip bound, a ones position table) cannot pass by accident. Linear and conv weights
    get std 1/sqrt(fan_in) so activations are O(1) and the clips, softcap and gradient clipping actually bite."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    rn = lambda t, s=1.0: torch.randn(t.shape, generator=g) * s
    clip = {"input_min": -1.75, "input_max": 2.0, "output_min": -2.25, "output_max": 1.5}
    with torch.no_grad():
        for tower in (model.model.audio_tower, model.model.vision_tower):
            for name, t in list(tower.named_parameters()) + list(tower.named_buffers()):
                leaf = name.rsplit(".", 1)[-1]
                if leaf in clip:
                    t.fill_(clip[leaf])
                elif leaf == "per_dim_scale":
                    t.copy_(rn(t, 0.5))
                elif leaf == "position_embedding_table":
                    t.copy_(rn(t, 0.5))
                elif leaf == "std_bias":
                    t.copy_(rn(t, 0.2))
                elif leaf == "std_scale":
                    t.copy_(1.0 + rn(t, 0.2))
                elif leaf == "bias":
                    t.copy_(rn(t, 0.1))
                elif leaf == "weight" and t.dim() == 1:
                    t.copy_(1.0 + rn(t, 0.2))
                elif leaf == "weight":
                    fan_in = t[0].numel()
                    t.copy_(rn(t, fan_in ** -0.5))


def _g4t_floats(cls, d):
    """JSON from C# writes 7.0 as 7; HF's strict config dataclasses reject an int for a float field: cast those back."""
    import dataclasses
    d = dict(d)
    for f in dataclasses.fields(cls):
        t = str(f.type)
        if f.name in d and type(d[f.name]) is int and "float" in t and "int" not in t:
            d[f.name] = float(d[f.name])
    return d


def op_gemma4_towers_build(args, tensors):
    """A tiny Gemma4ForConditionalGeneration from a config dict, towers perturbed off their init, saved in dtype."""
    from safetensors import safe_open
    cfg = dict(args["config"])
    cfg.pop("model_type", None)
    for key, cls in (("text_config", transformers.Gemma4TextConfig), ("vision_config", transformers.Gemma4VisionConfig),
                     ("audio_config", transformers.Gemma4AudioConfig)):
        if isinstance(cfg.get(key), dict):
            cfg[key] = _g4t_floats(cls, cfg[key])
    config = transformers.Gemma4Config(**cfg)
    torch.manual_seed(int(args.get("seed", 0)))
    model = transformers.Gemma4ForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    _g4t_perturb(model, args.get("seed", 0))
    dt = torch_dtype(args.get("dtype", "float32"))
    model = model.to(dt).eval()
    model.config.dtype = dt
    out_dir = args["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    _G4T_MODELS.clear()
    params = []
    for name in sorted(os.listdir(out_dir)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(out_dir, name), framework="pt") as f:
                for key in f.keys():
                    s = f.get_slice(key)
                    params.append({"name": key, "shape": list(s.get_shape()), "dtype": wire_or_st_dtype(s.get_dtype())})
    return {"params": params, "files": sorted(os.listdir(out_dir)),
            "parameters": sum(p.numel() for p in model.parameters())}, []


def _g4t_audio_call(tensors):
    feats = need(tensors, "input_features")
    mask = need(tensors, "input_features_mask").to(torch.bool)

    def call(m, up=lambda v: v):
        out = m.model.audio_tower(up(feats.to(m.dtype).to(m.device)), up(mask.to(m.device)))
        return [("audio_tower.last_hidden_state", out.last_hidden_state),
                ("audio_tower.attention_mask", out.attention_mask.to(torch.int64))]
    return call


def _g4t_vision_call(tensors):
    pixels = need(tensors, "pixel_values")
    pos = need(tensors, "pixel_position_ids").to(torch.int64)

    def call(m, up=lambda v: v):
        out = m.model.vision_tower(up(pixels.to(m.dtype).to(m.device)), pos.to(m.device))
        return [("vision_tower.last_hidden_state", out.last_hidden_state)]
    return call


def _g4t_run(args, tensors, call):
    attn = args.get("attn_implementation", "sdpa")
    model = _g4t_load(args["model_dir"], args.get("dtype", "float32"), attn)
    paths = list(args.get("capture", []))
    extra, outs, captured = capture_run(model, paths, call)
    outs = outs + list(extra)
    result = {"captured": captured, "attn_implementation": attn}
    try:
        outs += oracle_outputs(args, model, paths, lambda m, up: call(m, up))
    except (RuntimeError, ValueError) as e:
        # HF's audio attention casts q/k/v with .float() and then multiplies by float64 parameters, so its float64 twin
        # dies on a dtype mismatch ("expected m1 and m2 to have the same dtype"): no oracle there, said so in the result.
        # (A worker whose wire cannot carry float64 yet fails here too, with a ValueError naming it.)
        result["oracle_unavailable"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return result, outs


def op_gemma4_audio_tower(args, tensors):
    return _g4t_run(args, tensors, _g4t_audio_call(tensors))


def op_gemma4_vision_tower(args, tensors):
    return _g4t_run(args, tensors, _g4t_vision_call(tensors))


def _g4t_compare(paths, a, b, max_rel_l2):
    """The first path (in forward order) whose two outputs differ by a relative L2 error ||a-b|| / ||b|| above max_rel_l2,
    and the overall max |a-b|."""
    first, worst = None, 0.0
    for name in paths:
        x, y = a[name].double(), b[name].double()
        if x.shape != y.shape:
            first = first or {"module": name, "max_abs": float("inf"), "rel_l2": float("inf"), "shapes": [list(x.shape), list(y.shape)]}
            continue
        diff = (x - y).abs()
        m = float(diff.max()) if diff.numel() else 0.0
        rel = float(diff.norm() / y.norm().clamp_min(1e-30)) if diff.numel() else 0.0
        worst = max(worst, m)
        if first is None and rel > max_rel_l2:
            first = {"module": name, "max_abs": m, "rel_l2": rel}
    return first, worst


def op_gemma4_towers_consistency(args, tensors):
    """Runs the audio tower, the vision tower and a text-only prompt under attn_implementation eager and sdpa (same
    weights, same inputs); for each, the max |eager - sdpa| and the first module whose outputs disagree by a relative L2
    error above max_rel_l2 (null when they agree). float32: 1e-4 by default (reordering noise is ~1e-6); bfloat16 needs
    a norm-wise bound of rounding noise (eager rounds scores and probabilities to bf16, sdpa does not), e.g. 3e-2."""
    max_rel_l2 = float(args.get("max_rel_l2", 1e-4))
    report = {}
    parts = []
    if "input_features" in tensors:
        parts.append(("audio_tower", list(args.get("audio_capture", [])), _g4t_audio_call(tensors)))
    if "pixel_values" in tensors:
        parts.append(("vision_tower", list(args.get("vision_capture", [])), _g4t_vision_call(tensors)))
    if "input_ids" in tensors:
        ids = need(tensors, "input_ids").to(torch.int64)
        parts.append(("text_only", [], lambda m, up=None: [("logits", m(input_ids=ids.to(m.device), use_cache=False).logits)]))
    for part, paths, call in parts:
        runs = {}
        for attn in ("eager", "sdpa"):
            model = _g4t_load(args["model_dir"], args.get("dtype", "float32"), attn)
            extra, outs, _ = capture_run(model, paths, call)
            runs[attn] = dict(outs + list(extra))
        names = paths + [n for n in runs["sdpa"] if n not in paths]
        first, worst = _g4t_compare(names, runs["eager"], runs["sdpa"], max_rel_l2)
        report[part] = {"max_abs": worst, "first_divergent": first, "agree": first is None}
    return {"consistency": report, "max_rel_l2": max_rel_l2}, []


OPS["gemma4_towers_build"] = op_gemma4_towers_build
OPS["gemma4_audio_tower"] = op_gemma4_audio_tower
OPS["gemma4_vision_tower"] = op_gemma4_vision_tower
OPS["gemma4_towers_consistency"] = op_gemma4_towers_consistency
