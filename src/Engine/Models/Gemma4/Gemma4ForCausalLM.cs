using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Cuda;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4;

/// <summary>Soft tokens of one modality for one sequence: [n, hidden] in text space, for the rows whose id is TokenId.</summary>
public sealed record Gemma4SoftTokens(string Modality, long TokenId, Tensor Embeddings);

/// <summary>One sequence's decoding state: a KV cache per layer that owns one (KV-shared layers read their source's).</summary>
public sealed class Gemma4Sequence
{
    internal KvCache?[] Caches { get; }
    /// <summary>Tokens processed so far (the next token's position).</summary>
    public int Position { get; internal set; }

    internal Gemma4Sequence(KvCache?[] caches) => Caches = caches;

    /// <summary>Positions the caches hold.</summary>
    public int Capacity => Caches.FirstOrDefault(c => c is not null)?.Capacity ?? 0;

    /// <summary>Rewinds (or advances) every cache's length and the position to <paramref name="position"/> (0: a new
    /// sequence in the same caches).</summary>
    public void Rewind(int position)
    {
        foreach (var c in Caches) c?.Reset(position);
        Position = position;
    }

    /// <summary>While set, the caches append and attend at the device position (a graph step).</summary>
    internal void SetDevicePosition(Tensor? position)
    {
        foreach (var c in Caches) if (c is not null) c.DevicePosition = position;
    }
}

/// <summary>
/// Gemma4ForCausalLM (and the text half of Gemma4ForConditionalGeneration: the same module tree under
/// model.language_model) on one tensor-parallel rank. Gemma4TextModel.forward, top to bottom:
/// <code>
///   h   = embed_tokens(ids) * sqrt(hidden)                              (the scale rounded to the dtype)
///   ple = (norm(reshape(per_layer_model_projection(h) * hidden^-0.5)) + embed_tokens_per_layer(ids) * sqrt(P)) * 2^-0.5
///   cos, sin per layer type: default RoPE on sliding layers (head_dim), proportional on full ones (global_head_dim,
///            frequencies past partial_rotary_factor * Dg/2 are zero, then / factor)
///   for each layer i: h = layer_i(h, ple[:, i], ...)
///   h = norm(h); logits = lm_head(h) (tied to embed_tokens); with final_logit_softcapping c: tanh(logits / c) * c
/// </code>
/// Several sequences can run in one forward: their rows are stacked for every row-wise op (embeddings, norms,
/// linears, MLP, router, experts, lm_head) and only attention splits them, each against its own cache.
/// </summary>
public sealed class Gemma4ForCausalLM : ICheckpointModel
{
    /// <summary>config.json model_type values this class loads: gemma4_text, and gemma4's text decoder (model.language_model).</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = ["gemma4", "gemma4_text"];

    /// <summary>The tensors this model loads for a config (<see cref="Gemma4Tensors"/>), for <see cref="CheckpointValidator"/>.</summary>
    public static ModelTensors ExpectedTensors(HfConfig config) => Gemma4Tensors.Expected(Gemma4TextConfig.From(config));

    private readonly Gemma4TextConfig _config;
    private readonly ParallelContext _ctx;
    private readonly StepSink _sink;
    private readonly VocabParallelEmbedding _embed;
    private readonly Tensor? _embedPerLayer, _pleNorm;
    private readonly Layers.Linear? _pleProjection;
    private readonly Tensor _norm;
    private readonly ParallelLMHead _lmHead;
    private readonly Dictionary<string, Tensor> _invFreq = new();
    private readonly int _maxPositions;

    /// <summary>"model." (Gemma4ForCausalLM) or "model.language_model." (Gemma4ForConditionalGeneration).</summary>
    public string ModelPrefix { get; }
    public IReadOnlyList<Gemma4DecoderLayer> Layers { get; }
    public DType DType { get; }
    public Gemma4TextConfig Config => _config;

    public Gemma4ForCausalLM(IWeightSource weights, Gemma4TextConfig config, ParallelContext ctx, IActivationSink? sink = null,
        Gemma4Options? options = null, string? modelPrefix = null, int maxPositions = 256)
    {
        _config = config;
        _ctx = ctx;
        _sink = StepSink.Over(sink);
        _maxPositions = maxPositions;
        options ??= Gemma4Options.Default;
        ModelPrefix = modelPrefix ?? (weights.Contains("model.language_model.embed_tokens.weight") ? "model.language_model." : "model.");
        string p = ModelPrefix;
        var embedWeight = weights.Get(p + "embed_tokens.weight");
        DType = embedWeight.DType;
        _embed = new VocabParallelEmbedding(embedWeight, ctx.Tp, p + "embed_tokens");
        if (config.HiddenSizePerLayerInput > 0)
        {
            _embedPerLayer = weights.Get(p + "embed_tokens_per_layer.weight");            // [V_ple, L * P], replicated
            _pleProjection = new Layers.Linear(weights.Get(p + "per_layer_model_projection.weight"));
            _pleNorm = weights.Get(p + "per_layer_projection_norm.weight");
        }
        Layers = Enumerable.Range(0, config.NumHiddenLayers)
            .Select(i => new Gemma4DecoderLayer(weights, $"{p}layers.{i}", config, i, ctx, _sink, options)).ToList();
        _norm = weights.Get(p + "norm.weight");
        var head = weights.Contains("lm_head.weight") ? weights.Get("lm_head.weight")
            : config.TieWordEmbeddings ? embedWeight
            : throw new KeyNotFoundException("lm_head.weight is missing and tie_word_embeddings is false");
        _lmHead = new ParallelLMHead(head, ctx.Tp);
        foreach (var type in config.LayerTypes.Distinct()) _invFreq[type] = InvFreq(config, type);
    }

    /// <summary>
    /// Loads from a model folder (config.json + safetensors): gemma4_text or gemma4 (text_config). The weights must outlive
    /// the model (the caller keeps the checkpoint open).
    /// </summary>
    public static Gemma4TextConfig LoadConfig(string dir) => Gemma4TextConfig.From(HfConfig.Load(Path.Combine(dir, "config.json")));

    /// <summary>The inv_freq of a layer type: "default" over head_dim, "proportional" over global_head_dim.</summary>
    public static Tensor InvFreq(Gemma4TextConfig config, string layerType)
    {
        var rope = config.Rope[layerType];
        if (rope.RopeType == "default") return Rotary.InvFreq(rope.Theta, config.HeadDim);
        // _compute_proportional_rope_parameters: n = int(partial * Dg // 2) rotated angles, zeros for the other Dg/2 - n, / factor
        int dg = config.GlobalHeadDim, n = (int)Math.Floor(rope.PartialRotaryFactor * dg / 2);
        var inv = new float[dg / 2];
        float b = (float)rope.Theta;
        for (int i = 0; i < n; i++) inv[i] = 1f / (float)Math.Pow(b, (float)(2 * i) / dg);
        for (int i = 0; i < inv.Length; i++) inv[i] /= (float)rope.Factor;
        return Tensor.FromArray(inv, inv.Length);
    }

    /// <summary>The layout.</summary>
    public ParallelContext Context => _ctx;

    /// <summary>The device of the weights, or null on the host.</summary>
    public Cuda.CudaDevice? Device => Cuda.CudaTensors.DeviceOf(_embed.LocalWeight);

    /// <summary>Why a step cannot run from device state, or null. The MoE block's one-token step routes on the device
    /// (<see cref="Gemma4Experts.ForwardIndexed"/>), so it no longer stands in the way.</summary>
    public string? GraphUnsupported => _ctx.TpSize != 1 ? "Gemma4 graph steps run one rank" : null;

    private readonly Dictionary<string, (Tensor Cos, Tensor Sin)> _ropeTables = new();

    /// <summary>Every position's cos/sin per layer type on the device, for <paramref name="positions"/> positions (a
    /// graph step reads rows at the device position; each row is computed on its own, so it equals the step's own).
    /// Reallocated only to grow.</summary>
    internal void EnsureRopeTables(int positions)
    {
        var device = Cuda.CudaTensors.DeviceOf(_embed.LocalWeight);
        if (device is null || _ropeTables.Count > 0 && _ropeTables.Values.First().Cos.Size(0) >= positions) return;
        foreach (var (type, inv) in _invFreq)
        {
            var (cos, sin) = Rotary.CosSin(inv, Tensor.Arange(positions).Unsqueeze(0), DType);     // [1, P, hd of the type]
            _ropeTables[type] = (cos.Select(0, 0).ToDevice(device), sin.Select(0, 0).ToDevice(device));
        }
    }

    /// <summary>
    /// One graph decode step of one sequence (<see cref="Gemma4TextDecoder"/>): the token whose id lives on the device
    /// ([1] int64) at the device position of <paramref name="step"/>: placeholders -> pad by
    /// <see cref="Cuda.CudaDecodeOps.IdsMap"/>, the unchecked lookups, cos/sin rows at the position. A decoded vision
    /// placeholder is not a block of its own here (one token's block sees only itself: the causal rule). Logits [1, vocab].
    /// </summary>
    internal Tensor DeviceForward(Gemma4Sequence sequence, Tensor id, DeviceStep step)
    {
        if (GraphUnsupported is { } why) throw new NotSupportedException(why);
        var llmIds = id.Reshape(-1);                                                       // [1] int64 on the device
        foreach (var placeholder in _config.MultimodalTokenIds)                             // where(multimodal_mask, pad, ids)
            llmIds = Cuda.CudaDecodeOps.IdsMap(llmIds, placeholder, placeholder + 1L, _config.PadTokenId, fillInside: true).Ids;
        var h = Elementwise.Mul(Cuda.CudaDecodeOps.EmbeddingUnchecked(_embed.LocalWeight, llmIds, step.Scratch), EmbedScale(_config.HiddenSize)); // [1, hidden]
        Record("embed_tokens", h);
        var ple = PerLayerInputs(llmIds, h, step.Scratch);                                 // [1, L, P] or null
        var rope = _ropeTables.ToDictionary(kv => kv.Key, kv => Cuda.CudaDecodeOps.RowsAt(kv.Value.Cos, kv.Value.Sin, step.Position, 1));   // [1, 1, hd]
        var spans = new List<(int Start, int Count, int Past)> { (0, 1, sequence.Position) };
        return Decoder([sequence], h, ple, rope, spans, null, logitsToKeep: 0)[0];
    }

    /// <summary>The sink this model's modules record through (the decode loop sets its step).</summary>
    public StepSink Sink => _sink;

    /// <summary>A fresh sequence (empty caches) with room for <paramref name="positions"/> positions (null: the
    /// constructor's maxPositions); more than max_position_embeddings is a named error.</summary>
    public Gemma4Sequence NewSequence(int? positions = null)
    {
        int capacity = positions ?? _maxPositions;
        DecodeLoop.CheckPositions(capacity, () => _config.MaxPositionEmbeddings);
        var caches = new KvCache?[Layers.Count];
        foreach (var layer in Layers)
            if (!layer.SelfAttn.IsKvShared)
                caches[layer.Index] = new KvCache(layer.SelfAttn.LocalKvHeads, layer.SelfAttn.HeadDim, capacity, DType,
                    Cuda.CudaTensors.DeviceOf(_embed.LocalWeight));      // weights on a GPU: the cache too
        return new Gemma4Sequence(caches);
    }

    /// <summary>One step of one sequence: ids [tokens] (int64) -> logits [tokens, vocab].</summary>
    public Tensor Forward(Gemma4Sequence sequence, Tensor ids) => Forward([sequence], [ids])[0];

    /// <summary>
    /// One step of several sequences at once: ids[s] [tokens_s] -> logits[s] [tokens_s, vocab]. Every row-wise op runs
    /// on the stacked rows [sum tokens_s, ...]; attention runs per sequence against its cache.
    /// </summary>
    public IReadOnlyList<Tensor> Forward(IReadOnlyList<Gemma4Sequence> sequences, IReadOnlyList<Tensor> ids) => Forward(sequences, ids, null);

    /// <summary>
    /// As above, with soft tokens (Gemma4Model.forward's merge): per sequence, embeddings already in text space
    /// ([n, hidden], the multimodal embedders' output) that replace, in order, the rows whose id is their placeholder id.
    /// Every multimodal placeholder id (image, video, audio) is replaced by pad_token_id before embed_tokens and
    /// embed_tokens_per_layer; the per-layer projection then sees the merged embeddings.
    /// </summary>
    /// <param name="logitsToKeep">HF's logits_to_keep: 0 runs lm_head on every row; n &gt; 0 on each sequence's last n rows
    /// only (generation's prefill), so each sequence's logits are [n, vocab].</param>
    public IReadOnlyList<Tensor> Forward(IReadOnlyList<Gemma4Sequence> sequences, IReadOnlyList<Tensor> ids,
        IReadOnlyList<IReadOnlyList<Gemma4SoftTokens>>? soft, int logitsToKeep = 0)
    {
        if (sequences.Count != ids.Count) throw new ArgumentException($"{sequences.Count} sequences but {ids.Count} inputs");
        var spans = new List<(int Start, int Count, int Past)>();
        var positions = new List<long>();
        int rows = 0;
        for (int s = 0; s < ids.Count; s++)
        {
            int t = ids[s].NumEl, past = sequences[s].Position;
            spans.Add((rows, t, past));
            for (int i = 0; i < t; i++) positions.Add(past + i);
            rows += t;
        }
        var allIds = Tensor.Cat(ids.Select(i => i.Reshape(-1)).ToList(), 0);             // [rows]
        var blocks = VisionBlocks(ids);
        var pos = Tensor.FromArray(positions.ToArray(), rows);

        // --- embeddings: llm_input_ids = where(multimodal_mask, pad, ids); h = embed_tokens(llm_input_ids) * embed_scale.to(dtype)
        var llmIds = ReplacePlaceholders(allIds);
        var h = Elementwise.Mul(_embed.Forward(llmIds), EmbedScale(_config.HiddenSize));  // [rows, hidden]
        Record("embed_tokens", h);
        if (soft is not null) h = MergeSoftTokens(h, allIds, spans, soft);                // inputs_embeds.masked_scatter(...)
        var ple = PerLayerInputs(llmIds, h);                                              // [rows, L, P] or null

        // --- RoPE per layer type: cos, sin [1, rows, head_dim of the type]
        var rope = _invFreq.ToDictionary(kv => kv.Key, kv => Rotary.CosSin(kv.Value, pos, DType));
        return Decoder(sequences, h, ple, rope, spans, blocks, logitsToKeep);
    }

    // The layers, norm, lm_head and soft cap over the stacked rows h [rows, hidden] with their per-layer inputs and each
    // layer type's cos/sin [1, rows, hd]: each sequence's logits.
    private IReadOnlyList<Tensor> Decoder(IReadOnlyList<Gemma4Sequence> sequences, Tensor h, Tensor? ple,
        Dictionary<string, (Tensor Cos, Tensor Sin)> rope, List<(int Start, int Count, int Past)> spans, IReadOnlyList<int[]?>? blocks, int logitsToKeep)
    {
        foreach (var layer in Layers)
        {
            var caches = sequences.Select(s => s.Caches[layer.SelfAttn.IsKvShared ? _config.KvSourceLayer(layer.Index) : layer.Index]!).ToList();
            var (cos, sin) = rope[layer.LayerType];
            try
            {
                h = layer.Forward(h, ple?.Select(1, layer.Index), cos, sin, caches, spans, blocks);   // shared layers read their source's cache
            }
            catch (Exception e) when (e is not ModuleFailedException and not CollectiveException { Failure: CollectiveFailure.PeerFailed })
            {
                throw new ModuleFailedException(layer.Prefix, _ctx.WorldRank, e);
            }
        }
        foreach (var (s, i) in sequences.Select((s, i) => (s, i))) s.Position += spans[i].Count;

        // --- final norm, lm_head, softcap
        h = Norms.RmsNorm(h, _norm, _config.RmsNormEps, RmsNormKind.GemmaScaled);
        Record("norm", h);
        if (logitsToKeep > 0)
        {   // each sequence's last rows: [sequences * keep, hidden]
            if (spans.Any(sp => sp.Count < logitsToKeep))
                throw new ArgumentOutOfRangeException(nameof(logitsToKeep), $"logits_to_keep {logitsToKeep} exceeds a sequence's {spans.Min(sp => sp.Count)} tokens");
            h = Tensor.Cat(spans.Select(sp => h.Narrow(0, sp.Start + sp.Count - logitsToKeep, logitsToKeep)).ToList(), 0);
            spans = spans.Select((sp, i) => (i * logitsToKeep, logitsToKeep, sp.Past)).ToList();
        }
        var logits = _lmHead.Forward(h);                                                  // [rows, vocab]
        Record("lm_head", logits, topLevel: true);
        if (_config.FinalLogitSoftcapping is double c)
            logits = Elementwise.Mul(Elementwise.Tanh(Elementwise.Div(logits, c)), c);   // tanh(logits / c) * c
        return spans.Select(sp => logits.Narrow(0, sp.Start, sp.Count)).ToList();
    }

    // use_bidirectional_attention="vision" (get_block_sequence_ids_for_mask): each contiguous run of image/video
    // placeholders in a prompt is one block (ids 0, 1, ...), text is -1; tokens of a block see each other both ways.
    // The engine reads the blocks from the placeholder ids where HF reads mm_token_type_ids (1, 2 at those tokens).
    private IReadOnlyList<int[]?>? VisionBlocks(IReadOnlyList<Tensor> ids)
    {
        if (_config.UseBidirectionalAttention != "vision" || _config.VisionTokenIds.Length == 0) return null;
        return ids.Select(t =>
        {
            var v = t.Reshape(-1).ToInt64Array();
            var b = new int[v.Length];
            int next = -1;
            for (int i = 0; i < v.Length; i++)
            {
                bool vision = Array.IndexOf(_config.VisionTokenIds, (int)v[i]) >= 0;
                if (vision && (i == 0 || b[i - 1] < 0)) next++;
                b[i] = vision ? next : -1;
            }
            return b.Any(x => x >= 0) ? b : null;
        }).ToList();
    }

    private Tensor ReplacePlaceholders(Tensor ids)
    {
        if (_config.MultimodalTokenIds.Length == 0) return ids;
        var v = ids.ToInt64Array();
        for (int i = 0; i < v.Length; i++)
            if (Array.IndexOf(_config.MultimodalTokenIds, (int)v[i]) >= 0) v[i] = _config.PadTokenId;
        return Tensor.FromArray(v, v.Length);
    }

    // masked_scatter: the placeholder rows of each sequence, in order, take the soft tokens' rows.
    private Tensor MergeSoftTokens(Tensor h, Tensor ids, IReadOnlyList<(int Start, int Count, int Past)> spans,
        IReadOnlyList<IReadOnlyList<Gemma4SoftTokens>> soft)
    {
        var merged = h.Clone();
        var v = ids.ToInt64Array();
        for (int s = 0; s < spans.Count && s < soft.Count; s++)
            foreach (var st in soft[s])
            {
                var rows = Enumerable.Range(spans[s].Start, spans[s].Count).Where(r => v[r] == st.TokenId).ToList();
                if (rows.Count != st.Embeddings.Shape[0])
                    throw new ArgumentException(
                        $"{st.Modality} features and {st.Modality} tokens do not match, tokens: {rows.Count} (id {st.TokenId}), features: {st.Embeddings.Shape[0]}");
                for (int i = 0; i < rows.Count; i++) merged.Narrow(0, rows[i], 1).CopyFrom(st.Embeddings.Narrow(0, i, 1).To(DType));
            }
        return merged;
    }

    // sqrt(width) rounded to the dtype (embed_scale.to(dtype)), as a host value: the same float32 product as a 0-dim
    // tensor of the dtype, with nothing uploaded (a graph step)
    private double EmbedScale(int width) => Tensor.Scalar(Math.Sqrt(width), DType).Item();

    // get_per_layer_inputs + project_per_layer_inputs: [rows, L, P]; device ids of a graph step with its scratch int
    private Tensor? PerLayerInputs(Tensor ids, Tensor h, Tensor? scratch = null)
    {
        if (_embedPerLayer is null) return null;
        int rows = h.Shape[0], l = _config.NumHiddenLayers, p = _config.HiddenSizePerLayerInput;
        var tok = Elementwise.Mul(scratch is null ? Embedding.Lookup(_embedPerLayer, ids) : Cuda.CudaDecodeOps.EmbeddingUnchecked(_embedPerLayer, ids, scratch),
            EmbedScale(p)).Reshape(rows, l, p);
        var ctx = Elementwise.Mul(_pleProjection!.Forward(h), Math.Pow(_config.HiddenSize, -0.5)).Reshape(rows, l, p);
        ctx = Norms.RmsNorm(ctx, _pleNorm, _config.RmsNormEps, RmsNormKind.GemmaScaled);
        return Elementwise.Mul(Elementwise.Add(ctx, tok), Math.Pow(2.0, -0.5));
    }

    private void Record(string module, Tensor value, bool topLevel = false)
    {
        string name = topLevel ? module : ModelPrefix + module;
        if (_sink.Wants(name)) _sink.Record(name, _ctx.WorldRank, value.Unsqueeze(0), ShardSpec.Whole);
    }

    /// <summary>Greedy decoding of maxNewTokens after a prompt [T] through <see cref="DecodeLoop"/>.</summary>
    /// <param name="forced">Teacher forcing (<see cref="DecodeRequest.Forced"/>); null: free-running.</param>
    public Generation Generate(Tensor prompt, int maxNewTokens, int topK, IReadOnlyList<long>? forced = null) =>
        Generate([prompt], maxNewTokens, topK, forced is null ? null : [forced])[0];

    /// <summary>Greedy decoding of several prompts together (rows stacked; see <see cref="Forward(IReadOnlyList{Gemma4Sequence}, IReadOnlyList{Tensor})"/>),
    /// each sequence's caches sized for its prompt and the new tokens.</summary>
    public IReadOnlyList<Generation> Generate(IReadOnlyList<Tensor> prompts, int maxNewTokens, int topK,
        IReadOnlyList<IReadOnlyList<long>?>? forced = null)
    {
        var seqs = prompts.Select(p => NewSequence(p.NumEl + maxNewTokens)).ToList();
        return DecodeLoop.Run(_ctx, [_sink], maxNewTokens, topK, forced,
            () => Forward(seqs, prompts, null, logitsToKeep: 1),
            next => Forward(seqs, next.Select(t => Tensor.FromArray([t], 1)).ToList()));
    }
}
