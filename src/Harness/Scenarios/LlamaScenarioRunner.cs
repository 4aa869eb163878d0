using System.Collections.Concurrent;
using System.Diagnostics;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Llama;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// Runs a <see cref="LlamaScenario"/>: HF builds the tiny Llama from its config and seed and saves it as safetensors;
/// HF runs the prompt with hooks on every compared module and greedy-decodes; the engine loads the same files on every
/// rank of the layout (ranks as threads), records the same modules (shards and token slices as they are), and decodes.
/// Then: layer by layer (first divergent module named), token by token. Reference results are cached per model, dtype,
/// input kind and prompt, so a suite of scenarios builds and runs HF once per variant.
/// </summary>
public sealed class LlamaScenarioRunner(ReferenceClient reference)
{
    public const int NewTokens = 8, TopK = 5;

    private sealed record ReferenceRun(IReadOnlyDictionary<string, Tensor> Captured, TokenSequence Tokens);

    private readonly ConcurrentDictionary<DType, Lazy<string>> _models = new();
    private readonly ConcurrentDictionary<(DType, InputKind, int), Lazy<ReferenceRun>> _runs = new();

    /// <summary>Timeout for one collective (a rank that never arrives fails the run after this).</summary>
    public TimeSpan CollectiveTimeout { get; init; } = TimeSpan.FromSeconds(60);

    public ScenarioResult Run(LlamaScenario scenario)
    {
        var sw = Stopwatch.StartNew();
        string dir = ModelDirectory(scenario.DType);
        var input = Prompt(scenario);
        var modules = TinyLlama.Modules(scenario.Input == InputKind.InputIds);
        var expected = _runs.GetOrAdd((scenario.DType, scenario.Input, scenario.PromptTokens),
            _ => new Lazy<ReferenceRun>(() => RunReference(dir, scenario.DType, input, modules))).Value;

        var capture = new ActivationCapture(modules);
        var sink = new CaptureSink(capture);
        var config = HfConfig.Load(Path.Combine(dir, "config.json")).Text;
        TokenSequence? engineTokens = null;
        string? error = null, failedModule = null;
        using (scenario.Fault is null ? null : Faults.Inject(scenario.Fault))
        {
            try
            {
                var generations = ThreadWorld.Run(scenario.WorldSize, rank => RunRank(rank, scenario, dir, config, input, sink), CollectiveTimeout);
                engineTokens = ToSequence(generations[0]);
            }
            catch (Exception e)
            {
                var module = FindModuleFailure(e);
                failedModule = module?.Module;
                error = (module is null ? e : (Exception)module).Message.Split('\n')[0];
            }
        }

        var policy = scenario.DType == DType.Float32 ? Tolerances.Float32Gemm : Tolerances.BFloat16Layer;
        var layers = LayerComparison.Run(expected.Captured, capture, modules, _ => policy);
        var tokens = engineTokens is null ? null : TokenComparison.Run(expected.Tokens, engineTokens,
            logprobTolerance: scenario.DType == DType.Float32 ? TokenComparison.DefaultLogprobTolerance : 5e-2);
        return new ScenarioResult(scenario, layers, tokens, error, failedModule, sw.Elapsed);
    }

    private static LlamaForCausalLM.Generation RunRank(int rank, LlamaScenario s, string dir, TextConfig config, Tensor input, IActivationSink sink)
    {
        var ctx = ThreadWorld.Layout(rank, s.Tp, s.Pp, s.Sp);
        using var checkpoint = Checkpoint.Open(dir);
        var weights = new CheckpointWeights(checkpoint);
        int tokens = input.Shape[0];
        new LlamaForCausalLM(weights, config, ctx, sink).Forward(ctx.IsFirstStage ? input : null, tokens);
        return new LlamaForCausalLM(weights, config, ctx).Generate(input, NewTokens, TopK);
    }

    /// <summary>The saved HF model for a dtype (built once per process).</summary>
    public string ModelDirectory(DType dtype) => _models.GetOrAdd(dtype, d => new Lazy<string>(() =>
    {
        var dir = reference.ScratchDirectory($"tiny-llama-{d.TorchName()}");
        reference.BuildModel(TinyLlama.Config(), TinyLlama.Seed, d, dir);
        return dir;
    })).Value;

    /// <summary>The prompt: seeded token ids [T] in [3, 200), or seeded unit-normal embeddings [T, hidden].</summary>
    public static Tensor Prompt(LlamaScenario s)
    {
        if (s.Input == InputKind.PromptEmbeds) return Tensor.Normal(s.DType, 77, 0, 1, s.PromptTokens, 64);
        var rng = new SplitMix64(99);
        return Tensor.FromArray(Enumerable.Range(0, s.PromptTokens).Select(_ => (long)(3 + rng.NextInt(197))).ToArray(), s.PromptTokens);
    }

    private ReferenceRun RunReference(string dir, DType dtype, Tensor input, IReadOnlyList<string> modules)
    {
        var batched = input.Unsqueeze(0); // [1, T] or [1, T, hidden]
        var forward = reference.Forward(dir, dtype, batched, modules);
        var gen = reference.Generate(dir, dtype, batched, NewTokens, TopK);
        var topk = Enumerable.Range(0, gen.Tokens.Length)
            .Select(s => (IReadOnlyList<TokenLogprob>)Enumerable.Range(0, TopK).Select(j => new TokenLogprob(gen.TopKIds[s, j], gen.TopKLogprobs[s, j])).ToList())
            .ToList();
        return new ReferenceRun(forward.Captured, new TokenSequence(gen.Tokens, topk));
    }

    private static TokenSequence ToSequence(LlamaForCausalLM.Generation g)
    {
        var topk = Enumerable.Range(0, g.Tokens.Length)
            .Select(s => (IReadOnlyList<TokenLogprob>)Enumerable.Range(0, g.TopKIds.GetLength(1)).Select(j => new TokenLogprob(g.TopKIds[s, j], g.TopKLogprobs[s, j])).ToList())
            .ToList();
        return new TokenSequence(g.Tokens, topk);
    }

    private static ModuleFailedException? FindModuleFailure(Exception e)
    {
        var queue = new Queue<Exception>([e]);
        while (queue.Count > 0)
        {
            var x = queue.Dequeue();
            if (x is ModuleFailedException m) return m;
            if (x is AggregateException a) foreach (var i in a.InnerExceptions) queue.Enqueue(i);
            if (x.InnerException is not null) queue.Enqueue(x.InnerException);
        }
        return null;
    }
}
