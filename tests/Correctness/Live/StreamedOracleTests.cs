using Harness.Runs;
using Harness.Scenarios;
using Harness.Tests.Correctness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// The streamed float64 oracle (the default: the reference model itself in float64, one decoder layer or tower block
/// upcast at a time, embeddings on the rows looked up) against the whole-model float64 twin it replaces, on the tiny
/// models of every family the worker serves: every oracle.* tensor the same (to 1e-12 of its largest element), and so
/// every module's verdict the same, fault scenarios included. The catalog's live tier (CatalogLiveTests) already runs
/// every scenario, and so catches every catalog fault at its module, under the streamed oracle. One scenario per family,
/// input kind and dtype here; HARNESS_ORACLE_ALL=1 runs the whole catalog.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public class StreamedOracleTests(ITestOutputHelper output)
{
    private static readonly string[] Representative =
    [
        "llama/tp1/input-ids/fp32", "llama/tp1/prompt-embeds/fp32", "llama/tp2-sp-pp2/input-ids/bf16/fault=sp-residual-first-slice",
        "llama-bias/tp1/input-ids/fp32",
        "gemma3n/tp1/hard-tokens/fp32", "gemma3n/tp1/soft-tokens/bf16", "gemma3n/tp2/text/fp32/fault=sparse-topk-rank-local",
        "gemma4/moe/tp1/text/bf16", "gemma4/moe/tp1/text/fp32/fault=gelu-tanh-as-exact", "gemma4/e2b-like/tp1/mixed/bf16",
        "gemma4/e2b-like/tp1/vision-tower/bf16", "gemma4/e2b-like/tp1/audio-tower/fp32",
        "qwen2-vl/tp1/video/fp32", "qwen2-vl/tp2/image/fp32",
    ];

    public static TheoryData<string> Scenarios => CatalogContexts.Ids(s =>
        Environment.GetEnvironmentVariable("HARNESS_ORACLE_ALL") == "1" ? s.Model != "matmul" : Representative.Contains(s.Id));

    private static ScenarioContext? _whole;

    private static ScenarioContext Whole()
    {
        var live = CatalogContexts.Live();
        lock (Representative) return _whole ??= live.WithOracleMode("whole");
    }

    [SkippableTheory]
    [MemberData(nameof(Scenarios))]
    public void The_streamed_oracle_gives_the_whole_twins_values_and_verdicts(string id)
    {
        var scenario = ScenarioCatalog.Find(id)!;
        var stream = CatalogContexts.Live();
        Assert.Equal("stream", stream.OracleMode);
        var whole = Whole();
        var streamed = stream.Reference(scenario).Tensors;
        var twin = whole.Reference(scenario).Tensors;

        var oracleNames = twin.Keys.Where(k => k.StartsWith(LayerComparison.OraclePrefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(oracleNames, streamed.Keys.Where(k => k.StartsWith(LayerComparison.OraclePrefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal));
        double worst = 0;
        foreach (var name in oracleNames)
        {
            double[] a = streamed[name].ToDoubleArray(), b = twin[name].ToDoubleArray();
            Assert.Equal(b.Length, a.Length);
            double scale = b.Select(Math.Abs).Where(double.IsFinite).DefaultIfEmpty(0).Max();
            double diff = a.Zip(b, (x, y) => double.IsFinite(y) ? Math.Abs(x - y) : 0).DefaultIfEmpty(0).Max();
            double rel = scale == 0 ? diff : diff / scale;
            worst = Math.Max(worst, rel);
            Assert.True(rel <= 1e-12, $"{id}: {name}: streamed oracle differs from the whole twin's by {rel:E3} of its largest element");
        }
        output.WriteLine($"{id}: {oracleNames.Count} oracle tensors, largest difference {worst:E3} of the tensor's largest element");

        var s = ScenarioRunner.Run(scenario, stream).Result;
        var w = ScenarioRunner.Run(scenario, whole).Result;
        static string Verdicts(ScenarioResult r) => string.Join("\n", r.Layers.Rows.Select(row => $"{row.Label}: {row.Verdict}"));
        Assert.Equal(Verdicts(w), Verdicts(s));
        Assert.Equal(w.FirstBadModule, s.FirstBadModule);
        Assert.True(s.Passed, s.Describe());   // fault scenarios: caught at their module under the streamed oracle
    }
}
