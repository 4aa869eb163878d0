using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Bench;

/// <summary>torch.matmul timed by the reference worker, the peer every GEMM figure is compared with.</summary>
public sealed class TorchPeer : IDisposable
{
    private readonly ReferenceWorker _worker;
    private readonly ReferenceClient _client;
    private readonly int _threads;

    public string Description { get; }

    private TorchPeer(ReferenceWorker worker, int threads)
    {
        _worker = worker;
        _client = new ReferenceClient(worker);
        _threads = threads;
        Description = _client.GetVersions().ToString();
    }

    /// <summary>The peer, or null (with the reason on stderr) when no reference interpreter can be started.</summary>
    public static TorchPeer? Connect(int threads, TimeSpan? callTimeout = null)
    {
        var worker = callTimeout is { } timeout ? new ReferenceWorker { Threads = threads, DefaultTimeout = timeout } : new ReferenceWorker { Threads = threads };
        if (!worker.IsAvailable)
        {
            Console.Error.WriteLine($"bench: no torch peer: {worker.Description}");
            return null;
        }
        try
        {
            return new TorchPeer(worker, threads);
        }
        catch (ReferenceException e)
        {
            Console.Error.WriteLine($"bench: no torch peer: {e.Message}");
            worker.Dispose();
            return null;
        }
    }

    /// <summary>Best-of-N GFLOP/s of torch.matmul at [m, k] x [k, n] (B a transposed [n, k] weight when asked), in <paramref name="dtype"/>.</summary>
    public double Gflops(int m, int n, int k, bool transposeB, DType dtype = DType.Float32)
    {
        double once = 2.0 * m * n * k / 50e9; // a rough guess at one call's seconds
        int repeats = (int)Math.Clamp(1.5 / Math.Max(once, 1e-5), 5, 200);
        return _client.BenchMatmul(m, n, k, dtype, _threads, repeats, transposeB).Gflops;
    }

    public sealed record ModelTiming(IReadOnlyDictionary<int, double> PrefillMs, double DecodeTokensPerSecond, int Threads, string Versions);

    /// <summary>
    /// HF transformers eager on a checkpoint folder, timed by the worker with this peer's thread count (ext/bench.py's
    /// bench_model): prefill ms per prompt length (the first <c>n</c> of <paramref name="ids"/>), greedy decode tokens/s
    /// after a prompt of <paramref name="decodePrompt"/> tokens.
    /// </summary>
    public ModelTiming BenchModel(string modelDir, DType dtype, long[] ids, IReadOnlyList<int> prompts, int runs, int newTokens, int decodePrompt)
    {
        var dir = _client.WorkerPath(_client.ShareDirectory(modelDir));
        var r = _client.Invoke("bench_model", new System.Text.Json.Nodes.JsonObject
        {
            ["model"] = dir, ["dtype"] = dtype.TorchName(), ["threads"] = _threads,
            ["ids"] = new System.Text.Json.Nodes.JsonArray(ids.Select(i => (System.Text.Json.Nodes.JsonNode)i).ToArray()),
            ["prompts"] = new System.Text.Json.Nodes.JsonArray(prompts.Select(p => (System.Text.Json.Nodes.JsonNode)p).ToArray()),
            ["runs"] = runs, ["new"] = newTokens, ["decode_prompt"] = decodePrompt,
        }).Result;
        var prefill = r["prefill_ms"]!.AsObject().ToDictionary(kv => int.Parse(kv.Key, System.Globalization.CultureInfo.InvariantCulture), kv => (double)kv.Value!);
        return new ModelTiming(prefill, (double)r["decode_tps"]!, (int)r["threads"]!, $"torch {r["torch"]}, transformers {r["transformers"]}");
    }

    /// <summary>Writes a seeded random LlamaForCausalLM (HF's own initialisation) with these config fields into a fresh
    /// folder the worker can write (inside its root); returns the host path.</summary>
    public string MakeRandomLlama(System.Text.Json.Nodes.JsonObject config, DType dtype)
    {
        var host = _client.ScratchDirectory("random-llama");
        _client.Invoke("make_random_llama", new System.Text.Json.Nodes.JsonObject
        {
            ["out"] = _client.WorkerPath(host), ["config"] = config, ["dtype"] = dtype.TorchName(), ["seed"] = 0,
        });
        return host;
    }

    public void Dispose() => _worker.Dispose();
}
