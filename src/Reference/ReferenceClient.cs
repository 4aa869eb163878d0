using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Reference;

/// <summary>Typed calls to the reference worker: one method per op in PROTOCOL.md.</summary>
public sealed class ReferenceClient(ReferenceWorker worker)
{
    public ReferenceWorker Worker { get; } = worker;

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<ReferenceClient>> SharedByDevice = new(StringComparer.Ordinal);

    /// <summary>The client over the process-wide worker (<see cref="ReferenceWorker.Shared"/>).</summary>
    public static ReferenceClient Shared => SharedOn(ReferenceSettings.Current.DeviceFor("cpu"));

    /// <summary>The client over the process-wide worker on <paramref name="device"/> (<see cref="ReferenceWorker.SharedOn"/>).</summary>
    public static ReferenceClient SharedOn(string device) =>
        SharedByDevice.GetOrAdd(device, d => new Lazy<ReferenceClient>(() => new(ReferenceWorker.SharedOn(d)), LazyThreadSafetyMode.ExecutionAndPublication)).Value;

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

    private static bool IsInside(string full, string root) =>
        full.StartsWith(Path.GetFullPath(root).TrimEnd('/') + "/", StringComparison.Ordinal);

    /// <summary>
    /// The worker's path for a host path: the path itself when the worker shares our filesystem; inside a chroot, the
    /// path below its root, or for any other host path the same file through the sandbox's read-only view of the host
    /// (hello's host_view; every symbolic link of the path resolved first, since absolute links would point into the chroot).
    /// </summary>
    public string WorkerPath(string hostPath)
    {
        var hello = Worker.Start();
        var root = (string?)hello["host_root"] ?? "";
        if (root.Length == 0) return hostPath;
        var full = Path.GetFullPath(hostPath);
        var fullRoot = Path.GetFullPath(root).TrimEnd('/');
        if (full.StartsWith(fullRoot + "/", StringComparison.Ordinal)) return full[fullRoot.Length..];
        if (HostView(hello) is { } view)
        {
            var real = Libc.RealPath(full).Path ?? full;
            var seen = view + real;
            Worker.AliasPath(seen, full);   // the worker's messages name the user's path
            return seen;
        }
        throw new ArgumentException($"{hostPath} is outside the reference interpreter's root {root}; use ScratchDirectory() or ShareDirectory()");
    }

    private static string? HostView(JsonObject hello) => (string?)hello["host_view"] is { Length: > 0 } v ? v.TrimEnd('/') : null;

    private readonly object _shareGate = new();
    private readonly Dictionary<string, (string Signature, string Staged)> _staged = new(StringComparer.Ordinal);

    /// <summary>
    /// A host folder the worker can read (an HF hub snapshot's relative links into ../../blobs included). No copy where
    /// none is needed: the folder itself when the worker shares our filesystem or sees the host through the sandbox's
    /// read-only view (<see cref="WorkerPath"/>). Otherwise (a chroot without the view, or a folder whose files are absolute
    /// links, which point into the chroot there; a folder, even inside the chroot, with files the sandbox's unprivileged user
    /// may not read) a folder staged inside its root: each file's final target hard-linked, or
    /// copied across filesystems, once per run and folder contents (the staged folder is reused until a file changes),
    /// removed at the end of the run (<see cref="ScratchFolders"/>). Messages from the worker name the user's folder.
    /// </summary>
    public string ShareDirectory(string hostDirectory)
    {
        var hello = Worker.Start();
        var root = (string?)hello["host_root"] ?? "";
        var full = Path.GetFullPath(hostDirectory).TrimEnd('/');
        if (root.Length == 0) return full;
        var files = Directory.GetFiles(full).Order(StringComparer.Ordinal).ToList();
        // a folder inside the chroot is the worker's own, but the sandbox's user (nobody) reads only what others may read:
        // a checkpoint written as root with mode 0600 there (safetensors' default under a umask of 077) is staged too
        if (IsInside(full, root) && ((int?)hello["uid"] is null or 0 || files.All(f => Libc.RealPath(f).Path is { } r && OthersCanRead(r))))
            return full;
        if (HostView(hello) is not null && !files.Any(IsAbsoluteLink) && WorkerCanRead(hello, full, files)) return full;
        var signature = string.Join('\n', files.Select(f =>
        {
            var info = new FileInfo(f);
            if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo t) info = t;
            return $"{Path.GetFileName(f)} {(info.Exists ? info.Length : -1)} {(info.Exists ? info.LastWriteTimeUtc.Ticks : 0)}";
        }));
        lock (_shareGate)
        {
            if (_staged.TryGetValue(full, out var hit) && hit.Signature == signature && Directory.Exists(hit.Staged)) return hit.Staged;
            if (hit.Staged is not null) Release(hit.Staged);
            var target = ScratchFolders.Create(ScratchParent(root), "shared-" + Path.GetFileName(full));
            foreach (var file in files)
            {
                var dest = Path.Combine(target, Path.GetFileName(file));
                var real = Libc.RealPath(file).Path ?? file;   // a link's final target (hard-linking the link itself would leave it dangling)
                if (!OthersCanRead(real) || Libc.Link(real, dest) != 0)
                {
                    File.Copy(real, dest);
                    if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(dest, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
                }
            }
            _staged[full] = (signature, target);
            Worker.AliasPath(WorkerPath(target), full);
            return target;
        }
    }

    /// <summary>
    /// Whether a worker that runs as an unprivileged user (the sandbox: nobody, in no group of ours) can read the folder's
    /// files where they are: every folder on the real path searchable by others, every file readable by others (a
    /// root-owned ~/.cache/huggingface is not: such a folder is staged).
    /// </summary>
    private static bool WorkerCanRead(JsonObject hello, string dir, IEnumerable<string> files)
    {
        if ((int?)hello["uid"] is null or 0) return true;
        var real = Libc.RealPath(dir).Path;
        if (real is null) return false;
        for (var d = new DirectoryInfo(real); d is not null; d = d.Parent)
            if ((d.UnixFileMode & UnixFileMode.OtherExecute) == 0) return false;
        return files.All(f => Libc.RealPath(f).Path is { } r && OthersCanRead(r) && SearchableByOthers(Path.GetDirectoryName(r)!));
    }

    private static bool OthersCanRead(string file)
    {
        if (OperatingSystem.IsWindows()) return true;
        try { return (File.GetUnixFileMode(file) & UnixFileMode.OtherRead) != 0; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    private static bool SearchableByOthers(string dir)
    {
        for (var d = new DirectoryInfo(dir); d is not null; d = d.Parent)
            if ((d.UnixFileMode & UnixFileMode.OtherExecute) == 0) return false;
        return true;
    }

    private static bool IsAbsoluteLink(string file)
    {
        try { return new FileInfo(file).LinkTarget is { } t && Path.IsPathRooted(t); }
        catch (IOException) { return true; }
    }

    private static string ScratchParent(string root) =>
        root.Length == 0 ? Path.Combine(Path.GetTempPath(), "harness") : Path.Join(root, "tmp", "harness");

    /// <summary>
    /// A fresh host directory that the worker can also see and write (inside its root when it runs in a chroot; owned by
    /// the sandbox's user when the worker runs as one), removed when released (<see cref="Release"/>) or at the end of the
    /// run, or by the next run when this one was killed (<see cref="ScratchFolders"/>).
    /// </summary>
    public string ScratchDirectory(string prefix)
    {
        var hello = Worker.Start();
        var root = (string?)hello["host_root"] ?? "";
        var dir = ScratchFolders.Create(ScratchParent(root), prefix);
        if ((int?)hello["uid"] is int uid and not 0 && Environment.IsPrivilegedProcess && (int?)hello["gid"] is int gid)
        {
            int rc = Libc.Chown(dir, uid, gid);
            if (rc != 0) throw new IOException($"{dir}: cannot hand the scratch folder to the worker's user {uid}: {Libc.Describe(rc)}");
        }
        return dir;
    }

    /// <summary>
    /// Hands a file this process wrote into a scratch folder to the worker's user, so the worker may change it in place
    /// (the sandbox's worker runs as nobody; a file we copied is ours). No-op when the worker runs as us or as root.
    /// </summary>
    public void HandOver(string hostPath)
    {
        var hello = Worker.Start();
        if ((int?)hello["uid"] is not (int uid and not 0) || !Environment.IsPrivilegedProcess || (int?)hello["gid"] is not int gid) return;
        int rc = Libc.Chown(hostPath, uid, gid);
        if (rc != 0) throw new IOException($"{hostPath}: cannot hand the file to the worker's user {uid}: {Libc.Describe(rc)}");
    }

    /// <summary>Removes a folder made by <see cref="ScratchDirectory"/> or <see cref="ShareDirectory"/> (no-op for others).</summary>
    public void Release(string hostDirectory)
    {
        lock (_shareGate)
            foreach (var key in _staged.Where(kv => kv.Value.Staged == hostDirectory).Select(kv => kv.Key).ToList()) _staged.Remove(key);
        ScratchFolders.Release(hostDirectory);
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
        var r = Worker.Call("build_model", args, timeout: OpTimeout).Header["result"]!.AsObject();
        var parameters = r["params"]!.AsArray().Select(p => (
            (string)p!["name"]!,
            p["shape"]!.AsArray().Select(s => (int)s!).ToArray(),
            (string)p["dtype"]!)).ToList();
        var files = r["files"]!.AsArray().Select(f => (string)f!).ToList();
        return new BuiltModel(hostDirectory, workerDir, parameters, files);
    }

    public sealed record ForwardResult(IReadOnlyDictionary<string, Tensor> Captured, Tensor Logits);

    /// <summary>A forward pass with hooks on the named modules; input is input_ids [B, T] (int64) or inputs_embeds [B, T, H].
    /// <paramref name="oracleModelHostDirectory"/>: the float64 oracle (with <see cref="Oracle"/>) upcasts that checkpoint's
    /// weights instead of the reference's (a lossy engine's reference holds its rounded weights, the oracle the original's).</summary>
    public ForwardResult Forward(string modelHostDirectory, DType dtype, Tensor input, IEnumerable<string> capture, string? oracleModelHostDirectory = null)
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
        if (oracleModelHostDirectory is not null) args["oracle_model_dir"] = WorkerPath(oracleModelHostDirectory);
        var reply = Worker.Call("forward", args, [new(embeds ? "inputs_embeds" : "input_ids", input)], timeout: OpTimeout);
        var captured = reply.Tensors.Where(t => t.Key != "logits").ToDictionary(t => t.Key, t => t.Value);
        return new ForwardResult(captured, reply.Tensor("logits") ?? throw new ReferenceException("forward returned no logits"));
    }

    public sealed record Generation(long[] Tokens, long[,] TopKIds, float[,] TopKLogprobs)
    {
        /// <summary>
        /// The modules asked for at every decode step: "step&lt;s&gt;.&lt;module&gt;" (the reference's greedy run, which is
        /// its teacher-forced run on its own tokens) and, with <see cref="Oracle"/>, "oracle.step&lt;s&gt;.&lt;module&gt;"
        /// (the float64 twin fed the same tokens). Empty when none were asked for.
        /// </summary>
        public IReadOnlyDictionary<string, Tensor> StepCaptures { get; init; } = new Dictionary<string, Tensor>();

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
    /// <param name="stepCapture">Modules captured at every decode step (<see cref="Generation.StepCaptures"/>).</param>
    /// <param name="forced">Teacher forcing on these tokens instead of the reference's own (decode step s fed forced[s - 1]:
    /// another engine's tokens, `harness judge --dump`; steps past them greedy). The step captures are then the
    /// reference's (and its oracle's) outputs fed those tokens.</param>
    /// <param name="oracleModelHostDirectory">The checkpoint whose weights the float64 oracle upcasts instead of the
    /// reference's (<see cref="Forward"/>).</param>
    public Generation Generate(string modelHostDirectory, DType dtype, Tensor input, int maxNewTokens, int topK, IEnumerable<string>? stepCapture = null,
        long[]? forced = null, string? oracleModelHostDirectory = null)
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
            ["capture_steps"] = new JsonArray((stepCapture ?? []).Select(c => (JsonNode)JsonValue.Create(c)).ToArray()),
        };
        if (oracleModelHostDirectory is not null) args["oracle_model_dir"] = WorkerPath(oracleModelHostDirectory);
        var reply = Worker.Call("generate", args, forced is null ? [new(embeds ? "inputs_embeds" : "input_ids", input)]
            : [new(embeds ? "inputs_embeds" : "input_ids", input), new("forced_tokens", Tensor.FromArray(forced, forced.Length))], timeout: OpTimeout);
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
        return new Generation(tokens, idArr, lpArr)
        {
            OracleTopKLogprobs = oracle,
            StepCaptures = StepCapturesOf(reply.Tensors),
        };
    }

    /// <summary>The decode-step captures of a reply that generated ("step&lt;s&gt;.*" and "oracle.step&lt;s&gt;.*").</summary>
    public static IReadOnlyDictionary<string, Tensor> StepCapturesOf(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        const string oracle = "oracle.";
        return tensors.Where(t => t.Key.StartsWith("step", StringComparison.Ordinal)
                || (t.Key.StartsWith(oracle, StringComparison.Ordinal) && t.Key.AsSpan(oracle.Length).StartsWith("step", StringComparison.Ordinal)))
            .ToDictionary(t => t.Key, t => t.Value);
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

    /// <summary>
    /// How long one model-level op (build_model, forward, generate, the model-specific ops) may take before the worker is
    /// killed as hung; null: the worker's default (300 s). A real-size model on the CPU needs more: `compare` scales it
    /// with the parameter count (<c>--reference-timeout</c> sets it).
    /// </summary>
    public TimeSpan? OpTimeout { get; set; }

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
        var frame = Worker.Call(op, args, inputs.Select(i => new KeyValuePair<string, Tensor>(i.Name, i.Value)).ToList(), timeout: OpTimeout);
        var result = frame.Header["result"] as JsonObject ?? new JsonObject();
        return new Reply(result, frame.Tensors.ToDictionary(t => t.Key, t => t.Value));
    }

    private Tensor One(string op, JsonObject? args, params (string Name, Tensor Value)[] inputs)
    {
        var reply = Worker.Call(op, args, inputs.Select(i => new KeyValuePair<string, Tensor>(i.Name, i.Value)).ToList(), timeout: OpTimeout);
        return reply.Tensor("out") ?? throw new ReferenceException($"reference op '{op}' returned no tensor 'out'");
    }
}
