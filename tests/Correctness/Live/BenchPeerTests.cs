using Harness.Bench;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// `harness bench --model DIR --device cuda`'s HF peer was a python script of its own, started with Process.Start on
/// whatever thread ran the bench and without the worker's parent-death signal (issue 24: a killed bench left it running
/// on the GPU). It is now ext/bench.py's bench_generate in a reference worker started on the bench's device: here on the
/// CPU, on the tiny Llama, through the same call the bench makes.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public sealed class BenchPeerTests
{
    [SkippableFact]
    public void The_hf_peer_times_prefill_and_decode_in_a_reference_worker()
    {
        var client = LiveReference.Client();
        var dir = Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");
        var row = ModelBench.Hf(client, dir, "cpu", DType.Float32, [1, 5, 9, 3, 7, 2], newTokens: 4, runs: 2);
        Assert.NotNull(row);
        Assert.Equal("HF eager", row.Who);
        Assert.True(row.PrefillMs > 0 && double.IsFinite(row.PrefillMs), $"prefill {row.PrefillMs} ms");
        Assert.True(row.DecodeTokensPerSecond > 0 && double.IsFinite(row.DecodeTokensPerSecond), $"decode {row.DecodeTokensPerSecond} tokens/s");
        Assert.Equal(0, row.PeakMiB);                                       // device memory: none on the CPU
    }
}
