using System.Diagnostics;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;
using Harness.Engine.Tensors;

namespace Harness.Reference;

/// <summary>
/// A supervised Python worker (PROTOCOL.md). One call at a time; each call has a timeout. When the worker dies, hangs
/// or writes bytes that are not a frame, the call fails with a message saying which, the process is killed, and the next
/// call starts a fresh one. A Python exception fails only its call.
/// </summary>
public sealed class ReferenceWorker : IDisposable
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<ReferenceWorker>> SharedByDevice = new(StringComparer.Ordinal);

    /// <summary>The process-wide worker (one per test run) on the configured reference device (<see cref="ReferenceSettings.DeviceFor"/> of a CPU engine), started on first use.</summary>
    public static ReferenceWorker Shared => SharedOn(ReferenceSettings.Current.DeviceFor("cpu"));

    /// <summary>The process-wide worker whose reference runs on <paramref name="device"/> (one per device), started on first use.</summary>
    public static ReferenceWorker SharedOn(string device) =>
        SharedByDevice.GetOrAdd(device, d => new Lazy<ReferenceWorker>(() => new ReferenceWorker { Device = d }, LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    private const string Bootstrap =
        "import sys, struct\n" +
        "n = struct.unpack('<I', sys.stdin.buffer.read(4))[0]\n" +
        "src = sys.stdin.buffer.read(n).decode('utf-8')\n" +
        "exec(compile(src, 'harness_worker.py', 'exec'), {'__name__': '__harness_worker__'})\n";

    private readonly object _gate = new();
    private readonly string? _python;
    private readonly string _locateReason;
    private readonly string _source;
    private readonly StderrTail _stderr = new(60);
    private Process? _process;
    private int _nextId;

    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(180);
    public TimeSpan DefaultTimeout { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>The environment variable that caps the worker's memory (resident set, MB; unset or 0: no cap), read by the host into <see cref="ReferenceSettings.WorkerMemoryMb"/>.</summary>
    public const string MemoryLimitVariable = ReferenceSettings.MemoryLimitVariable;

    /// <summary>
    /// The cap on the worker's resident memory in MB (its process and children), checked every 100 ms while a call runs:
    /// past it the worker is killed, the call fails saying so, and the next call starts a fresh worker. 0: no cap.
    /// Default: the host's setting (<see cref="ReferenceSettings.WorkerMemoryMb"/>, HARNESS_WORKER_MEMORY_MB).
    /// </summary>
    public long MemoryLimitMb { get; set; } = ReferenceSettings.Current.WorkerMemoryMb;

    /// <summary>
    /// Where the worker puts the reference model (cpu, cuda, cuda:N, auto), handed to the worker in its own start
    /// (HARNESS_REFERENCE_DEVICE in the child's environment only; PROTOCOL.md). Default: the host's setting, else cpu.
    /// </summary>
    public string Device { get; init; } = ReferenceSettings.Current.DeviceFor("cpu");

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> _aliases = new(StringComparer.Ordinal);

    /// <summary>
    /// Messages from the worker name <paramref name="userPath"/> where they would name <paramref name="workerPath"/> (a folder
    /// staged into the chroot, or the sandbox's view of a host folder): the user sees the path they gave.
    /// </summary>
    public void AliasPath(string workerPath, string userPath)
    {
        if (workerPath != userPath) _aliases[workerPath.TrimEnd('/')] = userPath.TrimEnd('/');
    }

    private string UserPaths(string text)
    {
        foreach (var (seen, user) in _aliases.OrderByDescending(a => a.Key.Length)) text = text.Replace(seen, user, StringComparison.Ordinal);
        return text;
    }

    /// <summary>
    /// Ask the interpreter for its sandbox (HARNESS_SANDBOX=1; ci/reference-env.sh's wrapper honours it: own network and
    /// mount namespaces, an unprivileged user, resource limits, the host read-only, a private scratch folder). Default on.
    /// An interpreter that is not the wrapper ignores it.
    /// </summary>
    public bool Sandbox { get; init; } = true;

    /// <summary>
    /// With <see cref="Sandbox"/>: whether the worker gets a network namespace of its own (default, no network). False
    /// (HARNESS_SANDBOX_NETWORK=host) keeps the rest of the sandbox but shares the host's network: for a worker that
    /// starts a server this process must reach (the judge's llama-server on 127.0.0.1).
    /// </summary>
    public bool SandboxNetwork { get; init; } = true;

    /// <summary>The worker's resident memory now in MB (process and children), or null when it is not running or /proc cannot tell.</summary>
    public long? ResidentMb
    {
        get
        {
            var p = _process;
            return p is null ? null : ResidentKb(SafePid(p)) is long kb ? kb / 1024 : null;
        }
    }

    /// <summary>Torch threads to ask for at start (0: torch's default).</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>The handshake's answer: python, torch, transformers versions and the rest.</summary>
    public JsonObject? Hello { get; private set; }

    /// <summary>How many worker processes this instance has started (restarts included).</summary>
    public int Starts { get; private set; }

    public ReferenceWorker(string? python = null, string? workerSource = null)
    {
        if (python is null) (_python, _locateReason) = ReferenceLocator.Find();
        else (_python, _locateReason) = (python, $"explicit interpreter {python}");
        _source = workerSource ?? LoadEmbeddedSource();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Kill();
    }

    public bool IsAvailable => _python is not null;

    public string Description => _python is null ? _locateReason : $"{_locateReason}";

    /// <summary>The marker line in harness_worker.py where the extensions (python/ext/*.py) are spliced in.</summary>
    public const string ExtensionMarker = "# @@HARNESS_EXTENSIONS@@";

    /// <summary>
    /// The worker's source as it is started: harness_worker.py with the extensions (python/ext/*.py, in name order)
    /// spliced in at <see cref="ExtensionMarker"/>, then <paramref name="extra"/> (more Python that adds ops with
    /// OPS["name"] = fn; null: none). Pass the result to the constructor's workerSource to start such a worker.
    /// </summary>
    public static string Source(string? extra = null)
    {
        var source = LoadEmbeddedSource();
        return extra is null ? source : source.Replace(ExtensionMarker, ExtensionMarker + "\n" + extra, StringComparison.Ordinal);
    }

    private static string LoadEmbeddedSource()
    {
        var assembly = typeof(ReferenceWorker).Assembly;
        string Read(string name)
        {
            using var s = assembly.GetManifestResourceStream(name)
                ?? throw new ReferenceUnavailableException($"the worker source {name} is not embedded in Harness.Reference");
            using var r = new StreamReader(s, Encoding.UTF8);
            return r.ReadToEnd();
        }
        var worker = Read("harness_worker.py");
        if (!worker.Contains(ExtensionMarker, StringComparison.Ordinal))
            throw new ReferenceUnavailableException($"harness_worker.py has no line {ExtensionMarker}");
        var extensions = new StringBuilder();
        foreach (var name in assembly.GetManifestResourceNames().Where(n => n.StartsWith("ext/", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
            extensions.Append("\n# ---- ").Append(name).Append(" ----\n").Append(Read(name)).Append('\n');
        // the marker stays (after the extensions) so that Source(extra) splices after them
        return worker.Replace(ExtensionMarker, extensions.ToString() + ExtensionMarker, StringComparison.Ordinal);
    }

    /// <summary>Sends one request and returns the reply frame; throws a <see cref="ReferenceException"/> subtype on failure.</summary>
    public Frame Call(string op, JsonObject? args = null, IReadOnlyList<KeyValuePair<string, Tensor>>? tensors = null, TimeSpan? timeout = null)
    {
        lock (_gate)
        {
            EnsureStarted();
            return Exchange(op, args, tensors, timeout ?? DefaultTimeout);
        }
    }

    /// <summary>Starts the worker now (if not running) and returns the handshake.</summary>
    public JsonObject Start()
    {
        lock (_gate)
        {
            EnsureStarted();
            return Hello!;
        }
    }

    private void EnsureStarted()
    {
        if (_process is { HasExited: false }) return;
        if (_python is null) throw new ReferenceUnavailableException(_locateReason);
        _process?.Dispose();
        _process = null;

        Process process;
        try
        {
            process = WorkerSpawner.Start(StartInfo(_python));
        }
        catch (Exception e) when (e is not ReferenceException)
        {
            throw new ReferenceUnavailableException($"could not start the reference interpreter {_python} ({_locateReason}): {e.Message}", e);
        }
        Starts++;
        _stderr.Clear();
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) _stderr.Add(e.Data); };
        process.BeginErrorReadLine();
        _process = process;
        Handshake(process);
    }

    /// <summary>
    /// How a worker process is started: the bootstrap with this process's pid (the worker dies with it), and its settings
    /// in the child's own environment (sandbox, reference device), set or removed explicitly: none is inherited from ours.
    /// </summary>
    internal ProcessStartInfo StartInfo(string python)
    {
        var psi = new ProcessStartInfo(python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-u");
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(Bootstrap);
        psi.ArgumentList.Add(Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)); // the worker dies with this pid (PROTOCOL.md)
        psi.Environment["PYTHONUNBUFFERED"] = "1";
        psi.Environment["PYTHONDONTWRITEBYTECODE"] = "1";
        if (Sandbox) psi.Environment["HARNESS_SANDBOX"] = "1";
        if (Sandbox && !SandboxNetwork) psi.Environment["HARNESS_SANDBOX_NETWORK"] = "host";
        else psi.Environment.Remove("HARNESS_SANDBOX_NETWORK");
        psi.Environment[ReferenceSettings.DeviceVariable] = Device;
        return psi;
    }

    private void Handshake(Process process)
    {
        try
        {
            var src = Encoding.UTF8.GetBytes(_source);
            var stdin = process.StandardInput.BaseStream;
            stdin.Write(BitConverter.GetBytes((uint)src.Length));
            stdin.Write(src);
            stdin.Flush();
            var reply = Exchange("hello", new JsonObject { ["threads"] = Threads }, null, StartTimeout);
            Hello = reply.Header["result"] as JsonObject ?? new JsonObject();
            // what killed runs left in the folder shared with the chroot (their staged folders, built models, sandbox scratch)
            if ((string?)Hello["host_root"] is { Length: > 0 } root) ScratchFolders.CleanStale(Path.Join(root, "tmp", "harness"));
        }
        catch (ReferenceException e)
        {
            Kill();
            throw new ReferenceUnavailableException($"the reference worker ({_python}) failed to start: {e.Message}", e);
        }
        catch (IOException e)
        {
            var tail = _stderr.Text;
            Kill();
            throw new ReferenceUnavailableException($"the reference worker ({_python}) failed to start: {e.Message}\n--- worker stderr ---\n{tail}", e);
        }
    }

    private Frame Exchange(string op, JsonObject? args, IReadOnlyList<KeyValuePair<string, Tensor>>? tensors, TimeSpan timeout)
    {
        var process = _process!;
        int id = ++_nextId;
        var request = new Frame(
            new JsonObject { ["id"] = id, ["op"] = op, ["args"] = args ?? new JsonObject() },
            tensors ?? []);
        var readTask = Task.Run(() =>
        {
            request.WriteTo(process.StandardInput.BaseStream);
            return Frame.ReadFrom(process.StandardOutput.BaseStream);
        });
        bool finished = false;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            // Wait in slices, watching the memory cap between them.
            while (!finished && clock.Elapsed < timeout)
            {
                var slice = timeout - clock.Elapsed;
                finished = readTask.Wait(slice < TimeSpan.FromMilliseconds(100) ? slice : TimeSpan.FromMilliseconds(100));
                if (!finished && MemoryLimitMb > 0 && ResidentKb(SafePid(process)) is long kb && kb / 1024 > MemoryLimitMb)
                {
                    int pid = SafePid(process);
                    Kill();
                    throw new ReferenceWorkerFailedException(
                        $"reference op '{op}' exceeded the worker memory limit of {MemoryLimitMb} MB ({MemoryLimitVariable}; resident {kb / 1024} MB); " +
                        $"the worker (pid {pid}) was killed and restarts on the next call\n--- worker stderr (last lines) ---\n{_stderr.Text}");
                }
            }
        }
        catch (AggregateException ae) when (ae.InnerException is not null)
        {
            throw Failure(op, ae.InnerException);
        }
        if (!finished)
        {
            int pid = SafePid(process);
            Kill();
            throw new ReferenceWorkerFailedException(
                $"reference op '{op}' did not answer within {timeout.TotalSeconds:F0} s; the worker (pid {pid}) was killed and restarts on the next call " +
                $"(a model too slow for that, not a hang: `compare --reference-timeout S`)\n--- worker stderr (last lines) ---\n{_stderr.Text}");
        }
        var reply = readTask.Result;
        if ((int?)reply.Header["id"] != id)
        {
            Kill();
            throw new ReferenceWorkerFailedException($"reference op '{op}': reply id {reply.Header["id"]} does not match request id {id}; the worker was killed");
        }
        if ((bool?)reply.Header["ok"] != true)
        {
            var error = reply.Header["error"] as JsonObject;
            throw new ReferencePythonException(op,
                (string?)error?["type"] ?? "Error",
                UserPaths((string?)error?["message"] ?? "(no message)"),
                UserPaths((string?)error?["traceback"] ?? "(no traceback)"));
        }
        return reply;
    }

    private ReferenceWorkerFailedException Failure(string op, Exception e)
    {
        var process = _process;
        string what;
        if (e is InvalidDataException)
            what = $"wrote bytes that are not a protocol frame: {e.Message}";
        else
        {
            int? code = null;
            try
            {
                if (process is not null && process.WaitForExit(5000)) code = process.ExitCode;
            }
            catch (InvalidOperationException) { }
            what = code is int c ? $"exited with code {c} ({e.Message})" : $"stopped answering: {e.Message}";
        }
        Thread.Sleep(100); // let the last stderr lines arrive
        var tail = _stderr.Text;
        Kill();
        return new ReferenceWorkerFailedException(
            $"reference op '{op}' failed: the worker {what}; it restarts on the next call\n--- worker stderr (last lines) ---\n{tail}");
    }

    /// <summary>Resident memory (VmRSS) of a process and its descendants in kB, from /proc; null when unknown.</summary>
    private static long? ResidentKb(int pid)
    {
        if (pid <= 0 || !OperatingSystem.IsLinux()) return null;
        long total = 0;
        bool any = false;
        var pending = new Stack<int>([pid]);
        var seen = new HashSet<int>();
        while (pending.Count > 0)
        {
            int p = pending.Pop();
            if (!seen.Add(p)) continue;
            try
            {
                foreach (var line in File.ReadLines($"/proc/{p}/status"))
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal)
                        && long.TryParse(line[6..].Trim().Split(' ')[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long kb))
                    {
                        total += kb;
                        any = true;
                    }
                foreach (var task in Directory.EnumerateDirectories($"/proc/{p}/task"))
                {
                    var children = Path.Combine(task, "children");
                    if (!File.Exists(children)) continue;
                    foreach (var c in File.ReadAllText(children).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                        if (int.TryParse(c, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int child)) pending.Push(child);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return any ? total : null;
    }

    private static int SafePid(Process p)
    {
        try { return p.Id; } catch (InvalidOperationException) { return -1; }
    }

    private void Kill()
    {
        var p = _process;
        _process = null;
        if (p is null) return;
        var scratch = Hello is { } h && (string?)h["scratch"] is { Length: > 0 } s && (string?)h["host_root"] is { Length: > 0 } root
            ? Path.Join(root, s) : null;
        try
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit(5000);
        }
        catch (Exception) { /* already gone */ }
        p.Dispose();
        // The sandbox's private scratch (named after the worker's pid: a killed harness leaves it to the next run's ScratchFolders.CleanStale).
        if (scratch is not null)
            try { if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>Asks the worker to exit and waits for it.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_process is { HasExited: false })
            {
                try { Exchange("shutdown", null, null, TimeSpan.FromSeconds(10)); }
                catch (ReferenceException) { }
            }
            Kill();
        }
    }

    /// <summary>The last lines of the worker's stderr, for error messages.</summary>
    private sealed class StderrTail(int capacity)
    {
        private readonly Queue<string> _lines = new();
        public void Add(string line)
        {
            lock (_lines)
            {
                _lines.Enqueue(line);
                while (_lines.Count > capacity) _lines.Dequeue();
            }
        }
        public void Clear() { lock (_lines) _lines.Clear(); }
        public string Text { get { lock (_lines) return _lines.Count == 0 ? "(empty)" : string.Join('\n', _lines); } }
    }
}
