using Harness.Engine.Capture;
using Harness.Engine.Cuda;
using Harness.Engine.Models.Common;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// LlamaForCausalLM on one rank of a TP x PP layout (module names as HF's: model.embed_tokens, model.layers.N,
/// model.norm, lm_head). Pipeline stage s owns layers [s*n/pp, (s+1)*n/pp); the first stage embeds (input_ids) or
/// takes inputs_embeds, the last applies model.norm and lm_head. Between stages the (hidden, residual) pair travels
/// by send/recv in full [Tp, hidden]; under SP it is all-gathered over TP first and sliced rank-aware on arrival.
/// One sequence at a time (batch 1), with a KV cache per layer.
/// </summary>
public sealed class LlamaForCausalLM : ICheckpointModel, IGraphDecodable
{
    /// <summary>The tensors this model loads for a config (<see cref="LlamaTensors"/>), for <see cref="CheckpointValidator"/>.</summary>
    public static ModelTensors ExpectedTensors(HfConfig config) => LlamaTensors.Expected(config.Text);

    /// <summary>config.json model_type values this class loads.</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = ["llama"];

    private readonly TextConfig _config;
    private readonly ParallelContext _ctx;
    private readonly StepSink _sink;
    private readonly VocabParallelEmbedding? _embed;
    private readonly Tensor? _norm;
    private readonly ParallelLMHead? _lmHead;
    private readonly LlamaRotaryEmbedding _rotary;
    private KvCache[] _caches;

    public IReadOnlyList<LlamaDecoderLayer> Layers { get; }
    public int FirstLayer { get; }
    private readonly LlamaOptions _options;
    public DType DType { get; }
    /// <summary>Tokens processed so far (the next token's position).</summary>
    public int Position { get; private set; }

    /// <param name="options">Re-creates a known bug for a mutation check (<see cref="LlamaOptions"/>); null: none.</param>
    public LlamaForCausalLM(IWeightSource weights, TextConfig config, ParallelContext ctx, IActivationSink? sink = null, int maxPositions = 512,
        LlamaOptions? options = null)
    {
        _options = options ?? LlamaOptions.None;
        _config = config;
        _ctx = ctx;
        _sink = StepSink.Over(sink);
        if (config.NumHiddenLayers % ctx.PpSize != 0)
            throw new ArgumentException($"{config.NumHiddenLayers} layers cannot be split evenly over {ctx.PpSize} pipeline stages");
        int per = config.NumHiddenLayers / ctx.PpSize;
        FirstLayer = ctx.PpRank * per;
        Layers = Enumerable.Range(FirstLayer, per)
            .Select(i => new LlamaDecoderLayer(weights, $"model.layers.{i}", config, ctx, _sink, _options)).ToList();
        var embedWeight = weights.Get("model.embed_tokens.weight");
        DType = embedWeight.DType;
        _embed = new VocabParallelEmbedding(embedWeight, ctx.Tp, "model.embed_tokens"); // every stage: decode steps embed ids
        if (ctx.IsLastStage)
        {
            _norm = weights.Get("model.norm.weight");
            var head = weights.Contains("lm_head.weight") ? weights.Get("lm_head.weight")
                : config.TieWordEmbeddings ? embedWeight
                : throw new KeyNotFoundException("lm_head.weight is missing and tie_word_embeddings is false");
            _lmHead = new ParallelLMHead(head, ctx.Tp);
        }
        _rotary = new LlamaRotaryEmbedding(config.Rope, config.HeadDim);
        if (Cuda.CudaTensors.DeviceOf(embedWeight) is null)                               // the host: reusable buffers for the glue between linear layers
            _workspace = new DecoderWorkspace { LinearOutputs = ctx.TpSize == 1 && ctx.PpSize == 1 && !ctx.SequenceParallel };
        _caches = [];
        Allocate(maxPositions);
    }

    // KV caches for `positions` positions (the SP padding's tp rows beyond) and the cos/sin tables: on the host every
    // position's cos/sin once (each position's values are computed on their own, so a slice of the table equals the
    // per-step computation); on a GPU the same tables uploaded once (no per-step upload; a graph step reads rows at the
    // device's position).
    private void Allocate(int positions)
    {
        var device = Device;
        _caches = Layers.Select(l => new KvCache(l.SelfAttn.LocalKvHeads, _config.HeadDim, positions + _ctx.TpSize, DType, device)
            { DevicePosition = _deviceStep?.Position }).ToArray();                        // weights on a GPU: the cache too
        var (cos, sin) = _rotary.Forward(Tensor.Arange(positions + 2 * _ctx.TpSize), DType);   // [1, P, head_dim]
        if (device is null) (_cosTable, _sinTable) = (cos, sin);
        else
        {
            _cosDevice = cos.Select(0, 0).ToDevice(device);                               // [P, head_dim]
            _sinDevice = sin.Select(0, 0).ToDevice(device);
        }
    }

    /// <summary>
    /// <see cref="IDecoder.StartSequence"/>: forgets the sequence and sizes the KV caches (and cos/sin tables) for
    /// <paramref name="positions"/> positions when they hold fewer; more than max_position_embeddings is a named error.
    /// </summary>
    public void StartSequence(int positions)
    {
        DecodeLoop.CheckPositions(positions, () => _config.MaxPositionEmbeddings);
        if (positions + _ctx.TpSize > CacheCapacity) Allocate(positions);
        Reset();
    }

    /// <summary>One decode step (<see cref="IDecoder.Step"/>): logits [1, vocab] on the last stage.</summary>
    public Tensor? Step(long token) => Forward(_ctx.IsFirstStage ? Tensor.FromArray([token], 1) : null, 1, null, 1,
        rotaryOffset: _options.DecodePositionOffset);

    /// <summary>The sink this model's modules record through (<see cref="IDecoder.Sink"/>).</summary>
    public StepSink Sink => _sink;

    private Tensor? _cosTable, _sinTable;
    private Tensor? _cosDevice, _sinDevice;

    /// <summary>
    /// A graph step's state on the device (<see cref="CudaGraphDecoder"/>): the int32 position every kernel reads, and
    /// a scratch int the unchecked embedding writes to. Null: positions come from the host.
    /// </summary>
    public DeviceStep? DeviceStep
    {
        get => _deviceStep;
        set
        {
            _deviceStep = value;
            foreach (var c in _caches) c.DevicePosition = value?.Position;
        }
    }
    private DeviceStep? _deviceStep;

    /// <summary><see cref="IGraphDecodable.DeviceForward"/>: the step of a device id at the device position.</summary>
    public Tensor DeviceForward(Tensor id) => Forward(id, 1)!;

    /// <summary><see cref="IGraphDecodable.GraphUnsupported"/>: every one-rank Llama decodes from device state.</summary>
    public string? GraphUnsupported => null;

    /// <summary><see cref="IGraphDecodable.Rewind"/>: <see cref="Reset"/> at a position.</summary>
    public void Rewind(int position) => Reset(position);

    /// <summary>Forgets the sequence (KV cache and position), or rewinds to <paramref name="position"/>: the weights stay.</summary>
    public void Reset(int position = 0)
    {
        foreach (var c in _caches) c.Reset(position);
        Position = position;
    }

    /// <summary>The device of the model's weights, or null on the host.</summary>
    public Cuda.CudaDevice? Device => Cuda.CudaTensors.DeviceOf(_embed!.LocalWeight);

    /// <summary>Positions the KV cache holds (a decode past it fails).</summary>
    public int CacheCapacity => _caches.Length > 0 ? _caches[0].Capacity : int.MaxValue;

    /// <summary>The pipeline and tensor layout (graph decoding needs one rank).</summary>
    public ParallelContext Context => _ctx;
    private readonly DecoderWorkspace? _workspace;

    // The residual stream may be updated in place when this forward owns it: one rank and no pipeline hand-over (a
    // tensor sent to another stage, or an SP slice of the embeddings, is left alone).
    private bool ResidualInPlace => _workspace is not null && _ctx.PpSize == 1 && !_ctx.SequenceParallel;

    /// <summary>
    /// One forward step at the cache's current position. input: ids [tokens] (int64) or embeddings [tokens, hidden]
    /// (prompt embeds; first stage only, other stages pass null). Returns logits [tokens, vocab] on the last stage,
    /// null on the others.
    /// </summary>
    /// <param name="logits">A buffer for [tokens, vocab] ([logitsToKeep, vocab] when that is set) of the model's dtype that
    /// the logits are written into (at TP=1; ignored otherwise), so a decode loop that passes one allocates no tensor
    /// storage; null: fresh logits.</param>
    /// <param name="logitsToKeep">HF's <c>logits_to_keep</c>: 0 keeps every row; n &gt; 0 runs lm_head on the last n tokens
    /// only and returns [n, vocab] (generation's prefill needs the last row: lm_head on a 512-token prompt of a 155M
    /// Llama is a fifth of the forward).</param>
    public Tensor? Forward(Tensor? input, int tokens, Tensor? logits = null, int logitsToKeep = 0) =>
        Forward(input, tokens, logits, logitsToKeep, rotaryOffset: 0);

    // rotaryOffset: added to the rotary positions of this forward's tokens (LlamaOptions.DecodePositionOffset, a decode
    // step's fault; 0 otherwise).
    private Tensor? Forward(Tensor? input, int tokens, Tensor? logits, int logitsToKeep, int rotaryOffset)
    {
        if (logitsToKeep < 0 || logitsToKeep > tokens)
            throw new ArgumentOutOfRangeException(nameof(logitsToKeep), $"logits_to_keep {logitsToKeep} must be 0 (all) or 1..{tokens} (the tokens of this step)");
        int tp = _ctx.TpSize;
        int padded = _ctx.SequenceParallel ? (tokens + tp - 1) / tp * tp : tokens;    // Tp
        int start = Position;
        Position += tokens;
        var (cos, sin) = CosSin(start + rotaryOffset, padded);                           // [1, Tp, head_dim]

        Tensor hidden;
        Tensor? residual = null;
        if (_ctx.IsFirstStage)
        {
            if (input is null) throw new ArgumentNullException(nameof(input), "the first pipeline stage needs the input");
            hidden = _deviceStep is { } step && Cuda.CudaTensors.DeviceOf(input) is not null && padded == tokens         // a graph step: ids already on the device
                ? Cuda.CudaDecodeOps.EmbeddingUnchecked(_embed!.LocalWeight, input.Reshape(-1), step.Scratch)
                : Embed(input, tokens, padded);                                          // [Tp, hidden]
            if (Device is { } gpu) hidden = hidden.ToDevice(gpu);                         // prompt embeds: onto the model's GPU
        }
        else
        {
            int src = _ctx.PpRank - 1;
            hidden = _ctx.Pp.Recv(src);                                                  // [Tp, hidden]
            residual = _ctx.Pp.Recv(src);
            if (_ctx.SequenceParallel)
            {
                int l = padded / tp;
                try
                {
                    // narrowed into locals first: the message names what was received, not a half-narrowed pair
                    var hiddenRows = hidden.Narrow(0, _ctx.TpRank * l, l);               // this rank's tokens
                    var residualRows = residual.Narrow(0, _ctx.TpRank * l, l);
                    (hidden, residual) = (hiddenRows, residualRows);
                }
                catch (ArgumentException e)
                {
                    throw new ModuleFailedException(Layers[0].Prefix, _ctx.WorldRank, new ArgumentException(
                        $"the (hidden, residual) received from pipeline stage {src} are {Shape.Format(hidden.Shape)} and " +
                        $"{Shape.Format(residual.Shape)}; this stage needs all {padded} tokens to take rows [{_ctx.TpRank * l}, {(_ctx.TpRank + 1) * l}): {e.Message}", e));
                }
            }
        }

        foreach (var (layer, i) in Layers.Select((l, i) => (l, i)))
        {
            try
            {
                (hidden, residual) = layer.Forward(hidden, residual, cos, sin, _caches[i], tokens, _workspace, ResidualInPlace);
            }
            catch (Exception e) when (e is not ModuleFailedException and not CollectiveException { Failure: CollectiveFailure.PeerFailed })
            {   // a rank released because another failed is not where the run broke: leave it unattributed
                throw new ModuleFailedException(layer.Prefix, _ctx.WorldRank, e);
            }
        }

        if (!_ctx.IsLastStage)
        {
            if (_ctx.SequenceParallel)
            {
                hidden = _ctx.Tp.AllGather(hidden, 0);                                   // [Tp, hidden]
                residual = _options.SpPpResidualSliced
                    ? residual!                                                          // the bug: this rank's rows only
                    : _ctx.Tp.AllGather(residual!, 0);
            }
            _ctx.Pp.Send(hidden, _ctx.PpRank + 1);
            _ctx.Pp.Send(residual!, _ctx.PpRank + 1);
            return null;
        }

        long t0 = LlamaProfile.Now();
        var final = FinalNorm(hidden, residual!);
        LlamaProfile.Add("model.norm", t0);
        if (_ctx.SequenceParallel) final = _ctx.Tp.AllGather(final, 0);                 // [Tp, hidden]
        final = final.Narrow(0, 0, tokens);                                             // [T, hidden]
        Record("model.norm", final);
        if (logitsToKeep > 0) final = final.Narrow(0, tokens - logitsToKeep, logitsToKeep); // [keep, hidden]
        t0 = LlamaProfile.Now();
        var result = _lmHead!.Forward(final, logits);                                  // [T, vocab]
        LlamaProfile.Add("lm_head", t0);
        Record("lm_head", result);
        return result;
    }

    // cos/sin [1, Tp, head_dim] of positions start..: slices of the tables (the host's, or the GPU's, read at the device's
    // position in a graph step); computed per step past them.
    private (Tensor Cos, Tensor Sin) CosSin(int start, int padded)
    {
        if (_cosDevice is not null && _deviceStep is { } step)
            return Cuda.CudaDecodeOps.RowsAt(_cosDevice, _sinDevice!, step.Position, padded);
        if (_cosDevice is not null && start + padded <= _cosDevice.Size(0))
            return (_cosDevice.Narrow(0, start, padded).Unsqueeze(0), _sinDevice!.Narrow(0, start, padded).Unsqueeze(0));
        if (_cosTable is not null && start + padded <= _cosTable.Shape[1])
            return (_cosTable.Narrow(1, start, padded), _sinTable!.Narrow(1, start, padded));
        var positions = Tensor.Arange(padded);
        for (int i = 0; i < padded; i++) positions.Set(start + i, i);
        var (cos, sin) = _rotary.Forward(positions, DType);
        if (Device is { } gpu)                                                           // past the tables: one upload per step
            (cos, sin) = (cos.ToDevice(gpu), sin.ToDevice(gpu));
        return (cos, sin);
    }

    // model.norm(hidden + residual): one pass on the host (ResidualNorm: the same roundings as the two ops); a model on a
    // GPU (no workspace) runs the two ops
    private Tensor FinalNorm(Tensor hidden, Tensor residual)
    {
        double eps = _config.NormEps ?? 1e-6;
        if (_workspace is null) return Norms.RmsNorm(Elementwise.Add(hidden, residual), _norm!, eps, RmsNormKind.Llama);
        _finalSlot ??= LlamaDecoderLayer.Slot(_workspace, DecoderWorkspace.Final);       // made once: a decode step allocates no delegate
        return ResidualNorm.AddRmsNorm(hidden, residual, _norm!, eps, ResidualInPlace, _finalSlot).Normed;
    }
    private ResidualNorm.Buffer? _finalSlot;

    private Tensor Embed(Tensor input, int tokens, int padded)
    {
        if (input.DType.IsFloatingPoint())
        {
            if (input.Rank != 2 || input.Shape[0] != tokens || input.Shape[1] != _config.HiddenSize)
                throw new ArgumentException($"inputs_embeds must be [{tokens}, {_config.HiddenSize}], got {Shape.Format(input.Shape)}");
            var embeds = Tensor.Zeros(DType, padded, _config.HiddenSize);               // padding rows stay zero
            embeds.Narrow(0, 0, tokens).CopyFrom(input);
            return embeds;
        }
        if (ResidualInPlace && _ctx.TpSize == 1 && padded == tokens && input.IsContiguous && input.DType == DType.Int64)
        {   // one rank on the host: rows of the table copied into the residual stream's buffer (a plain lookup)
            var table = _embed!.LocalWeight;
            var rows = _workspace!.Get(DecoderWorkspace.Residual, table.DType, tokens, _config.HiddenSize); // [T, hidden]
            var idSpan = input.Span<long>();
            int width = _config.HiddenSize, es = table.DType.Size();
            var dst = rows.Storage.Bytes;
            for (int i = 0; i < tokens; i++)
            {
                long id = idSpan[i];
                if (id < 0 || id >= table.Shape[0])
                    throw new ArgumentException($"input id {id} at position {i} is outside the vocabulary [0, {table.Shape[0]})");
                // 64-bit byte offset: a mapped table may pass 2 GiB (the row is read in place, nothing else is touched)
                table.Storage.Span((table.Offset + id * table.Stride(0)) * es, width * es).CopyTo(dst.Slice((rows.Offset + i * width) * es, width * es));
            }
            Record("model.embed_tokens", rows);
            return rows;
        }
        var ids = Tensor.Zeros(DType.Int64, padded);                                     // padding id 0
        ids.Narrow(0, 0, tokens).CopyFrom(input.Reshape(-1));
        var h = _embed!.Forward(ids);                                                    // [Tp, hidden]
        Record("model.embed_tokens", h.Narrow(0, 0, tokens));
        return h;
    }

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value.Unsqueeze(0), ShardSpec.Whole);
    }

    /// <summary>
    /// Greedy decoding of maxNewTokens after a prompt (ids [T] or embeds [T, hidden]) through <see cref="DecodeLoop"/>: the
    /// prompt's forward keeps the last token's logits (logits_to_keep=1). Every rank of the layout calls it.
    /// </summary>
    /// <param name="forced">Teacher forcing (<see cref="DecodeRequest.Forced"/>); null: free-running.</param>
    public Generation Generate(Tensor prompt, int maxNewTokens, int topK, IReadOnlyList<long>? forced = null) =>
        Generate(prompt, new DecodeRequest(maxNewTokens, topK) { Forced = forced });

    /// <summary>Greedy decoding of a request (<see cref="DecodeRequest"/>) after a prompt.</summary>
    public Generation Generate(Tensor prompt, DecodeRequest request)
    {
        int promptTokens = prompt.Shape[0];
        return DecodeLoop.Run(this, promptTokens, () => Forward(_ctx.IsFirstStage ? prompt : null, promptTokens, logitsToKeep: request.PrefillLogitsToKeep),
            request);
    }
}
