using Harness.Engine.Config;
using Harness.Engine.Cuda;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Models.Llama;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Bench;

/// <summary>
/// A family's text decoder opened from a checkpoint folder on one rank (on a GPU when given), as the one decode loop
/// drives it: the <see cref="IGraphDecodable"/> and the prompt's forward (ids [T] on a started sequence -> logits, the
/// last row the next token's). For graph decoding's GPU checks and `bench --device cuda`.
/// </summary>
public sealed class GraphModel : IDisposable
{
    private readonly Checkpoint _checkpoint;

    /// <summary>llama, gemma3n, gemma4 or qwen2_vl (the text decoder of each).</summary>
    public string Family { get; }
    public IGraphDecodable Model { get; }
    public int VocabSize { get; }
    /// <summary>The prompt's forward with logits_to_keep=1 (the model's sequence started).</summary>
    public Func<long[], Tensor> Prefill { get; }
    /// <summary>Hidden width and layers, for the bench's header.</summary>
    public string Shape { get; }

    private GraphModel(Checkpoint checkpoint, string family, IGraphDecodable model, int vocab, Func<long[], Tensor> prefill, string shape)
    {
        _checkpoint = checkpoint;
        Family = family;
        Model = model;
        VocabSize = vocab;
        Prefill = prefill;
        Shape = shape;
    }

    /// <summary>The families with a graph decoder (model_type of config.json, text or multimodal).</summary>
    public static readonly string[] Families = ["llama", "gemma3n", "gemma4", "qwen2_vl"];

    /// <summary>Opens <paramref name="dir"/> (config.json + safetensors) in <paramref name="dtype"/> (null: as stored), its
    /// weights on <paramref name="gpu"/> (null: the host), caches for <paramref name="positions"/> positions.</summary>
    public static GraphModel Open(string dir, CudaDevice? gpu, DType? dtype, int positions)
    {
        var hf = HfConfig.Load(Path.Combine(dir, "config.json"));
        var checkpoint = Checkpoint.Open(dir);
        try
        {
            IWeightSource weights = new CheckpointWeights(checkpoint);
            if (dtype is { } dt) weights = new CastWeights(weights, dt);
            if (gpu is not null) weights = new DeviceWeights(weights, gpu, keep: false);
            var ctx = ParallelContext.Single;
            switch (hf.ModelType)
            {
                case "llama":
                {
                    var m = new LlamaForCausalLM(weights, hf.Text, ctx, maxPositions: positions);
                    return new GraphModel(checkpoint, "llama", m, hf.Text.VocabSize, ids => m.Forward(Tensor.FromArray(ids, ids.Length), ids.Length, logitsToKeep: 1)!,
                        $"hidden {hf.Text.HiddenSize}, {hf.Text.NumHiddenLayers} layers");
                }
                case "gemma3n" or "gemma3n_text":
                {
                    var config = Gemma3nConfig.Load(Path.Combine(dir, "config.json"));
                    var m = new Gemma3nModel(weights, config, ctx, options: new Gemma3nOptions { MaxPositions = positions });
                    return new GraphModel(checkpoint, "gemma3n", m, config.Text.VocabSize, ids => m.Forward(new Gemma3nPrompt(Tensor.FromArray(ids, ids.Length)), logitsToKeep: 1),
                        $"hidden {config.Text.HiddenSize}, {config.Text.NumLayers} layers");
                }
                case "gemma4" or "gemma4_text":
                {
                    var config = Gemma4ForCausalLM.LoadConfig(dir);
                    var d = new Gemma4TextDecoder(new Gemma4ForCausalLM(weights, config, ctx, maxPositions: positions));
                    return new GraphModel(checkpoint, "gemma4", d, config.VocabSize, ids => d.Prefill(Tensor.FromArray(ids, ids.Length)),
                        $"hidden {config.HiddenSize}, {config.NumHiddenLayers} layers");
                }
                case "qwen2_vl":
                {
                    var config = Qwen2VlConfig.Load(Path.Combine(dir, "config.json"));
                    var m = new Qwen2VlForConditionalGeneration(weights, config, ctx, maxPositions: positions);
                    int textVocab = Math.Min(config.Text.VocabSize, Math.Min(config.ImageTokenId, Math.Min(config.VisionStartTokenId, config.VisionEndTokenId)));
                    return new GraphModel(checkpoint, "qwen2_vl", m, textVocab, ids => m.Prefill(new Qwen2VlInput(ids), logitsToKeep: 1),
                        $"hidden {config.Text.HiddenSize}, {config.Text.NumHiddenLayers} layers")
                    { ImagePrompt = text => MakeImagePrompt(m, config, text) };
                }
                default:
                    throw new NotSupportedException($"{Path.Combine(dir, "config.json")}: model_type '{hf.ModelType}' has no graph decoder (known: {string.Join(", ", Families)})");
            }
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Qwen2-VL only (else null): the text ids around one seeded random image of grid (1, 2m, 4m) patches (8 merged
    /// tokens: rope_deltas = 4 - 8 = -4), as (prompt tokens, its prefill). Decode positions are then cache length - 4.
    /// </summary>
    public Func<long[], (int Tokens, Func<Tensor> Prefill)>? ImagePrompt { get; private init; }

    private static (int, Func<Tensor>) MakeImagePrompt(Qwen2VlForConditionalGeneration m, Qwen2VlConfig config, long[] text)
    {
        int merge = config.SpatialMergeSize;
        var grid = new GridThw(1, 2 * merge, 4 * merge);
        var rng = new SplitMix64(7);
        var pixels = Tensor.FromArray(Enumerable.Range(0, grid.Patches * config.PatchVolume).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(),
            grid.Patches, config.PatchVolume);
        var ids = new List<long>(text.Take(2)) { config.VisionStartTokenId };
        ids.AddRange(Enumerable.Repeat((long)config.ImageTokenId, grid.MergedTokens(merge)));
        ids.Add(config.VisionEndTokenId);
        ids.AddRange(text.Skip(2));
        var input = new Qwen2VlInput(ids.ToArray()) { PixelValues = pixels, ImageGrids = [grid] };
        return (ids.Count, () => m.Prefill(input, logitsToKeep: 1));
    }

    /// <summary>Greedy decoding of <paramref name="ids"/> through the one decode loop, driven by <paramref name="decoder"/>
    /// (the model itself: the plain loop; a <see cref="CudaGraphDecoder"/> over it: the graph loop).</summary>
    public Generation Generate(IDecoder decoder, long[] ids, DecodeRequest request) =>
        DecodeLoop.Run(decoder, ids.Length, () => Prefill(ids), request);

    public void Dispose() => _checkpoint.Dispose();
}
