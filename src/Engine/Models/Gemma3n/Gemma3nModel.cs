using Harness.Engine.Capture;
using Harness.Engine.Cuda;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n;

/// <summary>A Gemma3n prompt: token ids [T], and the towers' outputs for the image and audio placeholders (or null).</summary>
/// <param name="ImageSoftTokens">[n, vision hidden]: the vision tower's output after get_image_features' sqrt(C) scale,
/// one row per image_token_id position.</param>
/// <param name="AudioSoftTokens">[m, audio hidden]: the audio tower's output; padded to audio_soft_tokens_per_image with
/// the last audio hard token's embedding, as Gemma3nModel.forward does.</param>
/// <param name="AudioPadding">[m] true where the tower's frame is padding (its audio_mel_mask): that row is the last audio
/// hard token's embedding instead (<c>torch.where(audio_mask.unsqueeze(-1), audio_padding_embs, audio_features)</c>); null: none.</param>
public sealed record Gemma3nPrompt(Tensor Ids, Tensor? ImageSoftTokens = null, Tensor? AudioSoftTokens = null, bool[]? AudioPadding = null);

/// <summary>
/// Gemma3nForConditionalGeneration (model_type gemma3n) or Gemma3nForCausalLM (gemma3n_text) on one rank of a TP group,
/// module names as HF's. One sequence (batch 1) with a KV cache per non-shared layer; greedy decoding.
/// <code>
/// forward(prompt):
///   embeds = merge(prompt)                                    # Gemma3nModel.forward: text, hard vision/audio ids, soft tokens
///   ple    = per_layer_inputs(ids, embeds)                    # [T, L, P]
///   hs     = altup_expand(embeds)                             # [A, T, D]
///   for layer i: hs = layers[i](hs, rope[type_i], ple[:, i], cache[kv_source(i)])
///   h      = norm(altup_collapse(hs))                         # [T, D]
///   logits = softcap(lm_head(h))                              # tied to embed_tokens
/// </code>
/// </summary>
public sealed class Gemma3nModel : ICheckpointModel, IGraphDecodable
{
    /// <summary>config.json model_type values this class loads: Gemma3nForConditionalGeneration's text side and Gemma3nForCausalLM.</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = ["gemma3n", "gemma3n_text"];

    /// <summary>The tensors this model loads for a config (<see cref="Gemma3nTensors"/>), for <see cref="CheckpointValidator"/>.</summary>
    public static ModelTensors ExpectedTensors(Config.HfConfig config) => Gemma3nTensors.Expected(Gemma3nConfig.Read(config));

    private readonly Gemma3nConfig _config;
    private readonly Gemma3nTextSettings _text;
    private readonly ParallelContext _ctx;
    private readonly StepSink _sink;
    private readonly string _p;
    private readonly VocabParallelEmbedding _embed, _embedPerLayer;
    private readonly ColumnParallelLinear _perLayerModelProjection;
    private readonly Tensor _perLayerProjectionNorm, _norm;
    private readonly ColumnParallelLinear[] _altupProjections, _altupUnembedProjections;
    private readonly ParallelLMHead _lmHead;
    private readonly Dictionary<string, Tensor> _invFreq = new();
    private KvCache?[] _caches;

    public Gemma3nMultimodalEmbedder? EmbedVision { get; }
    public Gemma3nMultimodalEmbedder? EmbedAudio { get; }
    public IReadOnlyList<Gemma3nDecoderLayer> Layers { get; }
    public DType DType { get; }
    /// <summary>Tokens processed so far (the next token's position).</summary>
    public int Position { get; private set; }

    public Gemma3nModel(IWeightSource weights, Gemma3nConfig config, ParallelContext ctx, IActivationSink? sink = null, Gemma3nOptions? options = null)
    {
        options ??= Gemma3nOptions.Default;
        _config = config;
        _text = config.Text;
        _ctx = ctx;
        _sink = StepSink.Over(sink);
        _p = config.TextPrefix;
        if (ctx.PpSize != 1) throw new ArgumentException("the engine's Gemma3n runs without pipeline parallelism (PP=1)");
        var embedWeight = weights.Get(_p + ".embed_tokens.weight");
        DType = embedWeight.DType;
        _embed = new VocabParallelEmbedding(embedWeight, ctx.Tp, _p + ".embed_tokens");
        _embedPerLayer = VocabParallelEmbedding.Load(weights, _p + ".embed_tokens_per_layer", ctx.Tp);
        _perLayerModelProjection = ColumnParallelLinear.Load(weights, _p + ".per_layer_model_projection", ctx.Tp, gatherOutput: true);
        _perLayerProjectionNorm = weights.Get(_p + ".per_layer_projection_norm.weight");
        _altupProjections = Enumerable.Range(0, _text.AltupNumInputs - 1)
            .Select(i => ColumnParallelLinear.Load(weights, $"{_p}.altup_projections.{i}", ctx.Tp, gatherOutput: true)).ToArray();
        _altupUnembedProjections = Enumerable.Range(0, _text.AltupNumInputs - 1)
            .Select(i => ColumnParallelLinear.Load(weights, $"{_p}.altup_unembed_projections.{i}", ctx.Tp, gatherOutput: true)).ToArray();
        _norm = weights.Get(_p + ".norm.weight");
        Layers = Enumerable.Range(0, _text.NumLayers)
            .Select(i => new Gemma3nDecoderLayer(weights, $"{_p}.layers.{i}", _text, i, ctx, _sink, options)).ToList();
        var head = weights.Contains("lm_head.weight") ? weights.Get("lm_head.weight")
            : _text.Base.TieWordEmbeddings ? embedWeight
            : throw new KeyNotFoundException("lm_head.weight is missing and tie_word_embeddings is false");
        _lmHead = new ParallelLMHead(head, ctx.Tp);
        foreach (var type in _text.LayerTypes.Distinct())
            _invFreq[type] = Rotary.InvFreq(_text.Base.RopeFor(type).RopeTheta, _text.Base.HeadDim);
        _caches = [];
        Allocate(options.MaxPositions);
        if (config.IsMultimodal)
        {
            EmbedVision = new Gemma3nMultimodalEmbedder(weights, "model.embed_vision", config.Vision!, ctx, _sink, options);
            EmbedAudio = new Gemma3nMultimodalEmbedder(weights, "model.embed_audio", config.Audio!, ctx, _sink, options);
        }
    }

    // Only non-shared layers own a cache; a shared layer reads its source's.
    private void Allocate(int positions)
    {
        var device = Cuda.CudaTensors.DeviceOf(_embed.LocalWeight);                       // weights on a GPU: the cache too
        _caches = Enumerable.Range(0, _text.NumLayers)
            .Select(i => _text.KvSourceLayer(i) == i
                ? new KvCache(Layers[i].SelfAttn.LocalKvHeads, _text.Base.HeadDim, positions, DType, device) { DevicePosition = _deviceStep?.Position }
                : null)
            .ToArray();
        _ropeTables.Clear();
        if (device is not null)
            foreach (var (type, inv) in _invFreq)
            {   // a graph step's cos/sin per layer type: every position's row (each computed on its own: the step's own)
                var (cos, sin) = Rotary.CosSin(inv, Tensor.Arange(positions).Unsqueeze(0), DType);   // [1, P, hd]
                _ropeTables[type] = (cos.Select(0, 0).ToDevice(device), sin.Select(0, 0).ToDevice(device));
            }
    }

    private readonly Dictionary<string, (Tensor Cos, Tensor Sin)> _ropeTables = new();

    /// <summary>The device of the weights, or null on the host (<see cref="IGraphDecodable.Device"/>).</summary>
    public Cuda.CudaDevice? Device => Cuda.CudaTensors.DeviceOf(_embed.LocalWeight);

    /// <summary>Positions the KV caches hold.</summary>
    public int CacheCapacity => _caches.FirstOrDefault(c => c is not null)?.Capacity ?? 0;

    /// <summary><see cref="IGraphDecodable.Rewind"/>: every cache's length and the position.</summary>
    public void Rewind(int position)
    {
        foreach (var c in _caches) c?.Reset(position);
        Position = position;
    }

    /// <summary><see cref="IGraphDecodable.GraphUnsupported"/>: null at TP=1 (every id rewrite has a device kernel).</summary>
    public string? GraphUnsupported => _ctx.TpSize == 1 ? null : "Gemma3n graph steps run one rank";

    /// <summary>A graph step's device state (<see cref="CudaGraphDecoder"/>): the caches append and attend at its position.</summary>
    public DeviceStep? DeviceStep
    {
        get => _deviceStep;
        set
        {
            _deviceStep = value;
            foreach (var c in _caches) if (c is not null) c.DevicePosition = value?.Position;
        }
    }
    private DeviceStep? _deviceStep;

    /// <summary>
    /// <see cref="IGraphDecodable.DeviceForward"/>: <see cref="Step"/> for a device id at the device position: the id
    /// rewrites (per-layer ids, vision/audio hard ids and masks) by <see cref="Cuda.CudaDecodeOps.IdsMap"/> instead of
    /// on the host, cos/sin rows read at the position. Logits [1, vocab].
    /// </summary>
    public Tensor DeviceForward(Tensor id)
    {
        var step = _deviceStep ?? throw new InvalidOperationException("DeviceForward needs a DeviceStep");
        var ids = id.Reshape(-1);                                                        // [1] int64 on the device
        var embeds = ScaledLookup(_embed, ids, _text.HiddenSize, step.Scratch);          // [1, D]
        if (_config.IsMultimodal)
        {   // torch.where(vision_mask, embed_vision(where(vision_mask, id, last vision id)), embeds), then audio likewise
            var v = EmbedVision!.Settings;
            var a = EmbedAudio!.Settings;
            var (visionIds, visionMask) = Cuda.CudaDecodeOps.IdsMap(ids, v.VocabOffset, a.VocabOffset, v.VocabOffset + v.VocabSize - 1, fillInside: false, shift: v.VocabOffset);
            embeds = Elementwise.Where(visionMask.Unsqueeze(1), EmbedVision.ForwardHardLocal(visionIds, step.Scratch).To(DType), embeds);
            var (audioIds, audioMask) = Cuda.CudaDecodeOps.IdsMap(ids, a.VocabOffset, long.MaxValue, a.VocabOffset + a.VocabSize - 1, fillInside: false, shift: a.VocabOffset);
            embeds = Elementwise.Where(audioMask.Unsqueeze(1), EmbedAudio.ForwardHardLocal(audioIds, step.Scratch).To(DType), embeds);
        }
        Record(_p + ".inputs_embeds", embeds);
        // get_per_layer_inputs: ids outside [0, vocab_size_per_layer_input) look up row 0
        var (pleIds, _) = Cuda.CudaDecodeOps.IdsMap(ids, 0, _text.VocabSizePerLayerInput, 0, fillInside: false);
        var perLayerInputs = PerLayerInputs(ScaledLookup(_embedPerLayer, pleIds, _text.HiddenSizePerLayerInput, step.Scratch), embeds, 1);
        var rope = _ropeTables.ToDictionary(kv => kv.Key, kv => Cuda.CudaDecodeOps.RowsAt(kv.Value.Cos, kv.Value.Sin, step.Position, 1));  // [1, 1, hd]
        Position += 1;
        return Decoder(embeds, perLayerInputs, rope, 1, logitsToKeep: 0);
    }

    /// <summary>The layout (<see cref="IDecoder.Context"/>).</summary>
    public ParallelContext Context => _ctx;

    /// <summary>The sink this model's modules record through (<see cref="IDecoder.Sink"/>).</summary>
    public StepSink Sink => _sink;

    /// <summary>Forgets the sequence and sizes the caches for <paramref name="positions"/> positions when they hold fewer
    /// (<see cref="IDecoder.StartSequence"/>); more than max_position_embeddings is a named error.</summary>
    public void StartSequence(int positions)
    {
        DecodeLoop.CheckPositions(positions, () => _text.Base.MaxPositionEmbeddings);
        if (_caches.FirstOrDefault(c => c is not null) is not { } c0 || c0.Capacity < positions) Allocate(positions);
        foreach (var c in _caches) c?.Reset();
        Position = 0;
    }

    /// <summary>One decode step (<see cref="IDecoder.Step"/>): logits [1, vocab].</summary>
    public Tensor? Step(long token) => Forward(new Gemma3nPrompt(Tensor.FromArray([token], 1)));

    /// <summary>One forward step at the cache's position: the prompt (or one decoded token) -> logits [T, vocab].</summary>
    /// <param name="logitsToKeep">HF's logits_to_keep: 0 keeps every row, n &gt; 0 runs lm_head on the last n tokens only.</param>
    public Tensor Forward(Gemma3nPrompt input, int logitsToKeep = 0)
    {
        var ids = input.Ids.Reshape(-1);
        int t = ids.Shape[0];
        // a fresh sequence's prompt sizes the caches for itself, as StartSequence does for a decode request: the captured
        // prefill (compare, the catalog) runs before any StartSequence, and a 261-token image prompt (boi, 256 image
        // tokens, eoi, 3 words) met the default MaxPositions 256 ("KV cache of 256 positions cannot take 261 more after 0")
        if (Position == 0 && CacheCapacity < t) StartSequence(t);
        var positions = Tensor.Arange(t);
        for (int i = 0; i < t; i++) positions.Set(Position + i, i);
        Position += t;

        // Gemma3nModel.forward: inputs_embeds and per-layer token embeddings
        var embeds = Embed(ids, input);                                                  // [T, D]
        Record(_p + ".inputs_embeds", embeds);
        // get_per_layer_inputs: ids below vocab_size_per_layer_input, others 0
        var pleIds = ids.ToInt64Array().Select(id => id >= 0 && id < _text.VocabSizePerLayerInput ? id : 0).ToArray();
        var perLayerInputs = PerLayerInputs(ScaledLookup(_embedPerLayer, Tensor.FromArray(pleIds, t), _text.HiddenSizePerLayerInput), embeds, t); // [T, L, P]
        var rope = _invFreq.ToDictionary(kv => kv.Key, kv => Rotary.CosSin(kv.Value, positions.Unsqueeze(0), DType)); // [1, T, hd]
        return Decoder(embeds, perLayerInputs, rope, t, logitsToKeep);
    }

    // From the merged embeddings [T, D] and per-layer inputs [T, L, P] with each layer type's cos/sin [1, T, hd]: the
    // AltUp streams through the layers, the collapse, norm, lm_head and soft cap -> logits [T or keep, vocab].
    private Tensor Decoder(Tensor embeds, Tensor perLayerInputs, Dictionary<string, (Tensor Cos, Tensor Sin)> rope, int t, int logitsToKeep)
    {
        // AltUp expansion: stream i >= 1 is altup_projections[i-1](h0), rescaled to h0's RMS
        var hs = AltUpExpand(embeds);                                                    // [A, T, D]

        for (int i = 0; i < Layers.Count; i++)
        {
            var (cos, sin) = rope[_text.LayerTypes[i]];
            var cache = _caches[_text.KvSourceLayer(i)]!;
            try
            {
                hs = Layers[i].Forward(hs, cos, sin, perLayerInputs.Select(1, i), cache);
            }
            catch (Exception e) when (e is not ModuleFailedException and not CollectiveException { Failure: CollectiveFailure.PeerFailed })
            {
                throw new ModuleFailedException(Layers[i].Prefix, _ctx.WorldRank, e);
            }
        }

        var h = Norms.RmsNorm(AltUpCollapse(hs), _norm, _text.RmsNormEps, RmsNormKind.GemmaScaled); // [T, D]
        Record(_p + ".norm", h);
        if (logitsToKeep > 0) h = h.Narrow(0, t - logitsToKeep, logitsToKeep);           // [keep, D]
        var logits = _lmHead.Forward(h);                                                 // [T, vocab]
        Record("lm_head", logits);
        if (_text.FinalLogitSoftcapping is double c)                                     // tanh(logits / c) * c
            logits = Elementwise.Mul(Elementwise.Tanh(Elementwise.Div(logits, c)), c);
        Record("logits", logits);
        return logits;
    }

    /// <summary>
    /// inputs_embeds as Gemma3nModel.forward builds them: embed_tokens(ids) * sqrt(D); ids in the vision range through
    /// embed_vision and ids from the audio offset on through embed_audio (each embedder runs on every position, other
    /// positions given its last hard id, as HF's torch.where does); then the soft tokens scattered onto the
    /// image_token_id and audio_token_id positions in order.
    /// </summary>
    private Tensor Embed(Tensor ids, Gemma3nPrompt input)
    {
        var embeds = ScaledLookup(_embed, ids, _text.HiddenSize);                       // [T, D]
        Record(_p + ".embed_tokens", embeds);
        if (!_config.IsMultimodal)
        {
            if (input.ImageSoftTokens is not null || input.AudioSoftTokens is not null)
                throw new ArgumentException("a gemma3n_text model takes no soft tokens");
            return embeds;
        }
        var v = EmbedVision!.Settings;
        var a = EmbedAudio!.Settings;
        var idv = ids.ToInt64Array();
        // vision_mask = vision_offset <= id < audio_offset; audio_mask = id >= audio_offset
        bool[] visionMask = idv.Select(id => id >= v.VocabOffset && id < a.VocabOffset).ToArray();
        bool[] audioMask = idv.Select(id => id >= a.VocabOffset).ToArray();
        var visionIds = idv.Select((id, i) => visionMask[i] ? id : v.VocabOffset + v.VocabSize - 1).ToArray();
        var audioIds = idv.Select((id, i) => audioMask[i] ? id : a.VocabOffset + a.VocabSize - 1).ToArray();
        var visionEmbeds = EmbedVision.ForwardHard(Tensor.FromArray(visionIds, visionIds.Length)).To(DType);
        embeds = Elementwise.Where(Tensor.FromArray(visionMask, idv.Length, 1), visionEmbeds, embeds);
        var audioEmbeds = EmbedAudio.ForwardHard(Tensor.FromArray(audioIds, audioIds.Length)).To(DType);
        embeds = Elementwise.Where(Tensor.FromArray(audioMask, idv.Length, 1), audioEmbeds, embeds);

        if (input.ImageSoftTokens is { } image)
        {
            // get_image_features: last_hidden_state.reshape(batch, vision hidden, vision_soft_tokens_per_image): whole images only
            int perImage = _config.VisionSoftTokensPerImage!.Value;
            if (image.Shape[0] % perImage != 0)
                throw new ArgumentException($"{image.Shape[0]} image soft tokens are not whole images of vision_soft_tokens_per_image {perImage}");
            Scatter(embeds, idv, _config.ImageTokenId!.Value, EmbedVision.ForwardSoft(image.To(DType)), "image_token_id");
        }
        if (input.AudioSoftTokens is { } audio)
        {
            var features = EmbedAudio.ForwardSoft(audio.To(DType));                     // [m, D]
            int slots = _config.AudioSoftTokensPerImage!.Value, m = features.Shape[0];
            if (m > slots)
                throw new ArgumentException($"{m} audio soft tokens exceed audio_soft_tokens_per_image {slots}");
            bool padded = input.AudioPadding is { } p && p.Any(x => x);
            if (input.AudioPadding is { } flags && flags.Length != m)
                throw new ArgumentException($"{flags.Length} audio padding flags for {m} audio soft tokens");
            if (m < slots || padded)
            {   // audio_padding_embs = embed_audio(vocab_size - 1), the last audio hard token
                var pad = EmbedAudio.ForwardHard(Tensor.FromArray([(long)_text.VocabSize - 1], 1), record: false).To(features.DType);   // [1, D]
                if (padded)   // audio_features = torch.where(audio_mask.unsqueeze(-1), audio_padding_embs, audio_features)
                    features = Elementwise.Where(Tensor.FromArray(input.AudioPadding!, m, 1), pad.Expand(m, _text.HiddenSize), features);
                if (m < slots) features = Tensor.Cat([features, pad.Expand(slots - m, _text.HiddenSize)], 0);
            }
            Scatter(embeds, idv, _config.AudioTokenId!.Value, features, "audio_token_id");
        }
        return embeds;
    }

    /// <summary>inputs_embeds.masked_scatter(ids == token, features): rows of features in order onto the token's positions.</summary>
    private static void Scatter(Tensor embeds, long[] ids, int token, Tensor features, string field)
    {
        var positions = ids.Select((id, i) => (id, i)).Where(x => x.id == token).Select(x => x.i).ToArray();
        if (positions.Length != features.Shape[0])
            throw new ArgumentException($"{features.Shape[0]} soft tokens for {positions.Length} positions of {field} {token}");
        for (int j = 0; j < positions.Length; j++) embeds.Select(0, positions[j]).CopyFrom(features.Select(0, j).To(embeds.DType));
    }

    /// <summary>embedding(ids) * embed_scale.to(weight.dtype) (Gemma3nTextScaledWordEmbedding: the scale rounds in bf16);
    /// device ids of a graph step (with the scratch int) through the unchecked lookup (no read-back).</summary>
    private Tensor ScaledLookup(VocabParallelEmbedding table, Tensor ids, int width, Tensor? scratch = null) =>
        Elementwise.Mul(scratch is null ? table.Forward(ids) : Cuda.CudaDecodeOps.EmbeddingUnchecked(table.LocalWeight, ids, scratch),
            Tensor.Scalar(Math.Sqrt(width), DType).Item());

    /// <summary>
    /// project_per_layer_inputs from the per-layer token embeddings (get_per_layer_inputs: [T, L*P], scaled):
    /// <c>(norm(reshape(per_layer_model_projection(embeds) * D**-0.5)) + ple_tokens) * 2**-0.5</c> -> [T, L, P].
    /// </summary>
    private Tensor PerLayerInputs(Tensor pleTokens, Tensor embeds, int t)
    {
        int l = _text.NumLayers, p = _text.HiddenSizePerLayerInput;
        var tokens = pleTokens.Reshape(t, l, p);
        Record(_p + ".embed_tokens_per_layer", tokens.Reshape(t, l * p));
        var projection = _perLayerModelProjection.Forward(embeds);                      // [T, L*P]
        Record(_p + ".per_layer_model_projection", projection);
        projection = Elementwise.Mul(projection, Tensor.Scalar((float)Math.Pow(_text.HiddenSize, -0.5), DType).Item());
        projection = Norms.RmsNorm(projection.Reshape(t, l, p), _perLayerProjectionNorm, _text.RmsNormEps, RmsNormKind.GemmaScaled);
        Record(_p + ".per_layer_projection_norm", projection);
        var scale = Tensor.Scalar(1 / MathF.Sqrt(2f), DType).Item();                    // torch.rsqrt(torch.tensor(2.0)).to(dtype)
        return Elementwise.Mul(Elementwise.Add(projection, tokens), scale);
    }

    /// <summary>[T, D] -> [A, T, D]: stream 0 is h0; stream i is proj_i(h0) * rms(h0) / sqrt(max(mean(proj_i(h0)^2), 1e-5)).</summary>
    private Tensor AltUpExpand(Tensor h0)
    {
        var target = Rms(h0);
        var streams = new List<Tensor> { h0 };
        foreach (var proj in _altupProjections) streams.Add(Rescale(proj.Forward(h0), target));
        return Tensor.Cat(streams.Select(s => s.Unsqueeze(0)).ToList(), 0);
    }

    /// <summary>[A, T, D] -> [T, D]: mean of stream 0 and unembed_i(stream i) rescaled to stream 0's RMS.</summary>
    private Tensor AltUpCollapse(Tensor hs)
    {
        var first = hs.Select(0, 0);
        var target = Rms(first);
        var streams = new List<Tensor> { first };
        for (int i = 1; i < hs.Shape[0]; i++) streams.Add(Rescale(_altupUnembedProjections[i - 1].Forward(hs.Select(0, i)), target));
        return Reductions.Mean(Tensor.Cat(streams.Select(s => s.Unsqueeze(0)).ToList(), 0), 0);
    }

    // torch.mean(x ** 2, dim=-1, keepdim=True) ** 0.5
    private static Tensor Rms(Tensor x) => Elementwise.Pow(Reductions.Mean(Elementwise.Square(x), -1, keepDim: true), 0.5);

    // x * target / torch.sqrt(torch.maximum(torch.mean(x ** 2, -1, keepdim=True), 1e-5))
    private static Tensor Rescale(Tensor x, Tensor target)
    {
        var magnitude = Elementwise.Sqrt(Elementwise.Clamp(Reductions.Mean(Elementwise.Square(x), -1, keepDim: true), min: 1e-5));
        return Elementwise.Div(Elementwise.Mul(x, target), magnitude);
    }

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value.Unsqueeze(0), ShardSpec.Whole);   // [1, T, ...]
    }

    /// <summary>
    /// Greedy decoding of maxNewTokens after the prompt through <see cref="DecodeLoop"/>. Decoded tokens are fed back as ids
    /// (a hard multimodal id goes through its embedder, as in HF).
    /// </summary>
    /// <param name="forced">Teacher forcing (<see cref="DecodeRequest.Forced"/>); null: free-running.</param>
    public Generation Generate(Gemma3nPrompt prompt, int maxNewTokens, int topK, IReadOnlyList<long>? forced = null) =>
        DecodeLoop.Run(this, prompt.Ids.NumEl, () => Forward(prompt, logitsToKeep: 1), new DecodeRequest(maxNewTokens, topK) { Forced = forced });
}
