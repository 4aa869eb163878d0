using Harness.Engine.Capture;
using Harness.Engine.Cuda;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>
/// `harness run --device cuda`: the catalog's scenarios with the engine on the GPU. A scenario that supports it gets
/// a device part in its id (<c>llama/tp2-sp-pp2/input-ids/fp32/cuda</c>) and keeps its reference key, so the recorded
/// fixtures serve both devices. Each rank of a layout is a thread with its own CUDA stream; the weights, the KV cache and
/// the activations stay on the GPU; the captured activations are copied to the host for the comparison.
/// </summary>
public static class CudaScenarios
{
    /// <summary>The scenario on the GPU, or null when it has no GPU path yet (the caller says so).</summary>
    public static Scenario? OnDevice(Scenario s, string device)
    {
        if (device == "cpu") return s;
        if (device != "cuda") throw new ArgumentException($"unknown device '{device}'; known: cpu, cuda");
        // every registered family's scenarios (ModelFamilies: their engines run their ranks through RankOnGpu / OnGpu below)
        // and the op-level matmul shapes; anything else has no device path yet
        return ModelFamilies.Of(s) is not null || s is MatmulScenario
            ? s with { Device = "cuda", Id = InsertDevice(s.Id), Description = s.Description + ", engine on the GPU" }
            : null;
    }

    // The device part goes before a fault part: llama/tp1/input-ids/fp32/cuda/fault=x.
    private static string InsertDevice(string id)
    {
        int f = id.IndexOf("/fault=", StringComparison.Ordinal);
        return f < 0 ? id + "/cuda" : id[..f] + "/cuda" + id[f..];
    }

    /// <summary>
    /// Puts a rank on the GPU: its own stream (disposed with the returned scope), weights uploaded on first use, the
    /// groups staged through <see cref="CudaProcessGroup"/>, and a sink that copies captured values to the host.
    /// </summary>
    public static IDisposable RankOnGpu(ref ParallelContext ctx, ref IWeightSource weights, ref IActivationSink sink)
    {
        var device = CudaDevice.Get();
        var stream = device.OpenStream();                 // synchronized, its cuBLAS handle and itself destroyed at the end
        ctx = CudaProcessGroup.Wrap(ctx, device);
        weights = new DeviceWeights(weights, device);
        sink = new HostCopySink(sink);
        return stream;
    }

    /// <summary>
    /// <see cref="RankOnGpu"/> when <paramref name="device"/> is "cuda" (null, nothing changed, on the CPU): the one line a
    /// scenario's rank body adds, <c>using var gpu = CudaScenarios.OnGpu(Device, ref ctx, ref weights, ref sink);</c>.
    /// </summary>
    public static IDisposable? OnGpu(string device, ref ParallelContext ctx, ref IWeightSource weights, ref IActivationSink sink) =>
        device == "cuda" ? RankOnGpu(ref ctx, ref weights, ref sink) : null;

    /// <summary>A single-rank engine (the towers, one op) on the GPU: its own stream, weights uploaded on use, host-copy captures.</summary>
    public static IDisposable? OnGpu(string device, ref IWeightSource weights, ref IActivationSink sink)
    {
        if (device != "cuda") return null;
        var gpu = CudaDevice.Get();
        var stream = gpu.OpenStream();
        weights = new DeviceWeights(weights, gpu);
        sink = new HostCopySink(sink);
        return stream;
    }

    /// <summary>An engine input (soft tokens, pixel values, features) where the engine runs: on the GPU for "cuda".</summary>
    public static Tensor? Input(string device, Tensor? t) => device == "cuda" && t is not null ? t.ToDevice(CudaDevice.Get()) : t;
}

/// <summary>Records host copies of device tensors (the comparison reads spans).</summary>
public sealed class HostCopySink(IActivationSink inner) : IActivationSink
{
    public bool Wants(string module) => inner.Wants(module);
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => inner.Record(module, worldRank, value.ToHost(), shard);
    public bool Wants(string module, int step) => inner.Wants(module, step);
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step) => inner.Record(module, worldRank, value.ToHost(), shard, step);
}

/// <summary>
/// Weights uploaded to a device once, on first use (the engine's layers then run on the GPU). With
/// <paramref name="keep"/> false each Get uploads afresh and nothing is kept here: a weight a layer copies (the fused
/// q/k/v and gate/up products) is then freed once the layer has its copy (the bench's memory figure).
/// Once a weight is on the device, the memory-mapped checkpoint pages it was read from are given back
/// (<see cref="MappedPages.Release"/>): the Llama-3.1-8B row on an H100 held 19.6 GiB of host memory for 15 GiB
/// of weights that all lived on the device, the whole checkpoint left resident in the process.
/// </summary>
public sealed class DeviceWeights(IWeightSource inner, CudaDevice device, bool keep = true) : IWeightSource
{
    private readonly Dictionary<string, Tensor> _cache = new();
    public bool Contains(string name) => inner.Contains(name);

    public Tensor Get(string name)
    {
        if (!keep) return Upload(inner.Get(name));
        lock (_cache)
        {
            if (!_cache.TryGetValue(name, out var t)) _cache[name] = t = Upload(inner.Get(name));
            return t;
        }
    }

    public int[] ShapeOf(string name) => inner.ShapeOf(name);

    /// <summary>Only the rows go to the device (a rank's shard of a vocab table), not the whole table; a rank takes them once.</summary>
    public Tensor GetRows(string name, int start, int length) => Upload(inner.GetRows(name, start, length));

    // cudaMemcpyAsync from pageable memory returns once the bytes are staged (CudaTensors.Upload), so the host pages can go
    // at once; a later host read of the same weight maps the file's page again, with the same bytes
    private Tensor Upload(Tensor host)
    {
        var onDevice = host.ToDevice(device);
        if (!ReferenceEquals(onDevice, host)) MappedPages.Release(host);
        return onDevice;
    }
}
