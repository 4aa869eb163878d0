using System.Reflection;
using System.Reflection.Emit;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;
using Harness.Commands;
using Harness.Engine.Runtime;
using Harness.Reference;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 20 item 5: the settings, environment variables included, are read once at the boundary (Cli.ConfigureSettings)
/// and handed down. Left over after EngineSettings: `compare`/`run --device cuda` SET HARNESS_REFERENCE_DEVICE in this
/// process so that the worker would inherit it (a process-wide mutation as a way to pass a setting), ReferenceWorker read
/// HARNESS_WORKER_MEMORY_MB itself (and took a bad value as "no cap"), ReferenceLocator HARNESS_PYTHON/HARNESS_CACHE/
/// HARNESS_REQUIRE_REFERENCE, ModelBench HARNESS_PYTHON a second time, and ModelBench started its HF peer with
/// Process.Start on whatever thread ran it, without the worker's parent-death signal. These tests read the compiled
/// assemblies' IL (every call, ldftn included), not the sources: an alias or a `using static` cannot hide a call.
/// </summary>
public sealed class SettingsBoundaryTests
{
    private static readonly string[] EnvironmentMembers = ["GetEnvironmentVariable", "GetEnvironmentVariables", "SetEnvironmentVariable", "ExpandEnvironmentVariables"];

    private static readonly Assembly Engine = typeof(EngineSettings).Assembly, Reference = typeof(ReferenceSettings).Assembly, Cli = typeof(Harness.Cli).Assembly;

    private static List<string> EnvironmentCalls(Assembly assembly) =>
        Il.Calls(assembly).Where(c => c.Type == "System.Environment" && EnvironmentMembers.Contains(c.Member))
            .Select(c => $"{c.Caller} -> Environment.{c.Member}").Distinct().Order(StringComparer.Ordinal).ToList();

    [Fact]
    public void The_engine_assembly_reads_and_sets_no_environment_variable()
    {
        var calls = EnvironmentCalls(Engine);
        Assert.True(calls.Count == 0, "Harness.Engine touches the environment (read it at the boundary into EngineSettings):\n" + string.Join("\n", calls));
    }

    [Fact]
    public void The_reference_assembly_reads_and_sets_no_environment_variable()
    {
        var calls = EnvironmentCalls(Reference);
        Assert.True(calls.Count == 0, "Harness.Reference touches the environment (read it at the boundary into ReferenceSettings):\n" + string.Join("\n", calls));
    }

    [Fact]
    public void The_cli_reads_the_environment_at_its_boundary_only_and_sets_none()
    {
        var calls = EnvironmentCalls(Cli);
        Assert.True(calls.SequenceEqual(["Harness.Cli.ConfigureSettings -> Environment.GetEnvironmentVariable"]),
            "the CLI touches the environment below its boundary (read it in Cli.ConfigureSettings into the settings):\n" + string.Join("\n", calls));
    }

    /// <summary>
    /// Issue 24: a child that outlives a killed harness. The worker sets PR_SET_PDEATHSIG itself, and the kernel's parent
    /// there is the thread that forked it, so every child starts from WorkerSpawner's thread (a ReferenceWorker's start).
    /// ModelBench's HF peer was a Process.Start of its own.
    /// </summary>
    [Fact]
    public void Every_child_process_is_started_by_the_worker_spawner()
    {
        var starts = new[] { Engine, Reference, Cli }
            .SelectMany(Il.Calls)
            .Where(c => c.Type == "System.Diagnostics.Process" && c.Member is "Start" or ".ctor")
            .Select(c => c.Caller).Distinct().Order(StringComparer.Ordinal).ToList();
        Assert.True(starts.SequenceEqual(["Harness.Reference.WorkerSpawner.Serve"]),
            "processes started outside WorkerSpawner (start them as a ReferenceWorker):\n" + string.Join("\n", starts));
    }

    /// <summary>
    /// A setting is configured at the boundary or scoped (ComputeSettings.UseX), never a static another type can assign and
    /// leave changed (CudaDevice.SyncEachLaunch had a public setter that GpuSelfCheck changed and never restored).
    /// </summary>
    [Fact]
    public void No_static_can_be_assigned_from_outside_its_type()
    {
        const BindingFlags statics = BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly;
        var settable = new[] { Engine, Reference, Cli }.SelectMany(a => a.GetTypes())
            .Where(t => !t.IsDefined(typeof(System.Runtime.CompilerServices.CompilerGeneratedAttribute)))   // the compiler's lambda caches
            .SelectMany(t =>
                t.GetFields(statics).Where(f => !f.IsPrivate && !f.IsInitOnly && !f.IsLiteral).Select(f => $"field {t.FullName}.{f.Name}")
                    .Concat(t.GetProperties(statics).Where(p => p.SetMethod is { IsPrivate: false }).Select(p => $"property {t.FullName}.{p.Name}")))
            .Order(StringComparer.Ordinal).ToList();
        Assert.True(settable.Count == 0, "statics other types can assign (a setting belongs in the boundary's settings or a restoring scope):\n" + string.Join("\n", settable));
    }

    [Fact]
    public void The_reference_settings_come_from_the_variables_the_host_hands_over()
    {
        var vars = new Dictionary<string, string>
        {
            ["HARNESS_PYTHON"] = "/venv/bin/python3", ["HARNESS_CACHE"] = "/c", ["HARNESS_REQUIRE_REFERENCE"] = "1",
            ["HARNESS_WORKER_MEMORY_MB"] = "6144", ["HARNESS_REFERENCE_DEVICE"] = "cuda:1",
        };
        var engine = EngineSettings.From(n => vars.GetValueOrDefault(n));
        var s = ReferenceSettings.From(n => vars.GetValueOrDefault(n), engine);
        Assert.Equal("/venv/bin/python3", s.Python);
        Assert.Equal("/c", s.CacheDirectory);
        Assert.True(s.Required);
        Assert.Equal(6144, s.WorkerMemoryMb);
        Assert.Equal("cuda:1", s.DeviceFor("cpu"));
        Assert.Equal("cuda:1", s.DeviceFor("cuda"));
        Assert.Equal(("python3", "HARNESS_PYTHON=python3"), ReferenceLocator.Find(s with { Python = "python3" }));   // the locator reads the settings

        var none = ReferenceSettings.From(_ => null, EngineSettings.From(_ => null));
        Assert.Equal(0, none.WorkerMemoryMb);
        Assert.False(none.Required);
        Assert.Equal("cpu", none.DeviceFor("cpu"));
        Assert.Equal("cuda", none.DeviceFor("cuda"));          // `--device cuda` puts the reference on the GPU too, unless chosen
        var (python, reason) = ReferenceLocator.Find(none with { CacheDirectory = "/nonexistent-cache" });
        Assert.Null(python);
        Assert.Contains("looked for /nonexistent-cache/reference-python", reason);
    }

    [Theory]
    [InlineData("HARNESS_WORKER_MEMORY_MB", "6G", "HARNESS_WORKER_MEMORY_MB=6G is not a size in MB")]
    [InlineData("HARNESS_WORKER_MEMORY_MB", "-1", "HARNESS_WORKER_MEMORY_MB=-1 is not a size in MB")]
    [InlineData("HARNESS_REFERENCE_DEVICE", "gpu", "HARNESS_REFERENCE_DEVICE=gpu is not a reference device")]
    [InlineData("HARNESS_REFERENCE_DEVICE", "cuda:x", "HARNESS_REFERENCE_DEVICE=cuda:x is not a reference device")]
    public void A_bad_reference_setting_names_its_variable(string name, string value, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => ReferenceSettings.From(n => n == name ? value : null, EngineSettings.From(_ => null)));
        Assert.StartsWith(message, e.Message);
    }

    [Fact]
    public void The_cli_settings_come_from_the_variables_the_host_hands_over()
    {
        Assert.Equal("/f", CliSettings.From(n => n == "HARNESS_FIXTURES" ? "/f" : null).Fixtures);
        Assert.True(CliSettings.From(n => n == "CI" ? "true" : null).PlainTerminal);
        Assert.True(CliSettings.From(n => n == "TERM" ? "dumb" : null).PlainTerminal);
        Assert.False(CliSettings.From(n => n == "CI" ? "false" : null).PlainTerminal);
        Assert.False(CliSettings.From(n => n == "CI" ? "0" : null).PlainTerminal);
        Assert.Null(CliSettings.From(_ => null).Fixtures);
    }

    /// <summary>
    /// HARNESS_WORKER_MEMORY_MB reaches a worker as the host read it: the default of every worker's cap is the configured
    /// setting (the property a test or a command may still set for its own worker).
    /// </summary>
    [Fact]
    public void A_worker_takes_its_memory_cap_and_device_from_the_configured_settings()
    {
        var worker = new ReferenceWorker("/nonexistent/python", workerSource: "pass");
        Assert.Equal(ReferenceSettings.Current.WorkerMemoryMb, worker.MemoryLimitMb);
        Assert.Equal(ReferenceSettings.Current.DeviceFor("cpu"), worker.Device);
    }

    /// <summary>
    /// The reference device travels in the worker's own start: a stand-in interpreter (a shell script that writes down the
    /// HARNESS_REFERENCE_DEVICE it was started with, then exits) sees the worker's Device, set explicitly for each start,
    /// not whatever this process's environment holds.
    /// </summary>
    [Theory]
    [InlineData("cuda")]
    [InlineData("cuda:1")]
    [InlineData("cpu")]
    public void A_worker_is_started_with_its_reference_device(string device)
    {
        if (OperatingSystem.IsWindows()) return;                          // a shell script as the interpreter
        var dir = Directory.CreateTempSubdirectory("harness-worker-device-").FullName;
        try
        {
            var seen = Path.Combine(dir, "device");
            var python = Path.Combine(dir, "python");
            File.WriteAllText(python, $"#!/bin/sh\nprintf '%s' \"${{HARNESS_REFERENCE_DEVICE-unset}}\" > '{seen}'\nexit 7\n");
            File.SetUnixFileMode(python, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            using var worker = new ReferenceWorker(python, workerSource: "pass") { Device = device, StartTimeout = TimeSpan.FromSeconds(20) };
            Assert.Throws<ReferenceUnavailableException>(() => worker.Start());
            Assert.Equal(device, File.ReadAllText(seen));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>`compare`/`run --device cuda` ask for the process's worker on the reference device the settings give a CUDA
    /// engine (the GPU unless HARNESS_REFERENCE_DEVICE chose another), a worker of its own beside the CPU one.</summary>
    [Fact]
    public void A_cuda_command_gets_the_worker_on_its_reference_device()
    {
        var cuda = ReferenceWorker.SharedOn(ReferenceSettings.Current.DeviceFor("cuda"));
        Assert.Equal(ReferenceSettings.Current.DeviceFor("cuda"), cuda.Device);
        Assert.Same(cuda, ReferenceWorker.SharedOn(cuda.Device));
        Assert.Equal(ReferenceSettings.Current.DeviceFor("cpu"), ReferenceWorker.Shared.Device);
        if (ReferenceSettings.Current.Device is null) Assert.NotSame(ReferenceWorker.Shared, cuda);
        if (!cuda.IsAvailable) return;                                    // LiveContext prints why and gives none
        var context = CliSupport.LiveContext("run", "cuda");
        Assert.Same(cuda, context!.Client!.Worker);
    }

    /// <summary>The compiled IL's calls: (calling method, callee's declaring type, callee's name).</summary>
    private static class Il
    {
        private static readonly Dictionary<ushort, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => (ushort)o.Value);

        public static IEnumerable<(string Caller, string Type, string Member)> Calls(Assembly assembly)
        {
            using var stream = File.OpenRead(assembly.Location);
            using var pe = new PEReader(stream);
            var md = pe.GetMetadataReader();
            var found = new List<(string, string, string)>();
            foreach (var typeHandle in md.TypeDefinitions)
            {
                var type = md.GetTypeDefinition(typeHandle);
                var typeName = TypeName(md, typeHandle);
                foreach (var methodHandle in type.GetMethods())
                {
                    var method = md.GetMethodDefinition(methodHandle);
                    if (method.RelativeVirtualAddress == 0) continue;
                    var caller = Caller(typeName, md.GetString(method.Name));
                    var il = pe.GetMethodBody(method.RelativeVirtualAddress).GetILReader();
                    while (il.RemainingBytes > 0)
                    {
                        ushort code = il.ReadByte();
                        if (code == 0xFE) code = (ushort)(0xFE00 | il.ReadByte());
                        var op = OpCodesByValue[code];
                        switch (op.OperandType)
                        {
                            case OperandType.InlineMethod:
                                var (t, m) = Callee(md, MetadataTokens.EntityHandle(il.ReadInt32()));
                                found.Add((caller, t, m));
                                break;
                            case OperandType.InlineSwitch:
                                int targets = il.ReadInt32();
                                il.Offset += 4 * targets;
                                break;
                            default:
                                il.Offset += op.OperandType switch
                                {
                                    OperandType.InlineNone => 0,
                                    OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                                    OperandType.InlineVar => 2,
                                    OperandType.InlineI8 or OperandType.InlineR => 8,
                                    _ => 4,
                                };
                                break;
                        }
                    }
                }
            }
            return found;
        }

        /// <summary>"Harness.Cli.ConfigureSettings"; a lambda or local function is named after the method it is written in
        /// ("&lt;ConfigureSettings&gt;b__3_0" in "Harness.Cli+&lt;&gt;c" is Harness.Cli.ConfigureSettings).</summary>
        private static string Caller(string typeName, string method)
        {
            var outer = typeName.Split('+')[0];
            string Inner(string name) => name.StartsWith('<') && name.IndexOf('>') is > 1 and var close ? name[1..close] : name;
            if (method.StartsWith('<')) return $"{outer}.{Inner(method)}";
            var nested = typeName.Split('+');
            if (nested.Length > 1 && nested[^1].StartsWith('<') && !nested[^1].StartsWith("<>", StringComparison.Ordinal))
                return $"{outer}.{Inner(nested[^1])}";                   // an iterator's or async method's state machine
            return $"{typeName.Replace('+', '.')}.{method}";
        }

        private static string TypeName(MetadataReader md, TypeDefinitionHandle handle)
        {
            var type = md.GetTypeDefinition(handle);
            var name = md.GetString(type.Name);
            var declaring = type.GetDeclaringType();
            if (!declaring.IsNil) return TypeName(md, declaring) + "+" + name;
            var ns = md.GetString(type.Namespace);
            return ns.Length == 0 ? name : ns + "." + name;
        }

        private static string TypeName(MetadataReader md, EntityHandle handle) => handle.Kind switch
        {
            HandleKind.TypeReference => md.GetTypeReference((TypeReferenceHandle)handle) is var r && md.GetString(r.Namespace) is { Length: > 0 } ns
                ? ns + "." + md.GetString(r.Name) : md.GetString(md.GetTypeReference((TypeReferenceHandle)handle).Name),
            HandleKind.TypeDefinition => TypeName(md, (TypeDefinitionHandle)handle),
            _ => "?",   // a generic instantiation (TypeSpecification): not System.Environment nor System.Diagnostics.Process
        };

        private static (string Type, string Member) Callee(MetadataReader md, EntityHandle handle) => handle.Kind switch
        {
            HandleKind.MemberReference => md.GetMemberReference((MemberReferenceHandle)handle) is var r ? (TypeName(md, r.Parent), md.GetString(r.Name)) : default,
            HandleKind.MethodDefinition => md.GetMethodDefinition((MethodDefinitionHandle)handle) is var d ? (TypeName(md, d.GetDeclaringType()), md.GetString(d.Name)) : default,
            HandleKind.MethodSpecification => Callee(md, md.GetMethodSpecification((MethodSpecificationHandle)handle).Method),
            _ => ("?", "?"),
        };
    }
}
