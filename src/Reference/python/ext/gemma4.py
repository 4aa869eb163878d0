# Gemma4's text decoder (Gemma4ForCausalLM, Gemma4TextModel) for the harness: build tiny models with every
# ones-initialised scale perturbed, capture modules, the float64 oracle, and the MoE block alone on many seeds.
# Spliced into harness_worker.py before main(): torch, transformers, need(), load_model(), capture_run(),
# oracle_outputs(), upcast(), torch_dtype(), OPS are globals there.


def _gemma4_perturb(model, seed, std, router_scale):
    """HF initialises every norm weight, router scale, per-expert scale and layer_scalar to 1 (biases to 0): a port
    that reads none of them would pass. Move each to 1 + std * N(0, 1) (biases to std * N(0, 1), layer_scalar to U(0.5, 1.5)), seeded. The router's projection is multiplied by
    router_scale: at init its logits are ~0.1 apart, so the top-2 choice of a token would hang on the last bit of a
    bf16 probability; a trained router is decisive, and so is this one."""
    gen = torch.Generator().manual_seed(int(seed) + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("norm.weight") or name.endswith("layernorm.weight") or "layernorm_" in name \
                    or leaf in ("scale", "per_expert_scale"):
                p.copy_(1.0 + std * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(std * torch.randn(p.shape, generator=gen))
            if name.endswith("router.proj.weight"):
                p.mul_(router_scale)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def op_gemma4_build(args, tensors):
    """build_model plus the perturbation of the ones-initialised scales (args: perturb_std, default 0.25;
    router_scale, default 8)."""
    cfg = dict(args["config"])
    model_type = cfg.pop("model_type")
    for key in ("torch_dtype", "dtype", "_attn_implementation", "attn_implementation"):
        cfg.pop(key, None)
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    cls = model_class_named(args.get("model_class") or "Gemma4ForCausalLM")
    torch.manual_seed(int(args.get("seed", 0)))
    model = instantiate(cls, config).eval()
    _gemma4_perturb(model, args.get("seed", 0), float(args.get("perturb_std", 0.25)), float(args.get("router_scale", 8.0)))
    dt = torch_dtype(args.get("dtype", "float32"))
    model = model.to(dt)
    model.config.dtype = dt
    out_dir = args["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    _model_cache.clear()
    return {"files": sorted(os.listdir(out_dir)), "model_class": type(model).__name__,
            "params": sum(p.numel() for p in model.parameters())}, []


def op_gemma4_forward(args, tensors):
    """Prefill of input_ids [B, T] with hooks on `capture`; returns each module's output and `logits` (plus the
    float64 oracle's when args["oracle"])."""
    model = load_model(args["model_dir"], args.get("dtype", "float32"), args.get("model_class"))
    ids = need(tensors, "input_ids").to(torch.int64).to(model.device)
    paths = list(args.get("capture", []))
    result, outs, captured = capture_run(model, paths, lambda m: m(input_ids=ids, use_cache=False).logits)
    outs.append(("logits", result))
    outs += oracle_outputs(args, model, paths, lambda m, up: [("logits", m(input_ids=ids, use_cache=False).logits)])
    return {"captured": captured}, outs


def op_gemma4_moe_block(args, tensors):
    """The MoE half of decoder layer `layer` on its own, for many inputs at once: for each x_s in `x` [S, T, D]
    (the residual that enters the feed-forward block), router(x_s) -> (weights, index), then
    experts(pre_feedforward_layernorm_2(x_s), index, weights). Returns `out` [S, T, D] in the model dtype and the
    router's `router_probabilities` [S, T, E], `top_k_weights` [S, T, k], `top_k_index` [S, T, k] (int64)."""
    model = load_model(args["model_dir"], args.get("dtype", "float32"), args.get("model_class"))
    layer = model.get_submodule(args.get("layers_path", "model.layers"))[int(args["layer"])]
    x = need(tensors, "x").to(model.dtype).to(model.device)
    outs, probs, weights, index = [], [], [], []
    for s in range(x.shape[0]):
        p, w, idx = layer.router(x[s])
        outs.append(layer.experts(layer.pre_feedforward_layernorm_2(x[s]), idx, w))
        probs.append(p)
        weights.append(w)
        index.append(idx)
    return {}, [("out", torch.stack(outs)), ("router_probabilities", torch.stack(probs)),
                ("top_k_weights", torch.stack(weights)), ("top_k_index", torch.stack(index).to(torch.int64))]


OPS["gemma4_build"] = op_gemma4_build
OPS["gemma4_forward"] = op_gemma4_forward
OPS["gemma4_moe_block"] = op_gemma4_moe_block


def op_gemma4_topk(args, tensors):
    """torch.topk(x, k, dim=-1) (largest, sorted): `values`, `indices` (int64); the router's op, ties included."""
    values, indices = torch.topk(need(tensors, "x"), int(args["k"]), dim=-1)
    return {}, [("values", values), ("indices", indices.to(torch.int64))]


OPS["gemma4_topk"] = op_gemma4_topk


# Multimodal (Gemma4ForConditionalGeneration): the decoder in eager attention like the text ops, the audio tower in sdpa.
# HF 5.12.1's Gemma4AudioAttention treats the eager (additive float) mask as a boolean one (transformers issue 48818):
# under eager its outputs are wrong; sdpa gets the boolean mask it expects.
GEMMA4_MM_ATTN = {"text_config": "eager", "vision_config": "eager", "audio_config": "sdpa"}


def _gemma4_mm_attn(args):
    """GEMMA4_MM_ATTN, with args["vision_attn"] for the vision tower where given: compare runs the engine's own vision
    tower, which follows sdpa's semantics (float32 scores and softmax), so its reference tower runs under sdpa."""
    attn = dict(GEMMA4_MM_ATTN)
    if args.get("vision_attn"):
        attn["vision_config"] = args["vision_attn"]
    return attn


def _gemma4_mm_model(model_dir, dtype_name_, attn=None):
    attn = dict(attn or GEMMA4_MM_ATTN)
    key = ("gemma4-mm", os.path.realpath(model_dir), dtype_name_, tuple(sorted(attn.items())))
    sig = dir_signature(model_dir)
    hit = _model_cache.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    _model_cache.clear()
    model = transformers.Gemma4ForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch_dtype(dtype_name_), attn_implementation=attn, **placement()).eval()
    _model_cache[key] = (sig, model)
    return model


def _gemma4_mm_inputs(tensors, dtype):
    inputs = {"input_ids": need(tensors, "input_ids").to(torch.int64)}
    if "pixel_values" in tensors:
        inputs["pixel_values"] = tensors["pixel_values"].to(dtype)
        inputs["image_position_ids"] = need(tensors, "image_position_ids").to(torch.int64)
    if "pixel_values_videos" in tensors:          # [1, frames, patches, 3p^2]: the vision tower runs on frames.flatten(0, 1)
        inputs["pixel_values_videos"] = tensors["pixel_values_videos"].to(dtype)
        inputs["video_position_ids"] = need(tensors, "video_position_ids").to(torch.int64)
    if "mm_token_type_ids" in tensors:
        inputs["mm_token_type_ids"] = tensors["mm_token_type_ids"].to(torch.int64)
    if "input_features" in tensors:
        inputs["input_features"] = tensors["input_features"].to(dtype)
        inputs["input_features_mask"] = need(tensors, "input_features_mask").to(torch.bool)
    return inputs


def _gemma4_mm_oracle_twin(model):
    """The float64 twin for the oracle, with HF's audio tower kept in float32: in 5.12.1 it does not run in float64
    (a float32 tensor meets the float64 queries in Gemma4AudioAttention: "expected m1 and m2 to have the same dtype").
    Its input is cast down and its output up, so everything else runs in float64."""
    twin = oracle_model(model)
    tower = getattr(twin.model, "audio_tower", None)
    if tower is not None and not getattr(tower, "_harness_float32", False):
        tower.float()

        def down(_m, a, kw):
            return tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x for x in a), \
                {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in kw.items()}

        def up(_m, _a, out):
            out.last_hidden_state = out.last_hidden_state.to(torch.float64)
            return out

        tower.register_forward_pre_hook(down, with_kwargs=True)
        tower.register_forward_hook(up)
        tower._harness_float32 = True
    return twin


def _gemma4_vision_blocks(mm_token_type_ids):
    """get_block_sequence_ids_for_mask's blocks: each contiguous run of non-text tokens is one block (0, 1, ...), text -1."""
    t = mm_token_type_ids[0].tolist()
    blocks, nxt = [], -1
    for i, v in enumerate(t):
        if v != 0 and (i == 0 or t[i - 1] == 0):
            nxt += 1
        blocks.append(nxt if v != 0 else -1)
    return torch.tensor(blocks)


def _gemma4_vision_mask_rule(model, masks, mm_token_type_ids):
    """Which rule HF's Gemma4 masks for vision blocks follow, read off the masks it handed its decoder layers (one per
    layer type), not guessed from its version. The rules are the engine's Gemma4VisionMask:
      gemma4-sliding-layers-only  full: j <= i;            sliding: (j > i - W) and (j <= i or same block)
      gemma3-all-layers           full: j <= i or block;   sliding: (j <= i and j > i - W) or same block
    None when the config asks for no bidirectional vision attention or the prompt has no vision block (both rules are
    the causal masks then)."""
    if model.config.get_text_config().use_bidirectional_attention != "vision":
        return None
    if mm_token_type_ids is None or not bool((mm_token_type_ids != 0).any()):
        return None
    b = _gemma4_vision_blocks(mm_token_type_ids)
    n = b.numel()
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    w = model.config.get_text_config().sliding_window
    causal, window = k <= q, k > q - w
    block = (b[:, None] == b[None, :]) & (b[:, None] >= 0)
    rules = {
        "gemma4-sliding-layers-only": {"full_attention": causal, "sliding_attention": window & (causal | block)},
        "gemma3-all-layers": {"full_attention": causal | block, "sliding_attention": (causal & window) | block},
    }
    seen = {}
    for kind, m in masks.items():
        m = m[0, 0, -n:, -n:].cpu()
        seen[kind] = m if m.dtype == torch.bool else (m == 0)      # additive float masks: 0 where visible
    for name, rule in rules.items():
        if all(torch.equal(v, rule[kind]) for kind, v in seen.items()):
            return name
    raise RuntimeError("HF's Gemma4 vision-block masks follow no known rule (layer types seen: "
                       + ", ".join(sorted(seen)) + "); the engine knows " + ", ".join(rules))


def _gemma4_mask_hooks(model):
    """Pre-hooks that keep the attention_mask each layer type's first decoder layer receives."""
    masks, handles, types = {}, [], model.config.get_text_config().layer_types
    for i, layer in enumerate(model.model.language_model.layers):
        kind = types[i]
        if any(types[j] == kind for j in range(i)):
            continue

        def keep(_m, _a, kw, kind=kind):
            m = kw.get("attention_mask")
            if torch.is_tensor(m) and kind not in masks:
                masks[kind] = m.detach()
        handles.append(layer.register_forward_pre_hook(keep, with_kwargs=True))
    return masks, handles


def op_gemma4_mm_forward(args, tensors):
    """Gemma4ForConditionalGeneration prefill with image (pixel_values [1, N, 3p^2], image_position_ids [1, N, 2], optional
    mm_token_type_ids [1, T]: 1 at image tokens, for use_bidirectional_attention="vision") and/or
    audio (input_features [1, F, mel], input_features_mask [1, F]) beside input_ids [1, T]; hooks on `capture`.
    Returns the captures, `logits`, and `audio_tower.mask` [1, frames] (int64, 1 = valid frame) when audio is given;
    `vision_mask` in the result names the rule HF's masks for vision blocks followed (None without vision blocks)."""
    model = _gemma4_mm_model(args["model_dir"], args.get("dtype", "float32"), _gemma4_mm_attn(args))
    inputs = {name: t.to(model.device) for name, t in _gemma4_mm_inputs(tensors, model.dtype).items()}
    paths = list(args.get("capture", []))
    masks, handles = _gemma4_mask_hooks(model)
    try:
        result, outs, captured = capture_run(model, paths, lambda m: m(**inputs, use_cache=False).logits)
    finally:
        for h in handles:
            h.remove()
    outs.append(("logits", result))
    rule = _gemma4_vision_mask_rule(model, masks, inputs.get("mm_token_type_ids"))
    if "input_features" in inputs:
        with torch.no_grad():
            mask = model.model.audio_tower(inputs["input_features"], inputs["input_features_mask"], return_dict=True).attention_mask
        outs.append(("audio_tower.mask", mask.to(torch.int64)))
    if args.get("oracle") and args.get("oracle_mode") == "whole":
        _gemma4_mm_oracle_twin(model)                      # prepares the cached twin that oracle_outputs uses
    keep = {"model.audio_tower": torch.float32} if getattr(model.model, "audio_tower", None) is not None else None
    oracle = oracle_outputs(args, model, paths, lambda m, up: [("logits", m(**up(inputs), use_cache=False).logits)], keep=keep)
    # the audio tower and its modules ran in float32 in the oracle too: no oracle for them (their fixed policy judges
    # them; the float64 modules after the tower start from its float32 output)
    outs += [(n, t) for n, t in oracle if n != "oracle.model.audio_tower" and not n.startswith("oracle.model.audio_tower.")]
    return {"captured": captured, "attn_implementation": _gemma4_mm_attn(args), "vision_mask": rule,
            "oracle_note": "audio tower in float32 (HF's does not run in float64)" if args.get("oracle") else ""}, outs


def op_gemma4_mm_generate(args, tensors):
    """Greedy decoding after a multimodal prompt (inputs as gemma4_mm_forward), KV cache, top-k of log_softmax(float32
    logits) per step: tensors `tokens`, `topk_ids`, `topk_logprobs` as the generate op."""
    model = _gemma4_mm_model(args["model_dir"], args.get("dtype", "float32"), _gemma4_mm_attn(args))
    inputs = {name: t.to(model.device) for name, t in _gemma4_mm_inputs(tensors, model.dtype).items()}
    steps, k = int(args["max_new_tokens"]), int(args.get("top_k", 1))
    step_paths = list(args.get("capture_steps", []))        # the decoder's modules at every decode step (StepCapture)
    outs = greedy_decode(model, inputs, steps, k, step_paths=step_paths, forced=tensors.get("forced_tokens"))
    if args.get("oracle") and steps:
        # the float64 model teacher-forced on the same tokens after the same prompt: the towers run in its prompt forward
        # (the audio tower kept in float32, as gemma4_mm_forward's oracle keeps it)
        keep = {"model.audio_tower": torch.float32} if getattr(model.model, "audio_tower", None) is not None else None
        outs += oracle_forced_logprobs(args, model, inputs, dict(outs)["tokens"], dict(outs)["topk_ids"], step_paths, keep=keep,
                                       twin=_gemma4_mm_oracle_twin)
    return {"steps": steps}, outs


OPS["gemma4_mm_forward"] = op_gemma4_mm_forward
OPS["gemma4_mm_generate"] = op_gemma4_mm_generate
