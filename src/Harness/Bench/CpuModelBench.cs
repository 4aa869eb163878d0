using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Llama;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Bench;

/// <summary>
/// `harness bench --model DIR` on the CPU (issue 15), one command for the whole table: the engine's Llama beside HF
/// transformers eager (timed by the reference worker with the same thread count, torch.set_num_threads) on the same
/// checkpoint and prompt, in fp32 and bf16: prefill tokens/s for each prompt length (one forward of the prompt and the
/// logits of its last token, logits_to_keep=1 on both sides, as generation runs it), greedy decode tokens/s, the
/// effective GFLOP/s and GB/s beside this machine's square fp32 GEMM rate (the engine's Matmul, 1024^3 and 2048^3, best)
/// and copy bandwidth (memcpy of 256 MiB over the threads, read + write bytes), both measured in the same run, the
/// bytes the engine's decode step allocates after warm-up, and the ratios issue 15's "done when" names.
/// Options: --model DIR | --random-llama 155m, --threads N, --dtype fp32,bf16, --prompts 64,512,2048, --new 32,
/// --runs 3, --no-hf.
/// </summary>
public static class CpuModelBench
{
    private sealed record Measured(Dictionary<int, double> PrefillMs, Dictionary<int, string> PrefillSpread, double DecodeTps, long DecodeAllocBytesPerStep);

    public static int Run(BenchOptions o)
    {
        string? model = o.Model, random = o.RandomLlama;
        int threads = o.Threads ?? ComputeSettings.Threads, newTokens = o.NewTokens ?? 32, runs = o.Runs ?? 3;
        var dtypes = o.DTypes?.ToList() ?? [DType.Float32, DType.BFloat16];
        var prompts = o.Prompts?.ToList() ?? [64, 512, 2048];
        bool hf = !o.NoHf, profile = o.Profile;
        using var threadScope = ComputeSettings.UseThreads(threads);
        using var peer = hf || random is not null ? TorchPeer.Connect(threads, TimeSpan.FromHours(2)) : null;
        if (random is not null)
        {
            model = RandomLlama(random, model, peer);
            if (model is null) return 2;
        }
        if (model is null || !File.Exists(Path.Combine(model, "config.json")))
        {
            Console.Error.WriteLine($"bench --model DIR: {(model is null ? "no DIR given" : Path.Combine(model, "config.json") + " is missing")}; " +
                                    "DIR holds an HF Llama checkpoint (config.json + safetensors); --random-llama 155m writes one");
            return 2;
        }
        var config = HfConfig.Load(Path.Combine(model, "config.json")).Text;
        var rng = new SplitMix64(2024);
        int maxPrompt = prompts.Max(), decodePrompt = Math.Min(64, maxPrompt);
        var ids = Enumerable.Range(0, maxPrompt).Select(_ => (long)(3 + rng.NextInt(config.VocabSize - 3))).ToArray();
        long linearParams, embedParams;
        using (var ck = Checkpoint.Open(model)) (linearParams, embedParams) = CountParams(ck, config);
        Console.WriteLine($"model {Path.GetFullPath(model)}: hidden {config.HiddenSize}, intermediate {config.IntermediateSize}, {config.NumHiddenLayers} layers, " +
                          $"{config.NumAttentionHeads} heads, {config.NumKeyValueHeads} kv heads, vocab {config.VocabSize}; {linearParams / 1e6:F1}M parameters in linear layers " +
                          $"(lm_head included), {embedParams / 1e6:F1}M in the embedding table");
        Console.WriteLine($"cpu: {Environment.ProcessorCount} processors, {threads} threads (engine and torch.set_num_threads); batch 1; " +
                          $"prompts {string.Join(", ", prompts)} tokens; decode {newTokens} greedy tokens after {decodePrompt} (first 2 untimed)");

        double gemm1024 = SquareGemm(1024), gemm2048 = SquareGemm(2048), gemm = Math.Max(gemm1024, gemm2048);
        double copy = CopyBandwidth(threads), read = ReadBandwidth(threads);
        Console.WriteLine($"machine: square fp32 GEMM (engine Matmul) {gemm1024:F1} GFLOP/s at 1024^3, {gemm2048:F1} at 2048^3; " +
                          $"copy bandwidth {copy / 1e9:F1} GB/s (memcpy of 256 MiB on {threads} threads, read + write bytes); " +
                          $"read bandwidth {read / 1e9:F1} GB/s (a sum over 512 MiB on {threads} threads, 4 streams each: what a decode step, which only reads, could reach)");
        if (peer is not null) Console.WriteLine($"peer: HF transformers eager (attn_implementation=\"eager\") in the reference worker, {peer.Description}");

        var engine = new Dictionary<DType, Measured>();
        var torch = new Dictionary<DType, TorchPeer.ModelTiming>();
        foreach (var dt in dtypes)
        {
            engine[dt] = Engine(model, config, dt, ids, prompts, runs, newTokens, decodePrompt, profile);
            Console.WriteLine($"engine {dt.TorchName()}: " + string.Join(", ", prompts.Select(p => $"prefill {p} {engine[dt].PrefillMs[p]:F1} ms ({engine[dt].PrefillSpread[p]})")) +
                              $", decode {engine[dt].DecodeTps:F2} tokens/s, {engine[dt].DecodeAllocBytesPerStep} bytes allocated per decode step");
            if (hf && peer is not null)
            {
                try
                {
                    torch[dt] = peer.BenchModel(model, dt, ids, prompts, runs, newTokens, decodePrompt);
                    Console.WriteLine($"HF eager {dt.TorchName()} ({torch[dt].Threads} threads): " +
                                      string.Join(", ", prompts.Select(p => $"prefill {p} {torch[dt].PrefillMs[p]:F1} ms")) + $", decode {torch[dt].DecodeTokensPerSecond:F2} tokens/s");
                }
                catch (Exception e) when (e is Harness.Reference.ReferenceException or InvalidOperationException)
                {
                    Console.Error.WriteLine($"bench: the HF peer failed for {dt.TorchName()}: {e.Message}");
                }
            }
        }

        Console.WriteLine();
        Console.WriteLine("| dtype | phase | engine ms | engine tok/s | GFLOP/s | % GEMM | GB/s | % copy | HF ms | HF tok/s | x HF |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var dt in dtypes)
        {
            var e = engine[dt];
            torch.TryGetValue(dt, out var h);
            foreach (int p in prompts)
            {
                double ms = e.PrefillMs[p], flops = PrefillFlops(config, linearParams, p), gf = flops / (ms / 1e3) / 1e9;
                string hfMs = h is null ? "-" : F(h.PrefillMs[p], 1), hfTps = h is null ? "-" : F(p / h.PrefillMs[p] * 1e3, 0);
                string x = h is null ? "-" : F(h.PrefillMs[p] / ms, 2) + "x";
                Console.WriteLine($"| {dt.TorchName()} | prefill {p} | {ms:F1} | {p / ms * 1e3:F0} | {gf:F1} | {gf / gemm * 100:F0} % | - | - | {hfMs} | {hfTps} | {x} |");
            }
            {
                double msTok = 1e3 / e.DecodeTps;
                double bytes = DecodeBytes(config, linearParams, dt, decodePrompt + newTokens / 2);
                double gbs = bytes * e.DecodeTps;
                double gf = 2.0 * linearParams * e.DecodeTps / 1e9;
                string hfMs = h is null ? "-" : F(1e3 / h.DecodeTokensPerSecond, 2), hfTps = h is null ? "-" : F(h.DecodeTokensPerSecond, 2);
                string x = h is null ? "-" : F(e.DecodeTps / h.DecodeTokensPerSecond, 2) + "x";
                Console.WriteLine($"| {dt.TorchName()} | decode | {msTok:F2} | {e.DecodeTps:F2} | {gf:F1} | - | {gbs / 1e9:F1} | {gbs / copy * 100:F0} % | {hfMs} | {hfTps} | {x} |");
            }
        }
        Console.WriteLine();
        Console.WriteLine("prefill: the prompt in one forward and the logits of its last token (logits_to_keep=1 on both sides, as generate runs it); " +
                          "GFLOP/s: 2 x linear-layer parameters x tokens (lm_head x 1) + causal attention (4 x layers x heads x head_dim x T(T+1)/2), over the time; " +
                          "decode GB/s: linear weights + the KV cache read per token (dtype bytes), times tokens/s; % GEMM of the square rate above, % copy of the copy bandwidth.");
        foreach (var dt in dtypes)
            Console.WriteLine($"decode allocations ({dt.TorchName()}, engine forward after warm-up, GC.GetAllocatedBytesForCurrentThread): {engine[dt].DecodeAllocBytesPerStep} bytes/step");

        // issue 15's "done when", from this run
        Console.WriteLine();
        Console.WriteLine("issue 15 (done when), this run:");
        int p512 = prompts.Contains(512) ? 512 : prompts.Max();
        if (engine.TryGetValue(DType.Float32, out var f32))
        {
            double gf = PrefillFlops(config, linearParams, p512) / (f32.PrefillMs[p512] / 1e3) / 1e9;
            string xhf = torch.TryGetValue(DType.Float32, out var h32) ? $"{h32.PrefillMs[p512] / f32.PrefillMs[p512]:F2}x HF eager [>= 3x]" : "no HF figure";
            Console.WriteLine($"  fp32 prefill {p512}: {gf / gemm * 100:F0} % of the square-GEMM rate [>= 60 %], {xhf}");
            double bytes = DecodeBytes(config, linearParams, DType.Float32, decodePrompt + newTokens / 2);
            string dx = h32 is not null ? $"{f32.DecodeTps / h32.DecodeTokensPerSecond:F2}x HF eager [>= 5x]" : "no HF figure";
            Console.WriteLine($"  fp32 decode: {dx}, {bytes * f32.DecodeTps / copy * 100:F0} % of the copy bandwidth [>= 80 %] " +
                              $"({bytes * f32.DecodeTps / read * 100:F0} % of the read bandwidth; 80 % of copy is {0.8 * copy / read * 100:F0} % of it)");
        }
        if (engine.TryGetValue(DType.Float32, out var a) && engine.TryGetValue(DType.BFloat16, out var b))
            Console.WriteLine($"  bf16 prefill {p512} / fp32 prefill {p512} rate: {a.PrefillMs[p512] / b.PrefillMs[p512]:F2}x [>= 1.6x]");
        return 0;
    }

    private static string F(double v, int digits) => v.ToString("F" + digits, CultureInfo.InvariantCulture);

    // linear-layer parameters (every 2D weight but the embedding table; lm_head counted even when tied) and the table's
    private static (long Linear, long Embed) CountParams(Checkpoint ck, TextConfig config)
    {
        long linear = 0, embed = 0;
        bool head = false;
        foreach (var name in ck.Names)
        {
            var info = ck.GetInfo(name);
            long n = info.NumEl;
            if (name.Contains("embed_tokens", StringComparison.Ordinal)) embed += n;
            else if (info.Shape.Length == 2) linear += n;
            head |= name == "lm_head.weight";
        }
        if (!head) linear += (long)config.VocabSize * config.HiddenSize;
        return (linear, embed);
    }

    // lm_head runs on the last token only (logits_to_keep=1 on both sides)
    private static double PrefillFlops(TextConfig c, long linearParams, int t)
    {
        double head = (double)c.VocabSize * c.HiddenSize;
        return 2.0 * (linearParams - head) * t + 2.0 * head + 4.0 * c.NumHiddenLayers * c.NumAttentionHeads * c.HeadDim * (t * (t + 1.0) / 2);
    }

    private static double DecodeBytes(TextConfig c, long linearParams, DType dt, int context) =>
        (double)linearParams * dt.Size() + 2.0 * c.NumHiddenLayers * c.NumKeyValueHeads * c.HeadDim * context * dt.Size();

    private static Measured Engine(string dir, TextConfig config, DType dtype, long[] ids, List<int> prompts, int runs, int newTokens, int decodePrompt,
        bool profile)
    {
        using var checkpoint = Checkpoint.Open(dir);
        IWeightSource weights = new CastWeights(new CheckpointWeights(checkpoint), dtype);
        var model = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: Math.Max(ids.Length, decodePrompt + newTokens) + 8);
        var prefill = new Dictionary<int, double>();
        var spread = new Dictionary<int, string>();
        foreach (int p in prompts)
        {
            var prompt = Tensor.FromArray(ids[..p], p);
            model.Reset();
            var sw = Stopwatch.StartNew();
            model.Forward(prompt, p, logitsToKeep: 1);                    // warm-up (and the first sample's length)
            double first = sw.Elapsed.TotalSeconds;
            var times = new List<double>();
            for (int r = 0; r < (first < 4 ? runs : 1); r++)
            {
                model.Reset();
                sw.Restart();
                model.Forward(prompt, p, logitsToKeep: 1);
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            prefill[p] = times[times.Count / 2];
            spread[p] = times.Count == 1 ? "1 run" : $"{times.Count} runs {times[0]:F0}-{times[^1]:F0}";
            if (profile)
            {
                AttentionAB(dtype, p);
                model.Reset();
                LlamaProfile.Start();
                sw.Restart();
                model.Forward(prompt, p, logitsToKeep: 1);
                PrintProfile($"{dtype.TorchName()} prefill {p}", sw.Elapsed.TotalMilliseconds, LlamaProfile.Stop());
            }
        }
        // greedy decode after decodePrompt tokens: one token a step, its argmax read back (as generation needs)
        model.Reset();
        var logits = model.Forward(Tensor.FromArray(ids[..decodePrompt], decodePrompt), decodePrompt, logitsToKeep: 1)!;
        long next = TopK.Forward(logits.Select(0, 0), 1).Indices.ToInt64Array()[0];
        var input = Tensor.FromArray([next], 1);
        var dsw = new Stopwatch();
        long allocated = 0;
        var step = Tensor.Zeros(dtype, 1, config.VocabSize);                         // the decode loop's logits buffer
        for (int s = 0; s < newTokens; s++)
        {
            if (s == 2) dsw.Start();
            input.Set(next, 0);
            long before = GC.GetAllocatedBytesForCurrentThread();
            logits = model.Forward(input, 1, step)!;
            if (s >= 2) allocated += GC.GetAllocatedBytesForCurrentThread() - before;
            next = TopK.Forward(logits.Select(0, 0), 1).Indices.ToInt64Array()[0];
        }
        dsw.Stop();
        if (profile)
        {
            LlamaProfile.Start();
            var psw = Stopwatch.StartNew();
            for (int s = 0; s < 8; s++) { input.Set(next, 0); model.Forward(input, 1); }
            PrintProfile($"{dtype.TorchName()} decode (8 steps)", psw.Elapsed.TotalMilliseconds, LlamaProfile.Stop());
        }
        return new Measured(prefill, spread, (newTokens - 2) / dsw.Elapsed.TotalSeconds, allocated / (newTokens - 2));
    }

    // the attention op alone at t = p on a 155M-like layer (16 heads, 4 kv, hd 64): the prefill path vs the row kernel
    private static void AttentionAB(DType dt, int p)
    {
        var q = Tensor.Uniform(DType.Float32, 5, -1f, 1f, p, 16 * 64).To(dt);
        var k = Tensor.Uniform(DType.Float32, 6, -1f, 1f, 4, p, 64).To(dt);
        var v = Tensor.Uniform(DType.Float32, 7, -1f, 1f, 4, p, 64).To(dt);
        var o = Tensor.Zeros(dt, p, 16 * 64);
        foreach (bool blocked in new[] { true, false, true, false })
        {
            Attention.CausalInto(q, k, v, 0, p, 0.125f, o, prefillKernel: blocked);
            var sw = Stopwatch.StartNew();
            for (int r = 0; r < 3; r++) Attention.CausalInto(q, k, v, 0, p, 0.125f, o, prefillKernel: blocked);
            Console.WriteLine($"attention A/B {dt.TorchName()} t={p}: {(blocked ? "prefill kernel (tiled, or GEMM-blocked)" : "row kernel")} {sw.Elapsed.TotalMilliseconds / 3:F1} ms");
        }
    }

    private static void PrintProfile(string what, double totalMs, IReadOnlyDictionary<string, double> modules)
    {
        Console.WriteLine($"profile {what}: {totalMs:F1} ms; " + string.Join(", ", modules.OrderByDescending(kv => kv.Value)
            .Select(kv => $"{kv.Key} {kv.Value:F1} ms ({kv.Value / totalMs * 100:F0} %)")) + $", rest {totalMs - modules.Values.Sum():F1} ms");
    }

    // best of N: 2 m n k / time of the engine's Matmul on [n, n] x [n, n] fp32 (normal mode)
    private static double SquareGemm(int n)
    {
        var a = Tensor.Uniform(DType.Float32, 1, -1f, 1f, n, n);
        var b = Tensor.Uniform(DType.Float32, 2, -1f, 1f, n, n);
        using var mode = ComputeSettings.UseBatchInvariant(false);
        Matmul.Forward(a, b);
        var sw = Stopwatch.StartNew();
        Matmul.Forward(a, b);
        double once = Math.Max(sw.Elapsed.TotalSeconds, 1e-6), best = once;
        int reps = (int)Math.Clamp(1.5 / once, 3, 200);
        for (int r = 0; r < reps; r++)
        {
            sw.Restart();
            Matmul.Forward(a, b);
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * n / best / 1e9;
    }

    // best of 8 copies of 256 MiB, split over the threads; bytes read + written per second
    private static double CopyBandwidth(int threads)
    {
        const int bytes = 256 << 20;
        var src = GC.AllocateUninitializedArray<byte>(bytes);
        var dst = GC.AllocateUninitializedArray<byte>(bytes);
        src.AsSpan().Fill(1);
        dst.AsSpan().Fill(2);
        double best = double.MaxValue;
        for (int r = 0; r < 8; r++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                long start = (long)bytes * t / threads, end = (long)bytes * (t + 1) / threads;
                src.AsSpan((int)start, (int)(end - start)).CopyTo(dst.AsSpan((int)start, (int)(end - start)));
            });
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * bytes / best;
    }

    // best of 8 sums of 512 MiB of float32 (twice the 260 MiB L3 of the machine this was written on), each thread's part
    // read as 4 interleaved sequential streams (faster here than one: 40 against 37 GB/s); bytes read per second
    private static unsafe double ReadBandwidth(int threads)
    {
        const long count = 128L << 20;
        var data = GC.AllocateUninitializedArray<float>((int)count, pinned: true);
        data.AsSpan().Fill(1f);
        double best = double.MaxValue;
        fixed (float* p0 = data)
        {
            float* p = p0;
            for (int r = 0; r < 8; r++)
            {
                var sw = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                {
                    long start = count * t / threads, quarter = (count * (t + 1) / threads - start) / 4 / 16 * 16;
                    float* s0 = p + start, s1 = s0 + quarter, s2 = s1 + quarter, s3 = s2 + quarter;
                    Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    for (long i = 0; i < quarter; i += 16)
                    {
                        a0 += Vector256.Load(s0 + i) + Vector256.Load(s0 + i + 8);
                        a1 += Vector256.Load(s1 + i) + Vector256.Load(s1 + i + 8);
                        a2 += Vector256.Load(s2 + i) + Vector256.Load(s2 + i + 8);
                        a3 += Vector256.Load(s3 + i) + Vector256.Load(s3 + i + 8);
                    }
                    if (Vector256.Sum(a0 + a1 + a2 + a3) == 0f) Console.Write("");   // keep the sum alive
                });
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
        }
        double bytes = 0;
        for (int t = 0; t < threads; t++) bytes += (count * (t + 1) / threads - count * t / threads) / 4 / 16 * 16 * 4 * 4.0;
        return bytes / best;
    }

    // --random-llama 155m: HF's LlamaForCausalLM with random weights (seeded), written once by the reference worker and
    // kept under ~/.cache/harness/bench-models (or DIR when --model DIR is given and has no config.json yet)
    private static string? RandomLlama(string size, string? target, TorchPeer? peer)
    {
        if (size != "155m")
        {
            Console.Error.WriteLine($"bench: --random-llama '{size}' is unknown; known: 155m");
            return null;
        }
        target ??= Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "harness", "bench-models", "llama-155m");
        if (File.Exists(Path.Combine(target, "config.json"))) return target;
        if (peer is null)
        {
            Console.Error.WriteLine("bench: --random-llama needs the reference interpreter (see the README)");
            return null;
        }
        var config = new JsonObject
        {
            ["hidden_size"] = 1024, ["intermediate_size"] = 2816, ["num_hidden_layers"] = 8, ["num_attention_heads"] = 16,
            ["num_key_value_heads"] = 4, ["vocab_size"] = 32000, ["max_position_embeddings"] = 4096, ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = 500000.0, ["tie_word_embeddings"] = false, ["hidden_act"] = "silu", ["initializer_range"] = 0.02,
        };
        Console.WriteLine($"writing a random 155M Llama to {target} (hidden 1024, intermediate 2816, 8 layers, 16 heads, 4 kv heads, vocab 32000, fp32) ...");
        var made = peer.MakeRandomLlama(config, DType.Float32);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(target))!);
        if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
        try { Directory.Move(made, target); }
        catch (IOException)
        {
            Directory.CreateDirectory(target);
            foreach (var f in Directory.GetFiles(made)) File.Copy(f, Path.Combine(target, Path.GetFileName(f)));
            Directory.Delete(made, recursive: true);
        }
        return target;
    }
}
