# Gemma3n: HF's Gemma3nForConditionalGeneration. Its vision tower is timm's MobileNetV5 (TimmWrapperModel around
# mobilenetv5_300m_enc), built from the vendored timm (ci/vendor, installed into the reference's chroot by
# ci/reference-env.sh) whenever the checkpoint holds the tower's weights. A checkpoint WITHOUT them (the catalog's soft-token
# models, the text-and-audio published-dims writers) gets a stub tower instead: everything else is HF's own code (the text
# decoder, both multimodal embedders, the audio tower and the merge in Gemma3nModel.forward).
#
# The stub tower has no weights: it returns pixel_values as its last_hidden_state ([B, C, h, w] with h*w =
# vision_soft_tokens_per_image), so the caller chooses the tower output. HF then reshapes it to [B, h*w, C] and scales
# it by sqrt(C) (get_image_features); the tensor embed_vision receives is handed back as "image_soft_tokens", and the
# audio tower's output that embed_audio receives as "audio_soft_tokens": what an inference engine gets from encoders.

_GEMMA3N_TOWER_WEIGHT = "model.vision_tower.timm_model.conv_stem.conv.weight"


def _gemma3n_has_vision_tower(model_dir):
    """Whether the checkpoint holds timm's MobileNetV5 weights (then HF builds the real tower from timm)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return _GEMMA3N_TOWER_WEIGHT in json.load(f).get("weight_map", {})
    from safetensors import safe_open
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(model_dir, name), "pt") as f:
                if _GEMMA3N_TOWER_WEIGHT in f.keys():
                    return True
    return False


def _gemma3n_stub_tower_class():
    """Stands in for TimmWrapperModel: no parameters, the input is the output. (Built lazily: torch is imported
    by main(), after this file is spliced in.)"""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    class Gemma3nStubVisionTower(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

        def forward(self, pixel_values=None, do_pooling=False, return_dict=True, **kwargs):
            return BaseModelOutputWithPooling(last_hidden_state=pixel_values)

    return Gemma3nStubVisionTower


class _gemma3n_stub_vision:
    """While active (and enabled), Gemma3nModel's AutoModel.from_config builds the stub for the vision config (and the
    real classes for everything else). Disabled: timm's real tower."""

    def __init__(self, enabled=True):
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return self
        import transformers.models.gemma3n.modeling_gemma3n as mg
        self.module, self.real = mg, mg.AutoModel
        real, stub = self.real, _gemma3n_stub_tower_class()

        class _Auto:
            @staticmethod
            def from_config(config, *args, **kwargs):
                if getattr(config, "model_type", None) == "gemma3n_vision":
                    return stub(config)
                return real.from_config(config, *args, **kwargs)

        mg.AutoModel = _Auto
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.module.AutoModel = self.real
        return False


def _gemma3n_config(cfg):
    from transformers import Gemma3nConfig
    cfg = dict(cfg)
    for key in ("model_type", "architectures", "torch_dtype", "dtype", "transformers_version"):
        cfg.pop(key, None)
    text = dict(cfg.pop("text_config"))
    if isinstance(text.get("activation_sparsity_pattern"), list):   # JSON writes 0.0 as 0; the config wants floats
        text["activation_sparsity_pattern"] = [float(v) for v in text["activation_sparsity_pattern"]]
    cfg["text_config"] = text
    vision = dict(cfg.pop("vision_config"))
    vision.setdefault("label_names", ["stub"])   # keeps Gemma3nVisionConfig.from_dict away from timm's labeller
    return Gemma3nConfig(vision_config=vision, **cfg)


# timm's MobileNetV5 blocks' layer_scale gammas (the vision tower): a block without a skip (each stage's strided first
# block) sets the residual stream's scale, 1 + N(0, 0.2); a block with one adds its branch scaled by N(0, 0.05). With
# N(0, 0.5) everywhere each of a stage's 37-39 blocks moved the stream by about its own size, so a perturbation grew
# 30-70x through stage 2 and collapsed onto one direction: the reference's own bf16 error reached 23-46 % by stage 3
# and every deep module's engine/reference ratio was one heavy-tailed sample (notes/issue-22-visionprec.md).
_GEMMA3N_TOWER_STREAM_GAMMA = 0.2
_GEMMA3N_TOWER_BRANCH_GAMMA = 0.05


def _gemma3n_tower_gammas(model):
    """{parameter name: has_skip} of the timm vision tower's layer_scale gammas (empty for the stub tower)."""
    timm_model = getattr(getattr(getattr(model, "model", None), "vision_tower", None), "timm_model", None)
    if timm_model is None:
        return {}
    prefix = "model.vision_tower.timm_model."
    return {f"{prefix}{name}.layer_scale.gamma": bool(getattr(m, "has_skip", False))
            for name, m in timm_model.named_modules() if isinstance(getattr(getattr(m, "layer_scale", None), "gamma", None), torch.Tensor)}


def _gemma3n_randomize(model, seed):
    """Every parameter off its initial value (HF initialises norms to 1 and correct_output_scale to 0, which would
    hide whole paths): linear and conv weights N(0, 1/fan_in), embeddings N(0, 0.5), norm scales 1 + N(0, 0.2), others
    N(0, 0.5); timm's layer_scale gammas (init 1e-5 would hide every block's branch) as _GEMMA3N_TOWER_*_GAMMA say."""
    gen = torch.Generator().manual_seed(int(seed))
    gammas = _gemma3n_tower_gammas(model)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight") or "norm" in name.split(".")[-2] or name.endswith("correct_output_scale") \
                    or name.split(".")[-2] in ("bn", "bn1", "bn2"):     # timm's RmsNormAct2d scales (the vision tower)
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2 and ("embed" in name and name.endswith("embedding.weight") or "embed_tokens" in name):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            elif name in gammas:
                draw = torch.randn(p.shape, generator=gen)
                p.copy_(_GEMMA3N_TOWER_BRANCH_GAMMA * draw if gammas[name] else 1.0 + _GEMMA3N_TOWER_STREAM_GAMMA * draw)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def op_gemma3n_build(args, tensors):
    """A random Gemma3nForConditionalGeneration from a Gemma3nConfig dict, saved to out_dir: with args["vision_tower"] ==
    "timm" timm's MobileNetV5 (vision_config.architecture and model_args), else the stub tower (no weights)."""
    from transformers import Gemma3nForConditionalGeneration
    config = _gemma3n_config(args["config"])
    dt = torch_dtype(args.get("dtype", "float32"))
    torch.manual_seed(int(args.get("seed", 0)))
    tower = args.get("vision_tower", "stub")
    if tower not in ("stub", "timm"):
        raise ValueError(f"gemma3n_build: vision_tower must be 'stub' or 'timm', got {tower!r}")
    with _gemma3n_stub_vision(enabled=tower == "stub"):
        model = instantiate(Gemma3nForConditionalGeneration, config)
    _gemma3n_randomize(model, args.get("seed", 0))
    model = model.to(dt).eval()
    model.config.dtype = dt
    out_dir = args["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    _model_cache.clear()
    return {"files": sorted(os.listdir(out_dir)),
            "params": sum(p.numel() for p in model.parameters())}, []


def _gemma3n_load(args):
    with _gemma3n_stub_vision(enabled=not _gemma3n_has_vision_tower(args["model_dir"])):
        return load_model(args["model_dir"], args.get("dtype", "float32"),
                          args.get("model_class") or "Gemma3nForConditionalGeneration")


def _gemma3n_inputs(tensors, dtype):
    inputs = {"input_ids": need(tensors, "input_ids").to(torch.int64)}
    if "pixel_values" in tensors:
        inputs["pixel_values"] = tensors["pixel_values"].to(dtype)
    if "input_features" in tensors:
        inputs["input_features"] = tensors["input_features"].to(dtype)
        inputs["input_features_mask"] = need(tensors, "input_features_mask").to(torch.bool)
    return inputs


def _gemma3n_call(model, inputs):
    """One forward without cache; returns [(name, tensor)]: logits (after the soft cap), the merged embeddings and
    per-layer inputs the language model receives, and the soft tokens each embedder receives."""
    seen = {}
    inner = model.model

    def lm_pre(_m, _args, kwargs):
        seen.setdefault("model.language_model.inputs_embeds", kwargs["inputs_embeds"].detach().clone())
        if kwargs.get("per_layer_inputs") is not None:
            seen.setdefault("model.language_model.per_layer_inputs", kwargs["per_layer_inputs"].detach().clone())

    def soft_pre(name):
        def hook(_m, _args, kwargs):
            if kwargs.get("inputs_embeds") is not None:
                seen.setdefault(name, kwargs["inputs_embeds"].detach().clone())
        return hook

    handles = []
    if hasattr(inner, "language_model"):   # Gemma3nForConditionalGeneration (Gemma3nForCausalLM has no merge)
        handles = [inner.language_model.register_forward_pre_hook(lm_pre, with_kwargs=True),
                   inner.embed_vision.register_forward_pre_hook(soft_pre("image_soft_tokens"), with_kwargs=True),
                   inner.embed_audio.register_forward_pre_hook(soft_pre("audio_soft_tokens"), with_kwargs=True)]
    try:
        out = model(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [("logits", out.logits)] + sorted(seen.items())


def op_gemma3n_run(args, tensors):
    """Captures of the given module paths and the named extras of _gemma3n_call for one prompt (ids with optional
    pixel_values = stub tower output and input_features/input_features_mask for the audio tower), then greedy decoding
    with the KV cache (max_new_tokens steps, top_k logprobs of log_softmax(float32 logits))."""
    model = _gemma3n_load(args)
    inputs = {name: t.to(model.device) for name, t in _gemma3n_inputs(tensors, model.dtype).items()}  # where the model is
    paths = list(args.get("capture", []))
    extra, outs, captured = capture_run(model, paths, lambda m: _gemma3n_call(m, inputs))
    outs = outs + list(extra)

    steps, k = int(args.get("max_new_tokens", 0)), int(args.get("top_k", 1))
    if steps:
        step_paths = list(args.get("capture_steps", []))    # the decoder's modules at every decode step (StepCapture)
        generated = greedy_decode(model, inputs, steps, k, step_paths=step_paths, forced=tensors.get("forced_tokens"))
        outs += generated
        if args.get("oracle"):                          # the token verdict's yardstick: the float64 model fed the same tokens
            outs += oracle_forced_logprobs(args, model, inputs, dict(generated)["tokens"], dict(generated)["topk_ids"], step_paths)
    oracle = oracle_outputs(args, model, paths, lambda m, up: _gemma3n_call(m, up(inputs)))
    # the audio tower's modules have no oracle (_GEMMA3N_AUDIO_NO_ORACLE): their fixed policy judges them (compare --audio)
    outs += [(name, t) for name, t in oracle if not name.startswith("oracle.model.audio_tower")]
    return {"captured": captured, "steps": steps}, outs


# HF's float64 twin of the audio tower is no oracle: Gemma3nAudioAttention writes torch.finfo(float64).min at masked
# logits and softmax(dtype=torch.float32) turns it into -inf, so every fully masked query row (a padded frame) is NaN,
# and NaN spreads through the light conv's causal window; an oracle with NaN there would judge none of those elements.
_GEMMA3N_AUDIO_NO_ORACLE = ("HF's float64 Gemma3n audio tower has NaN rows: finfo(float64).min at masked logits becomes -inf in its "
                            "float32 softmax, so fully masked (padded) frames are NaN; the tower is judged by its fixed policy")


def op_gemma3n_audio_tower(args, tensors):
    """HF's Gemma3nAudioEncoder (model.model.audio_tower) alone, called as Gemma3nModel.get_audio_features calls it:
    audio_tower(input_features, ~input_features_mask) (the encoder takes True at PADDING). Captures of the given module
    paths (the tower's own path gives last_hidden_state) and its output mask as "audio_tower.mask" (int64, 1 = padding).
    No float64 oracle (_GEMMA3N_AUDIO_NO_ORACLE): the fixed tower policies judge every element."""
    model = _gemma3n_load(args)
    feats = need(tensors, "input_features")
    padding = ~need(tensors, "input_features_mask").to(torch.bool)

    def call(m, up=lambda v: v):
        out = m.model.audio_tower(up(feats.to(model.dtype).to(model.device)), padding.to(model.device))
        return [("audio_tower.mask", out.audio_mel_mask.to(torch.int64))]

    paths = list(args.get("capture", []))
    extra, outs, captured = capture_run(model, paths, call)
    result = {"captured": captured}
    if args.get("oracle"):
        result["oracle_unavailable"] = _GEMMA3N_AUDIO_NO_ORACLE
    return result, outs + list(extra)


def op_gemma3n_vision_tower(args, tensors):
    """HF's vision tower (model.model.vision_tower: TimmWrapperModel around timm's MobileNetV5Encoder) alone, called as
    Gemma3nModel.get_image_features calls it: vision_tower(pixel_values=..., do_pooling=False, return_dict=True).
    Captures of the given module paths (timm's modules return [B, C, H, W]; the tower's own path gives last_hidden_state),
    and with args["oracle"] the same in float64."""
    model = _gemma3n_load(args)
    if not _gemma3n_has_vision_tower(args["model_dir"]):
        raise ValueError(f"{args['model_dir']}: the checkpoint has no vision tower weights ({_GEMMA3N_TOWER_WEIGHT})")
    pixels = need(tensors, "pixel_values")

    def call(m, up=lambda v: v):
        m.model.vision_tower(pixel_values=up(pixels.to(model.dtype).to(model.device)), do_pooling=False, return_dict=True)
        return []

    paths = list(args.get("capture", []))
    extra, outs, captured = capture_run(model, paths, call)
    outs = outs + list(extra)
    outs += oracle_outputs(args, model, paths, call)
    import timm
    return {"captured": captured, "timm": timm.__version__}, outs


OPS["gemma3n_build"] = op_gemma3n_build
OPS["gemma3n_audio_tower"] = op_gemma3n_audio_tower
OPS["gemma3n_vision_tower"] = op_gemma3n_vision_tower
OPS["gemma3n_run"] = op_gemma3n_run
