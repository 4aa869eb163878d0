using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Scenarios;
using Harness.Tests.Correctness.Live;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 24, "the worker is not a sandbox" and "the HF hub cache". The worker ran as root inside the chroot with the
/// network and the host's devices, and a checkpoint is untrusted input. And `compare --model` on an HF hub snapshot
/// (files that are relative links into ../../blobs) exited 2 with a config.json "that does not exist" under
/// /tmp/harness/shared-ID: the folder shared with the chroot hard-linked the links themselves, so they dangled.
/// Code running in the worker here stands for a checkpoint that got to run code.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public sealed class WorkerSandboxTests(WorkerSandboxTests.SandboxedWorker sandboxed) : IDisposable, IClassFixture<WorkerSandboxTests.SandboxedWorker>
{
    /// <summary>
    /// The class's sandboxed worker (the shipped one plus the probe op), shared by its sandboxed tests: a worker start is
    /// the slow part, and each test makes its own client. Started by the first test that asks for it.
    /// </summary>
    public sealed class SandboxedWorker : IDisposable
    {
        public ReferenceWorker Worker { get; } = new(workerSource: ReferenceWorker.Source(ProbeOp)) { Threads = 1, DefaultTimeout = TimeSpan.FromSeconds(120), Sandbox = true };
        public void Dispose() => Worker.Dispose();
    }

    private const string ProbeOp = """
        def op_probe_sandbox(args, tensors):
            import socket
            out = {"uid": os.getuid()}
            try:
                socket.create_connection(("127.0.0.1", args["port"]), timeout=5).close()
                out["network"] = "connected"
            except OSError as e:
                out["network"] = f"{type(e).__name__}: {e}"
            writes = {}
            for p in args["paths"]:
                try:
                    with open(p, "w") as f:
                        f.write("written by the worker")
                    writes[p] = "written"
                except OSError as e:
                    writes[p] = f"{type(e).__name__}: {e}"
            out["writes"] = writes
            return out, []

        OPS["probe_sandbox"] = op_probe_sandbox
        """;

    private readonly string _outside = Path.Combine(Path.GetTempPath(), "harness-sandbox-" + Guid.NewGuid().ToString("N"));
    private readonly List<ReferenceWorker> _workers = [];

    public void Dispose()
    {
        foreach (var w in _workers) w.Dispose();
        if (Directory.Exists(_outside)) Directory.Delete(_outside, recursive: true);
    }

    /// <summary>
    /// A worker of the located interpreter (sandboxed: the class's, with the probe op; otherwise a fresh one without the
    /// sandbox); skips unless it is the chroot wrapper (the sandbox is ci/reference-env.sh's).
    /// </summary>
    private ReferenceWorker Worker(bool sandbox)
    {
        LiveReference.Client();   // skip or fail as the tier says
        var worker = sandbox ? sandboxed.Worker : new ReferenceWorker { Threads = 1, DefaultTimeout = TimeSpan.FromSeconds(120), Sandbox = false };
        if (!sandbox) _workers.Add(worker);
        var hello = worker.Start();
        Skip.If((string?)hello["host_root"] is not { Length: > 0 } && !ReferenceLocator.Required,
            $"{worker.Description} is not ci/reference-env.sh's chroot wrapper, which is the sandbox");
        return worker;
    }

    [SkippableFact]
    public void Code_in_the_worker_cannot_reach_the_network_nor_write_outside_its_scratch_folders()
    {
        var worker = Worker(sandbox: true);
        var hello = worker.Hello!;
        string view = (string)hello["host_view"]!, scratch = (string)hello["scratch"]!;
        Assert.NotEqual(0, (int)hello["uid"]!);
        var client = new ReferenceClient(worker);
        var shared = client.ScratchDirectory("sandbox-probe");   // a folder the harness shares with the worker: writable
        Directory.CreateDirectory(_outside);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(_outside, (UnixFileMode)0b111_111_111);   // writable by anyone: only the read-only view can stop it
        var model = Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();

        string[] refused = ["/probe", "/tmp/probe", "/root/probe", "/usr/lib/probe", view + _outside + "/probe", client.WorkerPath(model) + "/probe"];
        string[] allowed = [scratch + "/probe", client.WorkerPath(shared) + "/probe"];
        var result = worker.Call("probe_sandbox", new JsonObject
        {
            ["port"] = ((IPEndPoint)listener.LocalEndpoint).Port,
            ["paths"] = new JsonArray([.. refused.Concat(allowed).Select(p => (JsonNode)p)]),
        }).Header["result"]!;

        // its own network namespace: the host's port is not there (refused on the namespace's own loopback, or unreachable)
        Assert.Matches("^(ConnectionRefusedError|OSError)", (string)result["network"]!);
        foreach (var p in refused) Assert.NotEqual("written", (string)result["writes"]![p]!);
        foreach (var p in allowed) Assert.Equal("written", (string)result["writes"]![p]!);
        Assert.Empty(Directory.GetFiles(_outside));
        Assert.False(File.Exists(Path.Combine(model, "probe")));
        client.Release(shared);
        Assert.False(Directory.Exists(shared));
    }

    /// <summary>An HF hub cache entry: blobs named by hash, a snapshot of relative links into ../../blobs.</summary>
    private string HubSnapshot()
    {
        var blobs = Path.Combine(_outside, "models--harness--tiny-llama", "blobs");
        var snapshot = Path.Combine(_outside, "models--harness--tiny-llama", "snapshots", "0123456789abcdef");
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        foreach (var f in Directory.GetFiles(Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32")))
        {
            var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f)));
            File.Copy(f, Path.Combine(blobs, hash));
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(f)), Path.Combine("..", "..", "blobs", hash));
        }
        return snapshot;
    }

    [SkippableFact]
    public void A_hub_snapshot_of_relative_links_compares_in_the_sandbox_and_leaves_nothing_behind()
    {
        var worker = Worker(sandbox: true);
        var snapshot = HubSnapshot();
        var client = new ReferenceClient(worker);
        Assert.Equal(snapshot, client.ShareDirectory(snapshot));   // seen through the read-only view: no copy, no staging
        var before = ScratchFolders.OwnedNow.Count;
        using (var context = ScenarioContext.Live(client))
        {
            var scenario = LlamaScenario.ForCheckpoint(snapshot, 2, 1, false, DType.Float32, null, 7);
            var outcome = ScenarioRunner.Run(scenario, context);
            Assert.True(outcome.Result.Passed, outcome.Result.Describe());
        }
        Assert.Equal(before, ScratchFolders.OwnedNow.Count);
    }

    [SkippableFact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void A_checkpoint_inside_the_chroot_that_only_root_may_read_is_staged_for_the_sandbox_not_reported_missing()
    {
        // Seen with a random 1.1B Llama written inside the chroot's /tmp by the reference interpreter (model.safetensors
        // mode 0600, owner root): `compare` ran the reference and got "No such file or directory: /tmp/llama1b/
        // model.safetensors": the folder was handed to the sandbox's worker (user nobody) as is.
        var worker = Worker(sandbox: true);
        var client = new ReferenceClient(worker);
        var root = (string)worker.Start()["host_root"]!;
        var inside = Path.Combine(root, "tmp", "harness-private-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(inside);
        try
        {
            foreach (var f in Directory.GetFiles(Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32")))
            {
                var dest = Path.Combine(inside, Path.GetFileName(f));
                File.Copy(f, dest);
                File.SetUnixFileMode(dest, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
            var shared = client.ShareDirectory(inside);
            Assert.NotEqual(inside, shared);
            var forward = client.Forward(shared, DType.Float32, Tensor.FromArray([5L, 6L, 7L], 1, 3), []);
            Assert.Equal(3, forward.Logits.Shape[^2]);
            client.Release(shared);
            foreach (var f in Directory.GetFiles(inside)) File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
            Assert.Equal(inside, client.ShareDirectory(inside));   // readable by others: the worker's own folder, no copy
        }
        finally { Directory.Delete(inside, recursive: true); }
    }

    [SkippableFact]
    public void Without_the_view_a_hub_snapshot_is_staged_as_its_files_and_removed_when_released()
    {
        var worker = Worker(sandbox: false);
        var snapshot = HubSnapshot();
        var client = new ReferenceClient(worker);
        var staged = client.ShareDirectory(snapshot);
        Assert.NotEqual(snapshot, staged);
        Assert.Equal(staged, client.ShareDirectory(snapshot));   // once per run and folder, not once per scenario
        foreach (var f in Directory.GetFiles(snapshot))
        {
            var copy = new FileInfo(Path.Combine(staged, Path.GetFileName(f)));
            Assert.Null(copy.LinkTarget);   // the file, not the link (a relative link would dangle there)
            Assert.Equal(File.ReadAllBytes(f), File.ReadAllBytes(copy.FullName));
        }
        var forward = client.Forward(staged, DType.Float32, Tensor.FromArray([5L, 6L, 7L], 1, 3), []);   // HF loads the staged folder
        Assert.Equal(3, forward.Logits.Shape[^2]);
        client.Release(staged);
        Assert.False(Directory.Exists(staged));
    }
}
