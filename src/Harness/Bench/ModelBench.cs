using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Cuda;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Scenarios;

namespace Harness.Bench;

/// <summary>
/// `harness bench --model DIR [--device cpu|cuda] [--dtype bf16] [--prompt 128] [--new 128]`: the engine's text decoder
/// (on the GPU: Llama, Gemma3n, Gemma4 text, Qwen2-VL text, plain and graph-replayed decode steps; the CPU: Llama) beside
/// HF transformers eager on the same device, model, prompt and thread count, in one run: prefill tokens/s (median of
/// runs), greedy decode tokens/s, peak memory, the ratio, and on the GPU the fraction of the weight-read floor (every
/// weight but the embedding table read once per decoded token, at the device-to-device copy bandwidth measured here).
/// </summary>
public static class ModelBench
{
    public sealed record Row(string Who, double PrefillMs, double DecodeTokensPerSecond, double PeakMiB);

    public static int Run(BenchOptions o)
    {
        if (o.Device == "cpu") return CpuModelBench.Run(o);
        string? model = o.Model;
        string device = o.Device;
        var dtype = o.DTypes?[0] ?? DType.BFloat16;                               // one each on the GPU (BenchCommands checks)
        int prompt = o.Prompts?[0] ?? 128, newTokens = o.NewTokens ?? 128, runs = o.Runs ?? 5;
        bool hf = !o.NoHf;
        if (model is null || !File.Exists(Path.Combine(model, "config.json")))
        {
            Console.Error.WriteLine("bench --model DIR: DIR must hold an HF checkpoint (config.json + safetensors) of " + string.Join(", ", GraphModel.Families) +
                                    "; ci/make-bench-llama.py writes the 1.1B Llama, ci/make-bench-model.py the other families' 1B-class ones");
            return 2;
        }
        CudaDevice? gpu = device == "cuda" ? CudaDevice.Get() : null;
        List<Row> rows;
        long[] ids;
        long weightBytes;
        DecodeProfile? profile;
        try
        {
            rows = Engine(model, gpu, dtype, prompt, newTokens, runs, out ids, out weightBytes, out profile);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {   // the model's own bound (max_position_embeddings) or a model_type without a text decoder here: one line
            Console.Error.WriteLine($"bench --model {model}: {e.Message}");
            return 2;
        }
        foreach (var engine in rows)
            Console.WriteLine($"{engine.Who}: prefill {engine.PrefillMs:F1} ms, decode {engine.DecodeTokensPerSecond:F1} tokens/s, peak {engine.PeakMiB:F0} MiB");
        if (profile is { } pr)
        {
            Console.WriteLine($"decode step, eager: {pr.EagerMsPerStep:F3} ms wall, {pr.EagerEnqueueMsPerStep:F3} ms host enqueue, " +
                              $"{pr.LaunchesPerStep:F1} kernel launches, {pr.AllocationsPerStep:F1} device allocations");
            Console.WriteLine($"decode step, graph: {pr.GraphMsPerStep:F3} ms wall, {pr.GraphGpuMsPerStep:F3} ms GPU (events over replays), " +
                              $"{pr.GraphNodes} nodes, {pr.StepArenaBytes / 1024} KiB arena" + (pr.GraphFallback is null ? "" : $"; NO GRAPH: {pr.GraphFallback}"));
            Console.WriteLine($"GPU time per eager decode step by kernel (events around each launch): {pr.Kernels.Sum(k => k.Ms):F3} ms in all; " +
                              string.Join(", ", pr.Kernels.Select(k => $"{k.Name} x{k.Count} {k.Ms * 1e3:F0} us")));
            Console.WriteLine($"GPU time per graph-step kernel (the step run eagerly, events around each launch): {pr.GraphKernels.Sum(k => k.Ms):F3} ms in all; " +
                              string.Join(", ", pr.GraphKernels.Select(k => $"{k.Name} x{k.Count} {k.Ms * 1e3:F0} us")));
            Console.WriteLine($"greedy tokens, graph vs eager: {(pr.TokensEqual == pr.Tokens ? "equal" : "DIFFER")} ({pr.TokensEqual}/{pr.Tokens} equal before the first difference)");
        }
        int engines = rows.Count;
        if (hf && Hf(model, device, dtype, ids, newTokens, runs) is { } h)
        {
            rows.Add(h);
            Console.WriteLine($"HF eager: prefill {h.PrefillMs:F1} ms, decode {h.DecodeTokensPerSecond:F1} tokens/s, peak {h.PeakMiB:F0} MiB");
        }
        double? floorMs = null, bandwidth = null;
        if (gpu is not null)
        {
            bandwidth = CopyBandwidth(gpu);
            floorMs = weightBytes / bandwidth.Value * 1e3;
        }
        Console.WriteLine();
        Console.WriteLine($"| {"",-12} | {"prefill ms",10} | {"prefill tok/s",13} | {"decode tok/s",12} | {"ms/token",8} | {"peak MiB",8} | {"floor frac",10} |");
        Console.WriteLine($"|{new string('-', 14)}|{new string('-', 12)}|{new string('-', 15)}|{new string('-', 14)}|{new string('-', 10)}|{new string('-', 10)}|{new string('-', 12)}|");
        foreach (var r in rows)
        {
            double msTok = 1e3 / r.DecodeTokensPerSecond;
            string frac = floorMs is null ? "-" : (floorMs.Value / msTok).ToString("P1", CultureInfo.InvariantCulture);
            Console.WriteLine($"| {r.Who,-12} | {r.PrefillMs,10:F1} | {prompt / r.PrefillMs * 1e3,13:F0} | {r.DecodeTokensPerSecond,12:F1} | {msTok,8:F2} | {r.PeakMiB,8:F0} | {frac,10} |");
        }
        if (rows.Count > engines)
            foreach (var e in rows.Take(engines))
                Console.WriteLine($"{e.Who} / HF: prefill {rows[^1].PrefillMs / e.PrefillMs:F2}x, decode {e.DecodeTokensPerSecond / rows[^1].DecodeTokensPerSecond:F2}x");
        if (floorMs is not null)
            Console.WriteLine($"weight-read floor: {weightBytes / 1e9:F2} GB per token at {bandwidth / 1e9:F0} GB/s (device-to-device copy, read + write) = {floorMs:F3} ms/token");
        if (profile is { } p2 && p2.TokensEqual != p2.Tokens)
        {
            Console.Error.WriteLine("bench: the graph decoder's greedy tokens differ from the plain loop's");
            return 1;
        }
        return 0;
    }

    /// <summary>Where an engine decode step's time goes (printed under the table).</summary>
    public sealed record DecodeProfile(double EagerMsPerStep, double EagerEnqueueMsPerStep, double LaunchesPerStep, double AllocationsPerStep,
        double GraphMsPerStep, double GraphGpuMsPerStep, int GraphNodes, long StepArenaBytes, string? GraphFallback, int TokensEqual, int Tokens,
        List<(string Name, int Count, double Ms)> Kernels, List<(string Name, int Count, double Ms)> GraphKernels);

    private static List<Row> Engine(string dir, CudaDevice? gpu, DType dtype, int promptTokens, int newTokens, int runs,
        out long[] ids, out long weightBytes, out DecodeProfile? profile)
    {
        int maxPositions = promptTokens + newTokens + 8;
        // one model: the weights are uploaded (and fused) once (the fused q/k/v, gate/up copies alone stay); each sequence starts over
        using var g = GraphModel.Open(dir, gpu, dtype, maxPositions);
        var model = g.Model;
        weightBytes = 0;
        double expertShare = 1;                                             // a MoE step reads top_k of num_experts experts
        if (g.Family == "gemma4" && Gemma4ForCausalLM.LoadConfig(dir) is { EnableMoeBlock: true } moe) expertShare = (double)moe.TopKExperts / moe.NumExperts;
        using (var checkpoint = Checkpoint.Open(dir))
            foreach (var name in checkpoint.Names)
                if (!name.Contains("embed_tokens", StringComparison.Ordinal) && !name.Contains("visual", StringComparison.Ordinal)
                    && !name.Contains("vision", StringComparison.Ordinal) && !name.Contains("audio", StringComparison.Ordinal))
                    weightBytes += (long)(checkpoint.GetTensor(name).NumEl * (long)dtype.Size()
                                          * (name.Contains(".experts.", StringComparison.Ordinal) ? expertShare : 1));   // the text decoder's weights a step reads
        var rng = new SplitMix64(2024);
        ids = Enumerable.Range(0, promptTokens).Select(_ => (long)(3 + rng.NextInt(g.VocabSize - 3))).ToArray();
        var prompt = ids;
        Console.WriteLine($"model {Path.GetFullPath(dir)}: {g.Family} text decoder, {g.Shape}, vocab {g.VocabSize}; " +
                          $"{dtype.TorchName()}, prompt {promptTokens} tokens, {newTokens} new tokens, batch 1, " +
                          (gpu is null ? $"cpu, {ComputeSettings.Threads} threads" : GpuSelfCheck.Describe(gpu)));
        void Sync() => gpu?.Synchronize();
        // Device tensors are freed by finalizers; the engine collects every max(1 GiB, memory/16) of device allocations, so
        // between timed phases the bench collects itself: the peak is then what one phase holds (as torch's refcounts give).
        void Collect()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Sync();
        }

        GC.Collect();
        GC.WaitForPendingFinalizers();                                     // the uploaded originals of fused weights
        Sync();
        if (gpu is not null) CudaRuntime.ResetPeakPoolBytes(gpu.Ordinal);

        // warm-up: kernels compiled (prefill and a few decode steps)
        long Argmax(Tensor logits, int row) => TopK.Forward(logits.Select(0, row), 1).Indices.ToInt64Array()[0];
        model.StartSequence(maxPositions);
        long w = Argmax(g.Prefill(prompt), 0);
        for (int s = 0; s < 4; s++) w = Argmax(model.Step(w)!, 0);
        Sync();
        var prefill = new List<double>();
        for (int r = 0; r < runs; r++)
        {
            model.StartSequence(maxPositions);
            Sync();
            var sw = Stopwatch.StartNew();
            g.Prefill(prompt);
            Sync();
            prefill.Add(sw.Elapsed.TotalMilliseconds);
            Collect();                                                     // untimed: the run's dead activations go now
        }
        prefill.Sort();
        double prefillMs = prefill[prefill.Count / 2];

        // greedy decode: prefill, then newTokens steps of one token (the argmax read back each step, as generation needs)
        Collect();
        model.StartSequence(maxPositions);
        long first = Argmax(g.Prefill(prompt), 0);
        long next = first;
        var eager = new long[newTokens];
        Sync();
        long launches0 = KernelArgs.Launches, allocs0 = gpu?.Allocations ?? 0;
        double enqueue = 0;
        var dsw = Stopwatch.StartNew();
        for (int s = 0; s < newTokens; s++)
        {
            var t0 = dsw.Elapsed.TotalMilliseconds;
            var logits = model.Step(next)!;
            var pick = TopK.Forward(logits.Select(0, 0), 1).Indices;
            enqueue += dsw.Elapsed.TotalMilliseconds - t0;             // host time to queue the step (no wait)
            next = eager[s] = pick.ToInt64Array()[0];
        }
        Sync();
        double decodeSeconds = dsw.Elapsed.TotalSeconds;
        var rows = new List<Row>();
        double Peak() => gpu is not null ? CudaRuntime.PeakPoolBytes(gpu.Ordinal) / (double)(1 << 20) : Environment.WorkingSet / (double)(1 << 20);
        rows.Add(new Row("engine", prefillMs, newTokens / decodeSeconds, Peak()));
        profile = null;
        if (gpu is null) return rows;
        double launches = (KernelArgs.Launches - launches0) / (double)newTokens, allocs = (gpu.Allocations - allocs0) / (double)newTokens;
        // GPU time per kernel of a few more eager steps (events around each launch)
        const int profiled = 4;
        List<(string Name, int Count, double Ms)> kernels;
        using (var prof = KernelProfiler.Start())
        {
            for (int s = 0; s < profiled; s++)
                next = TopK.Forward(model.Step(next)!.Select(0, 0), 1).Indices.ToInt64Array()[0];
            kernels = prof.Report().Select(k => (k.Name, k.Count / profiled, k.Ms / profiled)).ToList();
        }

        // the same decode with each step replayed from a CUDA graph (CudaGraphDecoder); the first call captures
        Collect();
        try
        {
            profile = Graph(g, prompt, maxPositions, newTokens, eager, Argmax, Sync, launches, allocs, decodeSeconds, enqueue, kernels, prefillMs, rows, Peak);
        }
        catch (Exception e)
        {   // the plain rows still print; the failure names the call
            Console.Error.WriteLine($"bench: graph decoding failed: {e.GetType().Name}: {e.Message}");
        }
        return rows;
    }

    private static DecodeProfile Graph(GraphModel g, long[] prompt, int maxPositions, int newTokens, long[] eager, Func<Tensor, int, long> Argmax,
        Action Sync, double launches, double allocs, double decodeSeconds, double enqueue, List<(string Name, int Count, double Ms)> kernels,
        double prefillMs, List<Row> rows, Func<double> Peak)
    {
        var model = g.Model;
        int promptLength = prompt.Length;
        using var decoder = new CudaGraphDecoder(model);
        decoder.StartSequence(maxPositions);
        decoder.Decode(Argmax(g.Prefill(prompt), 0), 4);
        decoder.StartSequence(maxPositions);
        long gfirst = Argmax(g.Prefill(prompt), 0);
        Sync();
        var gsw = Stopwatch.StartNew();
        var graphTokens = decoder.Decode(gfirst, newTokens);
        Sync();
        double graphSeconds = gsw.Elapsed.TotalSeconds;
        int equal = 0;
        while (equal < newTokens && graphTokens[equal] == eager[equal]) equal++;
        model.Rewind(promptLength);
        double gpuMs = decoder.TimeReplaysMs(Math.Min(100, newTokens));
        model.Rewind(promptLength);
        var graphKernels = decoder.ProfileStep();
        rows.Add(new Row(decoder.FallbackReason is null ? "eng+graph" : "eng(nograph)", prefillMs, newTokens / graphSeconds, Peak()));
        return new DecodeProfile(decodeSeconds * 1e3 / newTokens, enqueue / newTokens, launches, allocs, graphSeconds * 1e3 / newTokens, gpuMs,
            decoder.GraphNodes, decoder.StepBytes, decoder.FallbackReason, equal, newTokens, kernels, graphKernels);
    }

    private static double CopyBandwidth(CudaDevice gpu)
    {
        const long bytes = 1L << 30;
        using var a = gpu.Allocate(bytes);
        using var b = gpu.Allocate(bytes);
        CudaRuntime.MemsetAsync(a.Pointer, 1, bytes, gpu.Stream);
        CudaRuntime.MemcpyAsync(b.Pointer, a.Pointer, bytes, CudaRuntime.MemcpyDeviceToDevice, gpu.Stream);
        var e0 = CudaRuntime.EventCreate();
        var e1 = CudaRuntime.EventCreate();
        CudaRuntime.EventRecord(e0, gpu.Stream);
        for (int i = 0; i < 10; i++) CudaRuntime.MemcpyAsync(b.Pointer, a.Pointer, bytes, CudaRuntime.MemcpyDeviceToDevice, gpu.Stream);
        CudaRuntime.EventRecord(e1, gpu.Stream);
        CudaRuntime.EventSynchronize(e1);
        float ms = CudaRuntime.EventElapsedMs(e0, e1);
        CudaRuntime.EventDestroy(e0);
        CudaRuntime.EventDestroy(e1);
        return 2.0 * bytes * 10 / (ms / 1e3);
    }

    /// <summary>
    /// HF eager on the same device, model, prompt and thread count: ext/bench.py's bench_generate in a reference worker of
    /// its own started on <paramref name="device"/> (the worker's start: the spawner thread, dies with this process,
    /// supervised calls), or null after one line on stderr when there is no interpreter or the peer fails.
    /// </summary>
    private static Row? Hf(string dir, string device, DType dtype, long[] ids, int newTokens, int runs)
    {
        var settings = ReferenceSettings.Current;
        // HARNESS_PYTHON or the provisioned wrapper, else the GPU machines' torch venv
        string? python = ReferenceLocator.Find(settings).Python ?? (File.Exists(GpuVenvPython) ? GpuVenvPython : null);
        if (python is null) { Console.Error.WriteLine($"bench: no HF peer (set {ReferenceSettings.PythonVariable} to a python with torch and transformers)"); return null; }
        using var worker = new ReferenceWorker(python) { Device = device, Threads = ComputeSettings.Threads, DefaultTimeout = TimeSpan.FromHours(1) };
        return Hf(new ReferenceClient(worker), dir, device, dtype, ids, newTokens, runs);
    }

    /// <summary>The HF peer's row from <paramref name="client"/>'s worker (its device the one asked for), or null after one line on stderr.</summary>
    internal static Row? Hf(ReferenceClient client, string dir, string device, DType dtype, long[] ids, int newTokens, int runs)
    {
        try
        {
            var j = client.Invoke("bench_generate", new JsonObject
            {
                ["model"] = client.WorkerPath(client.ShareDirectory(Path.GetFullPath(dir))), ["device"] = device, ["dtype"] = dtype.TorchName(),
                ["ids"] = new JsonArray(ids.Select(i => (JsonNode)i).ToArray()), ["new"] = newTokens, ["runs"] = runs, ["threads"] = ComputeSettings.Threads,
            }).Result;
            Console.WriteLine($"HF peer: torch {j["torch"]}, transformers {j["transformers"]} ({client.Worker.Description})");
            return new Row("HF eager", (double)j["prefill_ms"]!, (double)j["decode_tps"]!, (double)j["peak_mib"]!);
        }
        catch (ReferenceException e)
        {
            Console.Error.WriteLine($"bench: the HF peer failed: {e.Message.Split('\n')[0]}");
            return null;
        }
    }

    private const string GpuVenvPython = "/opt/torch/.venv/bin/python3";
}

/// <summary>Weights converted to one dtype as they are read (a bf16 checkpoint benchmarked in fp32, say).</summary>
public sealed class CastWeights(IWeightSource inner, DType dtype) : IWeightSource
{
    public bool Contains(string name) => inner.Contains(name);
    public Tensor Get(string name) => Cast(inner.Get(name));

    public int[] ShapeOf(string name) => inner.ShapeOf(name);

    /// <summary>Only the rows are converted (a rank's shard of a vocab table).</summary>
    public Tensor GetRows(string name, int start, int length) => Cast(inner.GetRows(name, start, length));

    private Tensor Cast(Tensor t) => t.DType.IsFloatingPoint() && t.DType != dtype ? t.To(dtype) : t;
}
