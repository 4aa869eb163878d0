using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Reference;

namespace Harness.Judge;

/// <summary>
/// llama-server on 127.0.0.1 at a free port, started by a reference worker of its own (op llama_server_start: it waits
/// until /health answers; the worker is sandboxed but shares the host's network, so this process reaches the server)
/// and stopped on Dispose, so a test that fails or times out stops it too (<c>using</c>). The server is
/// the worker's child with PR_SET_PDEATHSIG: a worker killed by its supervision, or a test host that dies, takes it along.
/// </summary>
public sealed class LlamaServer : IDisposable
{
    private readonly ReferenceClient _client;
    private readonly ReferenceWorker _worker;
    private readonly bool _ownsWorker;
    private bool _stopped;

    private LlamaServer(ReferenceClient client, ReferenceWorker worker, bool ownsWorker, int port, int pid, string buildInfo)
    {
        _client = client;
        _worker = worker;
        _ownsWorker = ownsWorker;
        Port = port;
        Pid = pid;
        BuildInfo = buildInfo;
    }

    public int Port { get; }

    /// <summary>The server's pid (in the worker's namespace, the same as the host's for a chroot).</summary>
    public int Pid { get; }

    /// <summary>/props' build_info (e.g. "b11669-Debian"), empty when the server does not say.</summary>
    public string BuildInfo { get; }

    public string Url => string.Create(CultureInfo.InvariantCulture, $"http://127.0.0.1:{Port}");

    /// <summary>
    /// The arguments that make llama-server compute an f32 GGUF in float32 throughout: no flash attention (its CPU kernel
    /// rounds through f16, and 0.7.0 turns it on by default) and an f32 KV cache (f16 by default). With the defaults the
    /// tiny Llama's logprobs are ~5e-3 nats off HF float32 (over the 1e-3 tolerance); with these, ~3e-6.
    /// </summary>
    public static readonly string[] Float32Arguments = ["-fa", "off", "-ctk", "f32", "-ctv", "f32"];

    /// <summary>A worker to start servers on (<see cref="Start"/>'s <c>worker</c>): sandboxed, on the host's network.</summary>
    public static ReferenceWorker NewWorker() => new() { Threads = 1, SandboxNetwork = false };

    /// <summary>Starts a server on a GGUF file the worker can see (a host path inside its root); float32 throughout unless
    /// <paramref name="float32"/> is false (then llama-server's own defaults). <paramref name="worker"/>: the worker that
    /// starts it (from <see cref="NewWorker"/>; the caller's, not disposed with the server, so servers started one after
    /// another on it pay one worker start: about 20 s of importing torch on a loaded 2-core machine); null: one of its own.</summary>
    public static LlamaServer Start(ReferenceClient client, string ggufHostPath, bool float32 = true, int contextTokens = 512, int threads = 1,
        ReferenceWorker? worker = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        // The server must be reachable from this process, and the reference's worker (client's) has a network namespace of
        // its own (the sandbox): the server gets a worker of its own, sandboxed but on the host's network (issue 24).
        bool owns = worker is null;
        worker ??= NewWorker();
        if (worker.SandboxNetwork)
            throw new ArgumentException("a llama-server worker must share the host's network (LlamaServer.NewWorker)", nameof(worker));
        var own = new ReferenceClient(worker);
        try
        {
            var r = own.Invoke("llama_server_start", new JsonObject
            {
                ["gguf"] = own.WorkerPath(ggufHostPath),
                ["ctx"] = contextTokens,
                ["threads"] = threads,
                ["timeout"] = 60,
                ["extra"] = new JsonArray((float32 ? Float32Arguments : []).Select(a => (JsonNode)JsonValue.Create(a)).ToArray()),
            }).Result;
            return new LlamaServer(own, worker, owns, (int)r["port"]!, (int)r["pid"]!, (string?)r["build_info"] ?? "");
        }
        catch
        {
            if (owns) worker.Dispose();
            throw;
        }
    }

    /// <summary>Stops the server (SIGTERM, SIGKILL after 10 s); returns its log's last lines. Idempotent.</summary>
    public string Stop()
    {
        if (_stopped) return "";
        _stopped = true;
        var r = _client.Invoke("llama_server_stop", new JsonObject { ["pid"] = Pid }).Result;
        return (string?)r["log_tail"] ?? "";
    }

    public void Dispose()
    {
        try
        {
            Stop();
        }
        catch (ReferenceException)
        {
            // the worker is gone: its server went with it (PR_SET_PDEATHSIG)
        }
        if (_ownsWorker) _worker.Dispose();
    }
}
