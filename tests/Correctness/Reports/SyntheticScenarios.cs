using Harness.Engine.Capture;
using Harness.Engine.Tensors;
using Harness.Reports;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Reports;

/// <summary>
/// Scenario results built from small tensors with <see cref="LayerComparison"/> and <see cref="TokenComparison"/>:
/// a passing TP=2 run, and a failing one whose rank 1 is off at layer 1's MLP and whose tokens diverge at step 3.
/// </summary>
internal static class SyntheticScenarios
{
    public static readonly string[] Modules = ["model.embed_tokens", "model.layers.0.mlp", "model.layers.1.mlp", "model.norm"];

    public const string BadModule = "model.layers.1.mlp";

    /// <summary>The engine's token at the failing scenario's divergent step (the reference's is 13).</summary>
    public const long DivergentEngineToken = 42;

    public static ScenarioResult Result(bool fail, string? fault = null, TimeSpan? elapsed = null)
    {
        var reference = new Dictionary<string, Tensor>();
        var capture = new ActivationCapture();
        ulong seed = 1;
        foreach (var module in Modules)
        {
            var full = Tensor.Randn(DType.Float32, seed++, 4, 8);
            reference[module] = full;
            for (int rank = 0; rank < 2; rank++)
            {
                var shard = full.Narrow(-1, rank * 4, 4).Clone();
                if (fail && module == BadModule && rank == 1)
                    for (int i = 0; i < 4; i++) shard.Set(shard.At(i, i) + 1.0, i, i);
                else if (module != "model.embed_tokens")
                    shard.Set(shard.At(0, 0) * (1 + 1e-6), 0, 0); // a tiny error so the plot has something above the floor
                capture.Record(module, shard, new ShardSpec.Sharded(-1, rank, 2), rank: rank);
            }
        }
        var layers = LayerComparison.Run(reference, capture, Modules);
        var (refTokens, engTokens) = Sequences(fail);
        var tokens = TokenComparison.Run(refTokens, engTokens);
        // LlamaScenario only supplies the id here; the report takes the descriptive fields as strings.
        var scenario = new LlamaScenario(2, 1, false, InputKind.InputIds, fault: fault, expectedFirstBadModule: fault is null ? null : BadModule);
        return new ScenarioResult(scenario, layers, tokens, null, null, elapsed ?? TimeSpan.FromSeconds(fail ? 2.5 : 1.25));
    }

    public static (TokenSequence Reference, TokenSequence Engine) Sequences(bool diverge)
    {
        long[] tokens = [10, 11, 12, 13, 14];
        var topk = tokens.Select((t, s) => (IReadOnlyList<TokenLogprob>)[new(t, -0.1), new(100 + s, -2.5), new(200 + s, -4.0)]).ToList();
        var reference = new TokenSequence(tokens, topk);
        if (!diverge) return (reference, new TokenSequence((long[])tokens.Clone(), [.. topk]));
        var et = (long[])tokens.Clone();
        et[3] = DivergentEngineToken;
        et[4] = 99;
        var ek = new List<IReadOnlyList<TokenLogprob>>(topk)
        {
            [3] = [new(DivergentEngineToken, -0.2), new(13, -2.2), new(7, -5.0)],
            [4] = [new(99, -0.3)],
        };
        return (reference, new TokenSequence(et, ek));
    }

    public static ScenarioRecord Record(bool fail, bool expectFailure = false, string? fault = null)
    {
        var result = Result(fail, fault);
        var (r, e) = Sequences(fail);
        return ScenarioRecord.From(result, "tiny-llama", "tp2", "fp32", "input-ids", fault, expectFailure, r, e);
    }

    public static ReportEnvironment Environment() =>
        new("1.2.3+abc", "3.12.1", "2.5.0", "4.46.0", "Linux test", "Test CPU @ 3 GHz", 2, "avx2-fma 6x16");

    public static AccuracyReport Report(params ScenarioRecord[] scenarios) =>
        new(new DateTime(2025, 1, 2, 3, 4, 5, 678, DateTimeKind.Utc), Environment(), scenarios);

    /// <summary>A fresh empty directory under the temp folder; deleted by <see cref="TempDir.Dispose"/>.</summary>
    public sealed class TempDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("harness-report-").FullName;

        public string File(string name) => System.IO.Path.Join(Path, name);

        public void Dispose()
        {
            try { Directory.Delete(Path, recursive: true); }
            catch (IOException) { }
        }
    }
}
