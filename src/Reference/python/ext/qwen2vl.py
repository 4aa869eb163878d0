# Qwen2-VL reference ops (spliced into harness_worker.py before main(); sees its globals).
# qwen2vl_generate: HF's own image/video processors turn the raw pixels the C# side sends into pixel_values and
# grid_thw; Qwen2VLForConditionalGeneration runs the prompt with hooks on the compared modules and greedy-decodes.


def _qwen2vl_indexed(tensors, prefix):
    """tensors named prefix0, prefix1, ... in index order."""
    names = sorted((k for k in tensors if k.startswith(prefix) and k[len(prefix):].isdigit()), key=lambda k: int(k[len(prefix):]))
    return [tensors[k] for k in names]


def _qwen2vl_processor_inputs(model, tensors):
    """image0.. ([H, W, 3] 0..255) and video0.. ([frames, H, W, 3]) through HF's Qwen2VLImageProcessor and
    Qwen2VLVideoProcessor with the model's patch_size, temporal_patch_size and merge_size; min/max pixels wide open so
    sizes that are multiples of patch_size * merge_size are kept as they are."""
    import numpy as np
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    vc = model.config.vision_config
    kw = dict(patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size, merge_size=vc.spatial_merge_size,
              min_pixels=1, max_pixels=1 << 26)
    # a user's files, already through the checkpoint's own processor (process_media; compare --image FILE): as given
    out = {name: tensors[name] for name in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw") if name in tensors}
    images = [t.numpy().astype(np.uint8) for t in _qwen2vl_indexed(tensors, "image")]
    if images:
        r = Qwen2VLImageProcessor(**kw)(images=images, return_tensors="pt")
        out["pixel_values"], out["image_grid_thw"] = r["pixel_values"], r["image_grid_thw"]
    videos = [t.numpy().astype(np.uint8) for t in _qwen2vl_indexed(tensors, "video")]
    if videos:
        r = Qwen2VLVideoProcessor(do_sample_frames=False, **kw)(videos=videos, return_tensors="pt")
        out["pixel_values_videos"], out["video_grid_thw"] = r["pixel_values_videos"], r["video_grid_thw"]
    return out


def op_qwen2vl_generate(args, tensors):
    model = load_model(args["model_dir"], args.get("dtype", "float32"), args.get("model_class"))
    ids = need(tensors, "input_ids").to(torch.int64)
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids must be [1, T], got {list(ids.shape)}")
    cfg = model.config
    processed = _qwen2vl_processor_inputs(model, tensors)
    mm_types = (ids == cfg.image_token_id).to(torch.int32) + 2 * (ids == cfg.video_token_id).to(torch.int32)
    inputs = {"input_ids": ids, **processed}
    if processed:
        inputs["mm_token_type_ids"] = mm_types
    inputs = {name: t.to(model.device) for name, t in inputs.items()}   # where the model is (the GPU under --device cuda)
    paths = list(args.get("capture", []))
    steps, k = int(args["max_new_tokens"]), int(args.get("top_k", 1))
    step_paths = list(args.get("capture_steps", []))        # the decoder's modules at every decode step (StepCapture)

    def generate(m):
        m.model.rope_deltas = None  # HF keeps the last prompt's deltas on the module; a new prompt starts clean
        return greedy_decode(m, inputs, steps, k, prompt_logits=True, step_paths=step_paths, forced=tensors.get("forced_tokens"))

    # hooks keep each module's first output: the prompt's forward
    generated, outs, captured = capture_run(model, paths, generate)

    def prompt_only(m, up):
        m.model.rope_deltas = None
        return [("logits", m(**up(inputs), use_cache=False).logits)]

    outs = outs + generated                                       # logits, tokens, topk_ids, topk_logprobs
    outs += [("processor." + name, t) for name, t in processed.items()]
    outs += [("processor.mm_token_type_ids", mm_types)]
    outs += oracle_outputs(args, model, paths, prompt_only)
    if args.get("oracle") and steps:
        # the float64 model teacher-forced on the same tokens: its prompt forward sets the rope_deltas the forced steps'
        # M-RoPE positions are read from (cache length + delta), as greedy_decode's steps read the reference's
        def reset(m):
            m.model.rope_deltas = None
        g = dict(generated)
        outs += oracle_forced_logprobs(args, model, inputs, g["tokens"], g["topk_ids"], step_paths, reset=reset)
    model.model.rope_deltas = None
    return {"captured": captured, "processor": "Qwen2VLImageProcessor/Qwen2VLVideoProcessor (transformers " + transformers.__version__ + ")"}, outs


OPS["qwen2vl_generate"] = op_qwen2vl_generate
