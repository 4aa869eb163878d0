using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// Gemma4MultimodalEmbedder: <c>embedding_projection(embedding_pre_projection_norm(x))</c>, the norm without scale (eps from
/// the tower's config), the projection [text_hidden, mm_hidden] without bias. Under TP a <see cref="RowParallelLinear"/>
/// fed the FULL-width soft tokens (input_is_parallel=False: each rank takes its slice, the partials are all-reduced).
/// </summary>
public sealed class Gemma4MultimodalEmbedder
{
    private readonly RowParallelLinear _projection;
    private readonly double _eps;
    private readonly int _rank;

    public string Prefix { get; }

    /// <param name="inputIsParallel">False (right: the input is full width); true re-creates the Gemma3n embedder bug.</param>
    public Gemma4MultimodalEmbedder(IWeightSource weights, string prefix, double eps, ParallelContext ctx, bool inputIsParallel = false)
    {
        Prefix = prefix;
        _rank = ctx.WorldRank;
        _projection = RowParallelLinear.Load(weights, prefix + ".embedding_projection", ctx.Tp, inputIsParallel, reduceResults: true);
        _eps = eps;
    }

    /// <summary>[..., mm_hidden] -> [..., text_hidden]</summary>
    public Tensor Forward(Tensor x)
    {
        var shape = x.ShapeArray;
        var normed = Norms.RmsNorm(x, null, _eps, RmsNormKind.GemmaNoScale).Reshape(-1, shape[^1]);   // [n, mm_hidden]
        Tensor y;
        try
        {
            y = _projection.Forward(normed);                                                         // [n, text_hidden]
        }
        catch (Exception e) when (e is not CollectiveException { Failure: CollectiveFailure.PeerFailed })
        {
            throw new ModuleFailedException(Prefix, _rank, e);
        }
        shape[^1] = y.Shape[1];
        return y.Reshape(shape);
    }
}

/// <summary>
/// The text side of Gemma4ForConditionalGeneration: the decoder under model.language_model, the multimodal embedders
/// (model.embed_vision, model.embed_audio) and the merge of Gemma4Model.forward. The towers' outputs come in as given
/// (by the reference today, as an engine receives encoder outputs): the vision tower's pooled soft tokens
/// [n_image, vision_hidden] and the audio tower's [batch, frames, output_proj_dims] with its valid-frame mask.
/// </summary>
public sealed class Gemma4ForConditionalGeneration
{
    private readonly ParallelContext _ctx;
    private readonly StepSink _sink;
    private readonly int? _imageTokenId, _audioTokenId, _videoTokenId;

    public Gemma4ForCausalLM LanguageModel { get; }
    public Gemma4MultimodalEmbedder? EmbedVision { get; }
    public Gemma4MultimodalEmbedder? EmbedAudio { get; }

    public Gemma4ForConditionalGeneration(IWeightSource weights, HfConfig config, ParallelContext ctx, IActivationSink? sink = null,
        Gemma4Options? options = null)
    {
        _ctx = ctx;
        _sink = StepSink.Over(sink);                                      // one step scope with the language model
        LanguageModel = new Gemma4ForCausalLM(weights, Gemma4TextConfig.From(config), ctx, _sink, options, "model.language_model.");
        _imageTokenId = Gemma4TextConfig.TokenId(config, "image_token_id");
        _audioTokenId = Gemma4TextConfig.TokenId(config, "audio_token_id");
        _videoTokenId = Gemma4TextConfig.TokenId(config, "video_token_id");
        if (config.Has("vision_config") && weights.Contains("model.embed_vision.embedding_projection.weight"))
            EmbedVision = new Gemma4MultimodalEmbedder(weights, "model.embed_vision", config.GetDouble("vision_config.rms_norm_eps", 1e-6), ctx,
                options?.EmbedderInputIsParallel ?? false);
        if (config.Has("audio_config") && weights.Contains("model.embed_audio.embedding_projection.weight"))
            EmbedAudio = new Gemma4MultimodalEmbedder(weights, "model.embed_audio", config.GetDouble("audio_config.rms_norm_eps", 1e-6), ctx,
                options?.EmbedderInputIsParallel ?? false);
    }

    /// <summary>The towers' outputs for one prompt (null: that modality is absent). <paramref name="Video"/>: the vision
    /// tower's soft tokens of a video's frames, frame after frame ([n_video, vision_hidden]; HF's get_video_features runs the
    /// tower on pixel_values_videos.flatten(0, 1)), scattered at video_token_id through the same embed_vision.</summary>
    public sealed record TowerOutputs(Tensor? Vision, Tensor? Audio, Tensor? AudioMask, Tensor? Video = null);

    /// <summary>The soft tokens in text space: embed_vision(vision), embed_audio(audio)[audio_mask].</summary>
    public IReadOnlyList<Gemma4SoftTokens> SoftTokens(TowerOutputs towers)
    {
        var list = new List<Gemma4SoftTokens>();
        if (towers.Vision is { } v)
        {
            var e = Embedder(EmbedVision, "vision").Forward(v);                      // [n_image, hidden]
            Record("model.embed_vision", e);
            list.Add(new Gemma4SoftTokens("image", Id(_imageTokenId, "image"), e));
        }
        if (towers.Video is { } video)
        {
            // video_features = self.embed_vision(inputs_embeds=last_hidden_state)   (get_video_features)
            var e = Embedder(EmbedVision, "vision").Forward(video);                  // [n_video, hidden]
            Record("model.embed_vision", e);
            list.Add(new Gemma4SoftTokens("video", Id(_videoTokenId, "video"), e));
        }
        if (towers.Audio is { } a)
        {
            var e = Embedder(EmbedAudio, "audio").Forward(a);                        // [batch, frames, hidden]
            Record("model.embed_audio", e);
            var flat = e.Reshape(-1, e.Shape[^1]);
            if (towers.AudioMask is { } m)                                            // audio_features[audio_mask]: valid frames only
            {
                var valid = m.Reshape(-1).ToInt64Array().Select((x, i) => (x, i)).Where(t => t.x != 0).Select(t => (long)t.i).ToArray();
                flat = flat.IndexSelect(0, Tensor.FromArray(valid, valid.Length));
            }
            list.Add(new Gemma4SoftTokens("audio", Id(_audioTokenId, "audio"), flat));
        }
        return list;
    }

    private static Gemma4MultimodalEmbedder Embedder(Gemma4MultimodalEmbedder? e, string what) =>
        e ?? throw new InvalidOperationException($"the checkpoint has no {what} embedder (model.embed_{what}) or no {what}_config");

    private static long Id(int? id, string what) => id ?? throw new InvalidOperationException($"config.json has no {what}_token_id");

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value, ShardSpec.Whole);
    }

    /// <summary>One forward of a prompt [T] with its soft tokens: logits [T, vocab].</summary>
    public Tensor Prefill(Tensor prompt, TowerOutputs towers) =>
        LanguageModel.Forward([LanguageModel.NewSequence()], [prompt], [SoftTokens(towers)])[0];

    /// <summary>Greedy decoding through <see cref="DecodeLoop"/>: the prompt with its soft tokens, then text tokens.</summary>
    /// <param name="prefillLogits">Handed the prompt's logits (the last row: logits_to_keep=1).</param>
    /// <param name="forced">Teacher forcing (<see cref="DecodeRequest.Forced"/>); null: free-running.</param>
    public Generation Generate(Tensor prompt, TowerOutputs towers, int maxNewTokens, int topK, Action<Tensor>? prefillLogits = null,
        IReadOnlyList<long>? forced = null)
    {
        var seq = LanguageModel.NewSequence(prompt.NumEl + maxNewTokens);
        return DecodeLoop.Run(_ctx, [_sink], maxNewTokens, topK, [forced], () =>
        {
            var logits = LanguageModel.Forward([seq], [prompt], [SoftTokens(towers)], logitsToKeep: 1)[0];
            prefillLogits?.Invoke(logits);
            return [logits];
        }, next => [LanguageModel.Forward(seq, Tensor.FromArray([next[0]], 1))])[0];
    }
}
