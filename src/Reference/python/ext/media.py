# Real inputs (issue 22 item 5): a user's text with image and video files through the checkpoint's OWN processor
# (AutoProcessor from the model folder: its tokenizer, image processor, video processor and chat template), so both
# sides get the ids, pixel values and grids a user of transformers gets.
#
# The files never reach this process as paths: the harness checks each one (a regular file under a size cap, named in
# one line when not) and sends its bytes as a uint8 tensor. Images are decoded by PIL, videos by PyAV (ffmpeg), both
# from memory; a file they cannot decode is a MediaError naming it, which the harness prints in one line (exit 2).
#
# save_processor writes the tiny models' processors (a word-level tokenizer with the model's special ids, the image
# and video processors with sizes, means and stds off every library default) beside their weights.


class MediaError(ValueError):
    """A media file the decoder or the processor refuses: the message names the file."""


# the most frames and pixels a decoded video may hold before the processor sees it (the harness caps the file's bytes;
# a small file can still decode to a huge one)
MEDIA_MAX_FRAMES = 1024
MEDIA_MAX_PIXELS = 1 << 28


def _media_bytes(tensors, name, length):
    """The file's bytes: the wire has no uint8, so they come packed in an int32 [ceil(N/4)] tensor (zero-padded)."""
    t = need(tensors, name)
    if t.dtype != torch.int32 or t.dim() != 1 or not (0 < length <= 4 * t.shape[0] < length + 4):
        raise ValueError(f"{name} must be {length} bytes packed as int32 [{(length + 3) // 4}], got {t.dtype} {list(t.shape)}")
    return t.numpy().tobytes()[:length]


def _media_image(data, label):
    """One image file's bytes -> an RGB PIL image (the processors convert to RGB anyway; do_convert_rgb)."""
    import io
    from PIL import Image, UnidentifiedImageError
    Image.MAX_IMAGE_PIXELS = MEDIA_MAX_PIXELS // 4
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"{label}: not an image PIL can read ({type(e).__name__}: {e})") from None
    return img.convert("RGB")


def _media_video(data, label):
    """One video file's bytes -> (frames [T, H, W, 3] uint8, fps), every frame of the first video stream, by PyAV."""
    import io
    import numpy as np
    try:
        import av
    except ImportError:
        raise MediaError(f"{label}: the reference environment has no video decoder (python3-av; ci/reference-env.sh installs it)") from None
    frames, fps = [], None
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = [s for s in container.streams if s.type == "video"]
            if not streams:
                raise MediaError(f"{label}: has no video stream")
            stream = streams[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            pixels = 0
            for frame in container.decode(stream):
                a = frame.to_ndarray(format="rgb24")
                pixels += a.shape[0] * a.shape[1]
                if len(frames) >= MEDIA_MAX_FRAMES or pixels > MEDIA_MAX_PIXELS:
                    raise MediaError(f"{label}: decodes to more than {MEDIA_MAX_FRAMES} frames or {MEDIA_MAX_PIXELS} pixels")
                frames.append(a)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        raise MediaError(f"{label}: not a video PyAV can read ({type(e).__name__}: {e})") from None
    if not frames:
        raise MediaError(f"{label}: has no frames")
    return np.stack(frames), fps


# the longest WAV a compare takes, in decoded samples (an hour at 48 kHz; the harness caps the file's bytes)
MEDIA_MAX_SAMPLES = 48_000 * 3600


def _media_wav(data, label):
    """One WAV file's bytes -> (mono float32 samples in [-1, 1), sample rate), by the standard library's wave module
    (integer PCM, 8 to 32 bits; channels averaged to mono as librosa.load does)."""
    import io
    import wave
    import numpy as np
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if n * channels > MEDIA_MAX_SAMPLES:
                raise MediaError(f"{label}: holds {n * channels} samples, more than {MEDIA_MAX_SAMPLES}")
            raw = w.readframes(n)
    except MediaError:
        raise
    except (wave.Error, EOFError, ValueError, OSError) as e:
        raise MediaError(f"{label}: not a WAV file the wave module can read ({type(e).__name__}: {e})") from None
    if width == 1:                                                   # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        x = np.frombuffer(raw, dtype="<i2" if width == 2 else "<i4").astype(np.float32) / float(1 << (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        raise MediaError(f"{label}: {8 * width}-bit samples; the wave module's integer PCM is 8, 16, 24 or 32 bits")
    if x.size == 0:
        raise MediaError(f"{label}: has no samples")
    return x.reshape(-1, channels).mean(axis=1), rate


def _media_prompt(proc, text, n_images, n_videos, chat, n_audios=0):
    """The prompt text with one placeholder per picture or clip, pictures then audio first. chat: the processor's chat
    template with one user message [images, videos, audios, text] (generation prompt added); otherwise the placeholders
    the processor expands (image_token / video_token / audio_token), each picture inside the model's vision start/end
    tokens where the tokenizer has them."""
    if chat:
        if not getattr(proc, "chat_template", None):
            raise ValueError("the processor has no chat_template (chat_template.jinja or processor_config.json)")
        content = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos + [{"type": "audio"}] * n_audios + \
            [{"type": "text", "text": text}]
        return proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    tok = proc.tokenizer
    start = getattr(tok, "vision_start_token", None)
    end = getattr(tok, "vision_end_token", None)

    def wrap(token):
        return f"{start}{token}{end}" if start and end else token

    # only the placeholders asked for: a processor without video (Gemma3n's) has no video_token
    parts = ([wrap(proc.image_token)] * n_images if n_images else []) + ([wrap(proc.video_token)] * n_videos if n_videos else []) + \
        ([proc.audio_token] * n_audios if n_audios else [])
    return "".join(parts) + (" " if parts and text else "") + text


def op_process_media(args, tensors):
    """A user's prompt through the checkpoint's own processor: args model_dir, text, chat, images, videos and audios
    (each {label: the path the harness names the file by, bytes: its length}; the bytes are tensors image0.., video0..,
    audio0..; audio files are WAV at the feature extractor's sampling rate). Returns every tensor the processor makes for
    the model (input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, image_position_ids,
    input_features, input_features_mask, ...), int64 ids [1, T], masks as int64."""
    model_dir = args["model_dir"]
    proc = transformers.AutoProcessor.from_pretrained(model_dir)
    wanted = [("image_processor", "images", args.get("images")), ("video_processor", "videos", args.get("videos")),
              ("feature_extractor", "audio", args.get("audios"))]
    for part, what, files in wanted:
        if files and getattr(proc, part, None) is None:
            raise MediaError(f"{model_dir}: AutoProcessor gives {type(proc).__name__}, which takes no {what} (no {part}; "
                             "the folder needs the model's processor: processor_config.json / preprocessor_config.json)")
    images = [_media_image(_media_bytes(tensors, f"image{i}", f["bytes"]), f["label"]) for i, f in enumerate(args.get("images", []))]
    decoded = [_media_video(_media_bytes(tensors, f"video{i}", f["bytes"]), f["label"]) for i, f in enumerate(args.get("videos", []))]
    audios = []
    for i, f in enumerate(args.get("audios", [])):
        samples, rate = _media_wav(_media_bytes(tensors, f"audio{i}", f["bytes"]), f["label"])
        want = int(proc.feature_extractor.sampling_rate)
        if rate != want:                # HF's feature extractors take samples at their own rate and do not resample
            raise MediaError(f"{f['label']}: sampled at {rate} Hz; the checkpoint's feature extractor "
                             f"({type(proc.feature_extractor).__name__}) takes {want} Hz: resample the file to {want} Hz")
        audios.append(samples)
    prompt = _media_prompt(proc, args.get("text", ""), len(images), len(decoded), bool(args.get("chat")), len(audios))
    kwargs = {"text": [prompt], "return_tensors": "pt"}
    if images:
        kwargs["images"] = images
    if audios:
        kwargs["audio"] = audios
    if decoded:
        kwargs["videos"] = [frames for frames, _ in decoded]
        if all(f is not None for _, f in decoded):       # the processor's own frame sampling (do_sample_frames) needs the fps
            kwargs["video_metadata"] = [{"total_num_frames": len(frames), "fps": f, "frames_indices": list(range(len(frames)))}
                                        for frames, f in decoded]
    try:
        out = proc(**kwargs)
    except (ValueError, TypeError) as e:
        labels = [f["label"] for f in list(args.get("images", [])) + list(args.get("videos", [])) + list(args.get("audios", []))]
        raise MediaError(f"{', '.join(labels) or model_dir}: the processor refused the input ({type(e).__name__}: {e})") from None
    result = {"processor": type(proc).__name__, "prompt": prompt, "keys": sorted(out.keys())}
    outs = []
    for name in sorted(out.keys()):
        v = out[name]
        if isinstance(v, torch.Tensor):
            outs.append((name, v.to(torch.int64) if not v.is_floating_point() else v.contiguous()))
    return result, outs


def op_save_processor(args, tensors):
    """The tiny models' processor (args family, out_dir, vocab {token: id}, special {role: token}, processor {kwargs},
    chat_template; gemma4 also feature_extractor {kwargs}, processor_fields {kwargs} and optionally video_processor
    {kwargs}): a word-level tokenizer over
    vocab whose special tokens carry the model's ids, and the family's image/video processors (and audio feature
    extractor) built with the given kwargs (every one off the library default), saved to out_dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    out_dir, vocab, special = args["out_dir"], dict(args["vocab"]), dict(args["special"])
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    named = {k: v for k, v in special.items() if k not in ("unk_token", "bos_token", "eos_token", "pad_token")}
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=special["unk_token"], bos_token=special["bos_token"],
                                                eos_token=special["eos_token"], pad_token=special.get("pad_token"),
                                                extra_special_tokens=named)
    fast.add_special_tokens({"additional_special_tokens": sorted(named.values())})
    kw = dict(args["processor"])
    if args["family"] == "qwen2_vl":
        proc = transformers.Qwen2VLProcessor(
            image_processor=transformers.Qwen2VLImageProcessor(**kw),
            video_processor=transformers.Qwen2VLVideoProcessor(**kw),
            tokenizer=fast, chat_template=args.get("chat_template"))
    elif args["family"] == "gemma4":
        # Gemma4Processor: the image processor (kw), Gemma4AudioFeatureExtractor (args feature_extractor) and the
        # processor's own fields (args processor_fields: image_seq_length, audio_seq_length); its video processor takes
        # the image processor's patch and pooling sizes, then args video_processor's kwargs (frames sampled, soft tokens)
        video = {k: kw[k] for k in ("patch_size", "pooling_kernel_size", "max_soft_tokens") if k in kw}
        video.update(dict(args.get("video_processor") or {}))
        proc = transformers.Gemma4Processor(
            feature_extractor=transformers.Gemma4AudioFeatureExtractor(**dict(args["feature_extractor"])),
            image_processor=transformers.Gemma4ImageProcessor(**kw),
            video_processor=transformers.Gemma4VideoProcessor(**video),
            tokenizer=fast, chat_template=args.get("chat_template"), **dict(args.get("processor_fields", {})))
    elif args["family"] == "gemma3n":
        # Gemma3nProcessor: its SigLIP image processor (kw: the pixels MobileNetV5 gets; transformers 5's SiglipImageProcessor
        # is the released SiglipImageProcessorFast), Gemma3nAudioFeatureExtractor (args feature_extractor) and its fixed placeholder counts
        # (args processor_fields: audio_seq_length = the config's audio_soft_tokens_per_image, image_seq_length)
        proc = transformers.Gemma3nProcessor(
            feature_extractor=transformers.Gemma3nAudioFeatureExtractor(**dict(args["feature_extractor"])),
            image_processor=transformers.SiglipImageProcessor(**kw),
            tokenizer=fast, chat_template=args.get("chat_template"), **dict(args.get("processor_fields", {})))
    else:
        raise ValueError(f"save_processor: no tiny processor for family {args['family']!r} (known: qwen2_vl, gemma4, gemma3n)")
    proc.save_pretrained(out_dir)
    return {"files": sorted(os.listdir(out_dir))}, []


def op_audio_features(args, tensors):
    """The checkpoint's own audio feature extractor (AutoProcessor's feature_extractor from args model_dir) on samples
    [N] float32 at its sampling rate, called directly as a user calls it: input_features [1, T, mel], input_features_mask
    [1, T] (int64). args library_defaults: the library's Gemma4AudioFeatureExtractor at the checkpoint's mel bin count
    and rate instead (what a path that ignored the checkpoint's settings would use)."""
    samples = need(tensors, "samples").to(torch.float32).numpy()
    fe = transformers.AutoProcessor.from_pretrained(args["model_dir"]).feature_extractor
    if args.get("library_defaults"):
        fe = type(fe)(feature_size=fe.feature_size, sampling_rate=fe.sampling_rate)
    out = fe([samples], return_tensors="pt")
    return {"feature_extractor": type(fe).__name__}, [("input_features", out["input_features"].contiguous()),
                                                       ("input_features_mask", out["input_features_mask"].to(torch.int64))]


OPS["audio_features"] = op_audio_features
OPS["process_media"] = op_process_media
OPS["save_processor"] = op_save_processor
