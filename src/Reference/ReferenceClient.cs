using System.Text.Json.Nodes;
using Harness.Engine.Tensors;

namespace Harness.Reference;

/// <summary>Typed calls to the reference worker: one method per op in PROTOCOL.md.</summary>
public sealed class ReferenceClient(ReferenceWorker worker)
{
    public ReferenceWorker Worker { get; } = worker;

    /// <summary>The client over the process-wide worker.</summary>
    public static ReferenceClient Shared { get; } = new(ReferenceWorker.Shared);

    public sealed record Versions(string Python, string Torch, string Transformers, int Threads, string Blas, string Device = "cpu")
    {
        public override string ToString() => $"python {Python}, torch {Torch}, transformers {Transformers}, {Threads} threads, BLAS {Blas}, device {Device}";
    }

    public Versions GetVersions()
    {
        var h = Worker.Start();
        return new Versions((string?)h["python"] ?? "?", (string?)h["torch"] ?? "?", (string?)h["transformers"] ?? "?",
            (int?)h["threads"] ?? 0, (string?)h["blas"] ?? "?", (string?)h["device"] ?? "cpu");
    }

    /// <summary>The host path of a path as the worker sees it (the chroot's root prefixed).</summary>
    public string HostPath(string workerPath)
    {
        var root = (string?)Worker.Start()["host_root"] ?? "";
        return root.Length == 0 ? workerPath : Path.Join(root, workerPath);
    }

    /// <summary>The worker's path for a host path, which must lie inside the worker's root.</summary>
    public string WorkerPath(string hostPath)
    {
        var root = (string?)Worker.Start()["host_root"] ?? "";
        if (root.Length == 0) return hostPath;
        var full = Path.GetFullPath(hostPath);
        var fullRoot = Path.GetFullPath(root).TrimEnd('/');
        if (!full.StartsWith(fullRoot + "/", StringComparison.Ordinal))
            throw new ArgumentException($"{hostPath} is outside the reference interpreter's root {root}; use ScratchDirectory()");
        return full[fullRoot.Length..];
    }

    /// <summary>
    /// A host folder the worker can read: the folder itself when the worker shares our filesystem, else a scratch copy
    /// inside its root made of hard links (copies across filesystems), so a user's checkpoint reaches a chroot.
    /// </summary>
    public string ShareDirectory(string hostDirectory)
    {
        var root = (string?)Worker.Start()["host_root"] ?? "";
        var full = Path.GetFullPath(hostDirectory);
        if (root.Length == 0 || full.StartsWith(Path.GetFullPath(root).TrimEnd('/') + "/", StringComparison.Ordinal)) return full;
        var target = ScratchDirectory("shared-" + Path.GetFileName(full.TrimEnd('/')));
        foreach (var file in Directory.GetFiles(full))
        {
            var dest = Path.Combine(target, Path.GetFileName(file));
            if (!TryHardLink(file, dest)) File.Copy(file, dest);
        }
        return target;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true, EntryPoint = "link")]
    private static extern int Link(string oldPath, string newPath);

    private static bool TryHardLink(string source, string dest)
    {
        try { return Link(source, dest) == 0; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }

    /// <summary>A fresh host directory that the worker can also see (inside its root when it runs in a chroot).</summary>
    public string ScratchDirectory(string prefix)
    {
        var root = (string?)Worker.Start()["host_root"] ?? "";
        var baseDir = root.Length == 0 ? Path.Combine(Path.GetTempPath(), "harness") : Path.Join(root, "tmp", "harness");
        var dir = Path.Combine(baseDir, $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    public Tensor Matmul(Tensor a, Tensor b) => One("matmul", null, ("a", a), ("b", b));

    /// <summary>transformers.activations.ACT2FN[name](x), HF's own activation classes.</summary>
    public Tensor Activation(string name, Tensor x) => One("activation", new JsonObject { ["name"] = name }, ("x", x));

    public Tensor Gelu(Tensor x, bool tanh) => One("gelu", new JsonObject { ["approximate"] = tanh ? "tanh" : "none" }, ("x", x));

    public Tensor Silu(Tensor x) => One("silu", null, ("x", x));

    public Tensor Softmax(Tensor x, int dim) => One("softmax", new JsonObject { ["dim"] = dim }, ("x", x));

    public Tensor LogSoftmax(Tensor x, int dim) => One("log_softmax", new JsonObject { ["dim"] = dim }, ("x", x));

    /// <summary>An HF RMSNorm class (LlamaRMSNorm, Gemma3RMSNorm, Gemma3nRMSNorm, ...) applied to x in x's dtype.</summary>
    public Tensor RmsNorm(string cls, Tensor x, Tensor? weight, double eps, bool withScale = true)
    {
        var args = new JsonObject { ["cls"] = cls, ["eps"] = eps, ["with_scale"] = withScale, ["dim"] = x.Shape[^1] };
        return weight is null ? One("rms_norm", args, ("x", x)) : One("rms_norm", args, ("x", x), ("weight", weight));
    }

    /// <summary>down(act(gate(x)) * up(x)) computed by torch in the given dtype; weights are [out, in] as in nn.Linear.</summary>
    public Tensor Mlp(string hiddenAct, Tensor x, Tensor gate, Tensor up, Tensor down) =>
        One("mlp", new JsonObject { ["hidden_act"] = hiddenAct, ["dtype"] = x.DType.TorchName() },
            ("x", x), ("gate_proj", gate), ("up_proj", up), ("down_proj", down));

    public sealed record BuiltModel(string HostDirectory, string WorkerDirectory, IReadOnlyList<(string Name, int[] Shape, string DType)> Parameters, IReadOnlyList<string> Files);

    /// <summary>Builds a model from an HF config dict with a fixed seed and saves it with save_pretrained (safetensors).</summary>
    public BuiltModel BuildModel(JsonObject config, ulong seed, DType dtype, string hostDirectory, string? modelClass = null)
    {
        var workerDir = WorkerPath(hostDirectory);
        var args = new JsonObject
        {
            ["config"] = config.DeepClone(),
            ["seed"] = seed,
            ["dtype"] = dtype.TorchName(),
            ["out_dir"] = workerDir,
        };
        if (modelClass is not null) args["model_class"] = modelClass;
        var r = Worker.Call("build_model", args).Header["result"]!.AsObject();
        var parameters = r["params"]!.AsArray().Select(p => (
            (string)p!["name"]!,
            p["shape"]!.AsArray().Select(s => (int)s!).ToArray(),
            (string)p["dtype"]!)).ToList();
        var files = r["files"]!.AsArray().Select(f => (string)f!).ToList();
        return new BuiltModel(hostDirectory, workerDir, parameters, files);
    }

    public sealed record ForwardResult(IReadOnlyDictionary<string, Tensor> Captured, Tensor Logits);

    /// <summary>A forward pass with hooks on the named modules; input is input_ids [B, T] (int64) or inputs_embeds [B, T, H].</summary>
    public ForwardResult Forward(string modelHostDirectory, DType dtype, Tensor input, IEnumerable<string> capture)
    {
        bool embeds = input.DType.IsFloatingPoint();
        var args = new JsonObject
        {
            ["model_dir"] = WorkerPath(modelHostDirectory),
            ["dtype"] = dtype.TorchName(),
            ["capture"] = new JsonArray(capture.Select(c => (JsonNode)JsonValue.Create(c)).ToArray()),
            ["input_kind"] = embeds ? "inputs_embeds" : "input_ids",
            ["oracle"] = Oracle,
            ["oracle_mode"] = OracleMode,
        };
        var reply = Worker.Call("forward", args, [new(embeds ? "inputs_embeds" : "input_ids", input)]);
        var captured = reply.Tensors.Where(t => t.Key != "logits").ToDictionary(t => t.Key, t => t.Value);
        return new ForwardResult(captured, reply.Tensor("logits") ?? throw new ReferenceException("forward returned no logits"));
    }

    public sealed record Generation(long[] Tokens, long[,] TopKIds, float[,] TopKLogprobs)
    {
        /// <summary>
        /// With <see cref="Oracle"/>: the float64 twin's logprobs of the same top-k ids, teacher-forced on the greedy tokens
        /// ([steps, k]); null otherwise.
        /// </summary>
        public double[,]? OracleTopKLogprobs { get; init; }
    }

    /// <summary>
    /// Greedy decoding of maxNewTokens, with the top-k log-probabilities of the raw logits at each step (and, with
    /// <see cref="Oracle"/>, the float64 twin's teacher-forced logprobs of the same ids).
    /// </summary>
    public Generation Generate(string modelHostDirectory, DType dtype, Tensor input, int maxNewTokens, int topK)
    {
        bool embeds = input.DType.IsFloatingPoint();
        var args = new JsonObject
        {
            ["model_dir"] = WorkerPath(modelHostDirectory),
            ["dtype"] = dtype.TorchName(),
            ["max_new_tokens"] = maxNewTokens,
            ["top_k"] = topK,
            ["oracle"] = Oracle,
            ["oracle_mode"] = OracleMode,
        };
        var reply = Worker.Call("generate", args, [new(embeds ? "inputs_embeds" : "input_ids", input)]);
        var tokens = reply.Tensor("tokens")!.ToInt64Array();
        var ids = reply.Tensor("topk_ids")!;
        var lps = reply.Tensor("topk_logprobs")!;
        int steps = ids.Shape[0], k = ids.Shape[1];
        var idArr = new long[steps, k];
        var lpArr = new float[steps, k];
        var flatIds = ids.ToInt64Array();
        var flatLps = lps.ToFloatArray();
        for (int s = 0; s < steps; s++)
            for (int j = 0; j < k; j++)
            {
                idArr[s, j] = flatIds[s * k + j];
                lpArr[s, j] = flatLps[s * k + j];
            }
        double[,]? oracle = null;
        if (reply.Tensor("oracle_topk_logprobs") is { } ot)
        {
            if (!ot.Shape.SequenceEqual(ids.Shape))
                throw new ReferenceException($"generate returned oracle_topk_logprobs {Shape.Format(ot.Shape)}, expected {Shape.Format(ids.Shape)} as topk_ids");
            var flat = ot.ToDoubleArray();
            oracle = new double[steps, k];
            for (int s = 0; s < steps; s++)
                for (int j = 0; j < k; j++) oracle[s, j] = flat[s * k + j];
        }
        return new Generation(tokens, idArr, lpArr) { OracleTopKLogprobs = oracle };
    }

    public sealed record MatmulTiming(double Seconds, double Gflops);

    /// <summary>torch.matmul timed by the worker (best of repeats) at the given shape and thread count.</summary>
    public MatmulTiming BenchMatmul(int m, int n, int k, DType dtype, int threads, int repeats, bool transposeB = false)
    {
        var r = Worker.Call("bench_matmul", new JsonObject
        {
            ["m"] = m, ["n"] = n, ["k"] = k, ["dtype"] = dtype.TorchName(), ["threads"] = threads, ["repeats"] = repeats,
            ["transpose_b"] = transposeB,
        }).Header["result"]!.AsObject();
        return new MatmulTiming((double)r["seconds"]!, (double)r["gflops"]!);
    }

    /// <summary>
    /// When true, model-level ops (forward and the model-specific ops of python/ext) also run the float64 twin of the
    /// model and return its captures as "oracle.&lt;name&gt;" (float64): the oracle that tells the reference's own error.
    /// </summary>
    public bool Oracle { get; set; }

    /// <summary>
    /// How the worker computes the float64 oracle: "stream" (default: the reference model itself in float64, each decoder
    /// layer upcast only while it runs, embeddings on the rows looked up, lm_head in slices; one layer's float64 copy at
    /// a time) or "whole" (a deep-copied float64 twin of the model: 8 bytes a parameter). Both give the same float64 values.
    /// </summary>
    public string OracleMode { get; set; } = "stream";

    public sealed record Reply(JsonObject Result, IReadOnlyDictionary<string, Tensor> Tensors)
    {
        public Tensor Need(string name) => Tensors.TryGetValue(name, out var t) ? t
            : throw new ReferenceException($"the reference returned no tensor '{name}' (it returned {string.Join(", ", Tensors.Keys)})");
    }

    /// <summary>
    /// Any op (model-specific ones from python/ext included) with named tensor inputs; args get "oracle" = <see cref="Oracle"/>
    /// unless they set it. Returns the reply's result object and its tensors by name.
    /// </summary>
    public Reply Invoke(string op, JsonObject? args, params (string Name, Tensor Value)[] inputs)
    {
        args ??= new JsonObject();
        if (!args.ContainsKey("oracle")) args["oracle"] = Oracle;
        if (!args.ContainsKey("oracle_mode")) args["oracle_mode"] = OracleMode;
        var frame = Worker.Call(op, args, inputs.Select(i => new KeyValuePair<string, Tensor>(i.Name, i.Value)).ToList());
        var result = frame.Header["result"] as JsonObject ?? new JsonObject();
        return new Reply(result, frame.Tensors.ToDictionary(t => t.Key, t => t.Value));
    }

    private Tensor One(string op, JsonObject? args, params (string Name, Tensor Value)[] inputs)
    {
        var reply = Worker.Call(op, args, inputs.Select(i => new KeyValuePair<string, Tensor>(i.Name, i.Value)).ToList());
        return reply.Tensor("out") ?? throw new ReferenceException($"reference op '{op}' returned no tensor 'out'");
    }
}
