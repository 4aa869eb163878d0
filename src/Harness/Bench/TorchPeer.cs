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
    public static TorchPeer? Connect(int threads)
    {
        var worker = new ReferenceWorker { Threads = threads };
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

    public void Dispose() => _worker.Dispose();
}
