using Harness.Engine.Capture;
using Harness.Engine.Cuda;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// What a user gives Qwen2-VL: the prompt ids (with image_token_id / video_token_id placeholders, one per merged patch)
/// and the image processor's pixel values with their grids (image_grid_thw, video_grid_thw).
/// </summary>
public sealed record Qwen2VlInput(long[] Ids)
{
    public Tensor? PixelValues { get; init; }
    public IReadOnlyList<GridThw> ImageGrids { get; init; } = [];
    public Tensor? PixelValuesVideos { get; init; }
    public IReadOnlyList<GridThw> VideoGrids { get; init; } = [];

    /// <summary>Grids from an image_grid_thw / video_grid_thw tensor [n, 3].</summary>
    public static IReadOnlyList<GridThw> Grids(Tensor? thw)
    {
        if (thw is null) return [];
        if (thw.Rank != 2 || thw.Shape[1] != 3) throw new ArgumentException($"a grid_thw tensor is [n, 3], got {Shape.Format(thw.Shape)}");
        var v = thw.ToInt64Array();
        return Enumerable.Range(0, thw.Shape[0]).Select(i => new GridThw((int)v[3 * i], (int)v[3 * i + 1], (int)v[3 * i + 2])).ToList();
    }
}

/// <summary>
/// Qwen2VLForConditionalGeneration on one TP rank (module names as HF's: model.visual..., model.language_model...,
/// lm_head). The prompt is embedded, the vision tower's merged features replace the image and video placeholder
/// embeddings (masked_scatter, in order), the 3D positions come from get_rope_index and the decoder runs with the
/// multimodal RoPE; decode steps use position = cache length + rope_delta on all 3 streams. Batch 1.
/// </summary>
public sealed class Qwen2VlForConditionalGeneration : ICheckpointModel, IGraphDecodable
{
    /// <summary>config.json model_type values this class loads.</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = ["qwen2_vl"];

    /// <summary>The tensors this model loads for a config (<see cref="Qwen2VlTensors"/>), for <see cref="CheckpointValidator"/>.</summary>
    public static ModelTensors ExpectedTensors(Config.HfConfig config) => Qwen2VlTensors.Expected(Qwen2VlConfig.From(config));

    private const string Text = "model.language_model";
    private readonly Qwen2VlConfig _config;
    private readonly ParallelContext _ctx;
    private readonly StepSink _sink;
    private readonly VocabParallelEmbedding _embed;
    private readonly Tensor _norm;
    private readonly ParallelLMHead _lmHead;
    private readonly Tensor _invFreq;
    private KvCache[] _caches;

    public Qwen2VlVisionTower Visual { get; }
    public IReadOnlyList<Qwen2VlDecoderLayer> Layers { get; }
    public DType DType { get; }
    /// <summary>rope_deltas of the last prefill: decode positions are cache length + delta.</summary>
    public long RopeDelta { get; private set; }

    private readonly Qwen2VlOptions _options;

    public Qwen2VlForConditionalGeneration(IWeightSource weights, Qwen2VlConfig config, ParallelContext ctx, IActivationSink? sink = null,
        Qwen2VlOptions? options = null, int maxPositions = 512)
    {
        if (ctx.PpSize != 1)
            throw new NotSupportedException("Qwen2-VL runs under tensor parallelism (with or without sequence parallelism), no pipeline stages");
        _config = config;
        _ctx = ctx;
        _sink = StepSink.Over(sink);
        options ??= Qwen2VlOptions.Default;
        _options = options;
        var w = weights as Qwen2VlWeights ?? new Qwen2VlWeights(weights);     // either checkpoint layout
        weights = w;
        CheckShapes(w, config);
        var embedWeight = weights.Get(Text + ".embed_tokens.weight");
        DType = embedWeight.DType;
        _embed = new VocabParallelEmbedding(embedWeight, ctx.Tp, Text + ".embed_tokens");
        Visual = new Qwen2VlVisionTower(weights, config, ctx, _sink);
        Layers = Enumerable.Range(0, config.Text.NumHiddenLayers)
            .Select(i => new Qwen2VlDecoderLayer(weights, $"{Text}.layers.{i}", config, ctx, _sink, options)).ToList();
        _norm = weights.Get(Text + ".norm.weight");
        var head = weights.Contains("lm_head.weight") ? weights.Get("lm_head.weight")
            : config.Text.TieWordEmbeddings ? embedWeight
            : throw new KeyNotFoundException("lm_head.weight is missing and tie_word_embeddings is false");
        _lmHead = new ParallelLMHead(head, ctx.Tp);
        _invFreq = Rotary.InvFreq(config.Text.Rope.RopeTheta, config.HeadDim);
        _caches = [];
        Allocate(maxPositions);
    }

    private void Allocate(int positions)
    {
        var w = _embed.LocalWeight;
        var device = Cuda.CudaTensors.DeviceOf(w);
        _caches = Layers.Select(l => new KvCache(l.SelfAttn.LocalKvHeads, _config.HeadDim, positions + _ctx.TpSize, DType,
            device) { DevicePosition = _deviceStep?.Position }).ToArray();                 // weights on a GPU: the cache too
        if (device is not null)
        {   // a graph step's cos/sin: the text rows (all 3 streams at one position) of every position, read at
            // cache length + rope_delta on the device; each row is computed on its own, so it equals the step's own
            var (cos, sin) = Qwen2VlRope.MultimodalCosSin(_invFreq, Qwen2VlRope.Sequential(0, positions + _ctx.TpSize), _config.MropeSection, DType);
            _cosDevice = cos.Select(0, 0).ToDevice(device);                               // [P, head_dim]
            _sinDevice = sin.Select(0, 0).ToDevice(device);
            _ropeOffset ??= Cuda.CudaTensors.Zeros(device, DType.Int32, 1);
        }
    }

    private Tensor? _cosDevice, _sinDevice, _ropeOffset;

    /// <summary>The device of the weights, or null on the host (<see cref="IGraphDecodable.Device"/>).</summary>
    public Cuda.CudaDevice? Device => Cuda.CudaTensors.DeviceOf(_embed.LocalWeight);

    /// <summary>Tokens in the KV cache (the next token's cache position; its RoPE position adds <see cref="RopeDelta"/>).</summary>
    public int Position => _caches.Length > 0 ? _caches[0].Length : 0;

    /// <summary>Positions the KV caches hold.</summary>
    public int CacheCapacity => _caches.Length > 0 ? _caches[0].Capacity - _ctx.TpSize : 0;

    /// <summary><see cref="IGraphDecodable.Rewind"/>: every cache's length.</summary>
    public void Rewind(int position)
    {
        foreach (var c in _caches) c.Reset(position);
    }

    /// <summary><see cref="IGraphDecodable.GraphUnsupported"/>: null (text steps at cache length + rope_delta).</summary>
    public string? GraphUnsupported => null;

    /// <summary>
    /// A graph step's device state (<see cref="CudaGraphDecoder"/>): the caches append and attend at its position, and the
    /// cos/sin rows are read at position + rope_delta (written to the device when set, outside any capture).
    /// </summary>
    public DeviceStep? DeviceStep
    {
        get => _deviceStep;
        set
        {
            if (value is not null)
            {
                if (_ropeOffset is null) throw new InvalidOperationException("a graph step needs the model's weights on a GPU");
                if (RopeDelta > 0)
                    throw new NotSupportedException($"rope_deltas {RopeDelta} > 0: the decode positions pass the cos/sin table");
                Cuda.CudaOps.CopyInto(Tensor.FromArray([(int)RopeDelta], 1), _ropeOffset);
            }
            _deviceStep = value;
            foreach (var c in _caches) c.DevicePosition = value?.Position;
        }
    }
    private DeviceStep? _deviceStep;

    /// <summary>
    /// <see cref="IGraphDecodable.DeviceForward"/>: <see cref="Step"/> for a device id at the device position (embedding
    /// without the read-back, cos/sin rows at position + rope_delta): logits [1, vocab].
    /// </summary>
    public Tensor DeviceForward(Tensor id)
    {
        var step = _deviceStep ?? throw new InvalidOperationException("DeviceForward needs a DeviceStep");
        var embeds = Cuda.CudaDecodeOps.EmbeddingUnchecked(_embed.LocalWeight, id.Reshape(-1), step.Scratch);   // [1, hidden]
        var (cos, sin) = Cuda.CudaDecodeOps.RowsAt(_cosDevice!, _sinDevice!, step.Position, 1, _ropeOffset);   // [1, 1, head_dim]
        return Decoder(embeds, cos, sin, 1);
    }

    /// <summary>The layout (<see cref="IDecoder.Context"/>).</summary>
    public ParallelContext Context => _ctx;

    /// <summary>The sink this model's modules record through (<see cref="IDecoder.Sink"/>).</summary>
    public StepSink Sink => _sink;

    /// <summary>Forgets the sequence and sizes the caches for <paramref name="positions"/> positions when they hold fewer
    /// (<see cref="IDecoder.StartSequence"/>); more than max_position_embeddings is a named error.</summary>
    public void StartSequence(int positions)
    {
        DecodeLoop.CheckPositions(positions, () => _config.Text.MaxPositionEmbeddings);
        if (_caches.Length == 0 || _caches[0].Capacity < positions + _ctx.TpSize) Allocate(positions);
        foreach (var c in _caches) c.Reset();
        RopeDelta = 0;
    }

    // The sizes the engine takes from the weights, held against the config fields that define them.
    private static void CheckShapes(Qwen2VlWeights w, Qwen2VlConfig c)
    {
        var t = c.Text;
        w.Expect(Text + ".embed_tokens.weight", $"text vocab_size {t.VocabSize} x hidden_size {t.HiddenSize}", t.VocabSize, t.HiddenSize);
        w.Expect(Text + ".layers.0.mlp.gate_proj.weight", $"text intermediate_size {t.IntermediateSize}", t.IntermediateSize, t.HiddenSize);
        w.Expect("model.visual.blocks.0.mlp.fc1.weight", $"vision embed_dim {c.VisionEmbedDim} * mlp_ratio", c.VisionMlpHidden, c.VisionEmbedDim);
    }

    /// <summary>The prompt's forward: embeddings with the vision features merged in, 3D positions, decoder. Logits [T, vocab].</summary>
    /// <param name="logitsToKeep">HF's logits_to_keep: 0 keeps every row, n &gt; 0 runs lm_head on the last n tokens only.</param>
    public Tensor Prefill(Qwen2VlInput input, int logitsToKeep = 0)
    {
        int t = input.Ids.Length;
        // inputs_embeds = self.get_input_embeddings()(input_ids)
        var embeds = _embed.Forward(Tensor.FromArray(input.Ids, t));                // [T, hidden]
        Record(Text + ".embed_tokens", embeds.Unsqueeze(0));
        if (input.PixelValues is not null)
            embeds = Scatter(embeds, input.Ids, _config.ImageTokenId, Visual.Forward(input.PixelValues, input.ImageGrids), "image");
        if (input.PixelValuesVideos is not null)
            embeds = Scatter(embeds, input.Ids, _config.VideoTokenId, Visual.Forward(input.PixelValuesVideos, input.VideoGrids), "video");
        // position_ids, rope_deltas = self.get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw)
        var (positions, delta) = Qwen2VlRope.RopeIndex(input.Ids, _config, input.ImageGrids, input.VideoGrids);
        RopeDelta = delta;
        return Decoder(embeds, positions, logitsToKeep);
    }

    /// <summary>One decode step for a token: position = cache length + rope_delta on all 3 streams. Logits [1, vocab].</summary>
    public Tensor? Step(long token)
    {
        // inputs_embeds = self.get_input_embeddings()(input_ids): recorded at every decode step as at the prefill
        var embeds = _embed.Forward(Tensor.FromArray([token], 1));                  // [1, hidden]
        // delta = cache_position[0] + self.rope_deltas; position_ids = arange(seq_length) + delta (all 3 streams)
        Record(Text + ".embed_tokens", embeds.Unsqueeze(0));
        return Decoder(embeds, Qwen2VlRope.Sequential(_caches[0].Length + (_options.DecodeRopeDeltaIgnored ? 0 : RopeDelta), 1));
    }

    // inputs_embeds.masked_scatter(mask, features): the placeholder rows, in order, take the features' rows.
    private static Tensor Scatter(Tensor embeds, long[] ids, int tokenId, Tensor features, string what)
    {
        var rows = Enumerable.Range(0, ids.Length).Where(i => ids[i] == tokenId).ToArray();
        if (rows.Length != features.Shape[0])
            throw new ArgumentException($"{char.ToUpperInvariant(what[0])}{what[1..]} features and {what} tokens do not match, tokens: {rows.Length}, features: {features.Shape[0]}");
        var merged = embeds.Clone();
        var f = features.To(embeds.DType);
        for (int j = 0; j < rows.Length; j++) merged.Select(0, rows[j]).CopyFrom(f.Select(0, j));
        return merged;
    }

    private Tensor Decoder(Tensor embeds, long[][] positions, int logitsToKeep = 0)
    {
        var (h, padded) = SequenceParallelChunk(embeds, ref positions);               // [T, hidden], or [L, hidden] under SP
        var (cos, sin) = Qwen2VlRope.MultimodalCosSin(_invFreq, positions, _config.MropeSection, DType); // [1, Tp, head_dim]
        return Decoder(h, cos, sin, embeds.Shape[0], padded, logitsToKeep);
    }

    // The decoder over this rank's rows h with their cos/sin; t real tokens (padded: SP rows to gather at the end).
    private Tensor Decoder(Tensor h, Tensor cos, Tensor sin, int t, bool padded = false, int logitsToKeep = 0)
    {
        for (int i = 0; i < Layers.Count; i++)
        {
            var layer = Layers[i];
            try
            {
                h = layer.Forward(h, cos, sin, _caches[i], t);
            }
            catch (Exception e) when (e is not ModuleFailedException and not CollectiveException { Failure: CollectiveFailure.PeerFailed })
            {
                throw new ModuleFailedException(layer.Prefix, _ctx.WorldRank, e);
            }
        }
        // hidden_states = self.norm(hidden_states); logits = self.lm_head(hidden_states)
        var final = Norms.RmsNorm(h, _norm, _config.RmsNormEps, RmsNormKind.Llama);
        if (padded) final = _ctx.Tp.AllGather(final, 0).Narrow(0, 0, t);            // [T, hidden]
        Record(Text + ".norm", final.Unsqueeze(0));
        if (logitsToKeep > 0) final = final.Narrow(0, t - logitsToKeep, logitsToKeep);  // [keep, hidden]
        var logits = _lmHead.Forward(final);                                          // [T, vocab]
        Record("lm_head", logits.Unsqueeze(0));
        return logits;
    }

    /// <summary>
    /// Under SP: tokens padded to a multiple of tp (zero embeddings, positions continuing past the last) and this rank's
    /// chunk of rows [rank*L, (rank+1)*L). Without SP the embeddings and positions as they are.
    /// </summary>
    private (Tensor Local, bool Padded) SequenceParallelChunk(Tensor embeds, ref long[][] positions)
    {
        if (!_ctx.SequenceParallel) return (embeds, false);
        int t = embeds.Shape[0], tp = _ctx.TpSize, padded = (t + tp - 1) / tp * tp, l = padded / tp;
        var full = Tensor.ZerosLike(embeds, embeds.DType, padded, embeds.Shape[1]);
        full.Narrow(0, 0, t).CopyFrom(embeds);
        long next = positions.Max(p => p[^1]) + 1;
        positions = positions.Select(p => p.Concat(Enumerable.Range(0, padded - t).Select(i => next + i)).ToArray()).ToArray();
        return (full.Narrow(0, _ctx.TpRank * l, l), true);
    }

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value, ShardSpec.Whole);
    }

    /// <summary>
    /// Greedy decoding of maxNewTokens after the prompt through <see cref="DecodeLoop"/>. Every rank calls it and computes
    /// the same tokens.
    /// </summary>
    /// <param name="afterPrefill">Called after the prompt's forward.</param>
    /// <param name="forced">Teacher forcing (<see cref="DecodeRequest.Forced"/>); null: free-running.</param>
    /// <param name="prefillLogitsToKeep"><see cref="DecodeRequest.PrefillLogitsToKeep"/>: 0 where the prefill's lm_head is captured whole.</param>
    public Generation Generate(Qwen2VlInput input, int maxNewTokens, int topK, Action? afterPrefill = null, IReadOnlyList<long>? forced = null,
        int prefillLogitsToKeep = 1)
    {
        var request = new DecodeRequest(maxNewTokens, topK) { Forced = forced, PrefillLogitsToKeep = prefillLogitsToKeep };
        return DecodeLoop.Run(this, input.Ids.Length, () =>
        {
            var logits = Prefill(input, request.PrefillLogitsToKeep);
            afterPrefill?.Invoke();
            return logits;
        }, request);
    }
}
