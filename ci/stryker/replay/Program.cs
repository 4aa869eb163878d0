// Replays Stryker.NET mutants by id, in one process (ci/stryker/replay.sh drives it; README "Mutation testing").
//
// Stryker compiles every mutant of the engine into one Harness.Engine.dll and activates one at a time through the
// static class it injects, `Stryker<hash>.MutantControl`: each mutated expression reads
// `MutantControl.IsActive(ID) ? mutant : original`, and IsActive compares ID with the static `ActiveMutant`, which starts
// unset (-2) and is read once from the environment variable that STRYKER_MUTANT_ID_CONTROL_VAR names (-1 when none).
// This runner loads a test assembly beside such a mutated engine, sets `ActiveMutant` by reflection and runs the chosen
// xunit [Fact]/[Theory] cases (InlineData, MemberData, ClassData rows) against each mutant id in turn, stopping at a
// mutant's first failing case, as Stryker does. Every chosen case must first pass with no mutant active (-1).
//
// One line per mutant on --out (tab-separated): id, file:line, mutator, verdict (killed | survived | timeout |
// compile-error: a mutant Stryker's rollback removed, found by the absence of its id in the assembly's IL), seconds,
// and for a kill the first failing case with its exception. A case that runs past --limit seconds is a hang: the
// runner writes "timeout" and exits 3 (a hung thread cannot be stopped), and replay.sh starts it again after that id.
//
// Limits: a mutant in a static initializer is read once per process, before any mutant is set, and engine code that
// caches a result in a static field keeps the value computed under an earlier mutant (or the baseline): replay those,
// and confirm every survivor, one process per mutant (replay.sh --fresh).
using System.Diagnostics;
using System.Reflection;
using System.Runtime.Loader;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Harness.MutantReplay;

public static class Program
{
    const string Usage =
        "usage: Harness.MutantReplay --tests DIR --ids ID[,ID|FROM-TO...] --test PATTERN [--test PATTERN ...]\n" +
        "         [--engine MUTATED/Harness.Engine.dll] [--assembly Harness.Correctness.dll] [--mutants MAP.tsv]\n" +
        "         [--out FILE] [--limit SECONDS] [--no-baseline] [--list]\n" +
        "  --tests DIR      the test build (its assembly and dependencies)\n" +
        "  --engine DLL     the campaign's mutated Harness.Engine.dll (default: DIR's own)\n" +
        "  --test PATTERN   cases whose 'Namespace.Class.Method(row)' contains PATTERN, in the order given (fast first);\n" +
        "                   '!PATTERN' drops cases; --tests-file FILE reads one pattern a line ('#' comments)\n" +
        "  --ids            mutant ids: '12,15,20-31'; --ids-file FILE takes the first number of each line\n" +
        "  --mutants MAP    ci/stryker/mutants.py's table (id, file:line, mutator, description) to label the lines\n" +
        "  --out FILE       appends one line per mutant (default: stdout)\n" +
        "  --limit SECONDS  per case; past it the mutant is a timeout and the process exits 3 (default 300)\n" +
        "  --no-baseline    skip the run with no mutant active (with no ids the baseline alone runs)\n" +
        "  --list           print the chosen cases and exit";

    public static int Main(string[] args)
    {
        try { return Run(args); }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"replay: {e.Message}");
            return 2;
        }
    }

    sealed class UsageException(string message) : Exception(message);

    static int Run(string[] args)
    {
        string? testsDir = null, engine = null, outFile = null, mapFile = null;
        string assemblyName = "Harness.Correctness.dll";
        var patterns = new List<string>();
        var ids = new List<int>();
        double limit = 300;
        bool baseline = true, list = false;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{args[i]} needs a value\n{Usage}");
            switch (args[i])
            {
                case "--tests": testsDir = Path.GetFullPath(Next()); break;
                case "--engine": engine = Path.GetFullPath(Next()); break;
                case "--assembly": assemblyName = Next(); break;
                case "--test": patterns.Add(Next()); break;
                case "--tests-file":
                    patterns.AddRange(ReadLines(Next()));
                    break;
                case "--ids": ids.AddRange(ParseIds(Next())); break;
                case "--ids-file":
                    foreach (var line in ReadLines(Next())) ids.AddRange(ParseIds(line.Split(' ', '\t')[0]));
                    break;
                case "--mutants": mapFile = Next(); break;
                case "--out": outFile = Next(); break;
                case "--limit":
                    if (!double.TryParse(Next(), System.Globalization.CultureInfo.InvariantCulture, out limit) || limit <= 0)
                        throw new UsageException($"--limit: '{args[i]}' is not a positive number of seconds");
                    break;
                case "--no-baseline": baseline = false; break;
                case "--list": list = true; break;
                case "--help" or "-h": Console.WriteLine(Usage); return 0;
                default: throw new UsageException($"unknown argument '{args[i]}'\n{Usage}");
            }
        }
        if (testsDir is null) throw new UsageException($"--tests DIR is required\n{Usage}");
        if (patterns.Count == 0) throw new UsageException("no --test PATTERN: which tests judge the mutants?");
        if (!list && ids.Count == 0 && !baseline) throw new UsageException("no mutant ids (--ids or --ids-file) and --no-baseline: nothing to run");
        var testPath = Path.Combine(testsDir, assemblyName);
        engine ??= Path.Combine(testsDir, "Harness.Engine.dll");
        foreach (var p in new[] { testPath, engine })
            if (!File.Exists(p)) throw new UsageException($"{p}: no such file");

        // The engine first, from the mutated build: every assembly of the test folder that references Harness.Engine then
        // binds to this one. Everything else resolves from the test folder.
        AssemblyLoadContext.Default.Resolving += (ctx, name) =>
        {
            var p = Path.Combine(testsDir, name.Name + ".dll");
            return File.Exists(p) ? ctx.LoadFromAssemblyPath(p) : null;
        };
        var engineAsm = AssemblyLoadContext.Default.LoadFromAssemblyPath(engine);
        var testAsm = AssemblyLoadContext.Default.LoadFromAssemblyPath(testPath);
        var control = MutantSwitch.Find(engineAsm);
        if (control is null && !list)
            throw new UsageException($"{engine}: no Stryker MutantControl in this assembly (not a campaign's mutated engine)");
        // Without a baseline the first mutant is active before any test code runs (collecting the cases runs the test
        // assembly's module initializer and MemberData, which may touch engine statics): a static initializer of that
        // mutant is then read mutated, which is what --fresh (one process per mutant) relies on.
        if (!baseline && ids.Count > 0) control!.Set(ids[0]);

        var cases = Cases.Collect(testAsm, patterns);
        if (list)
        {
            foreach (var c in cases) Console.WriteLine(c.Name);
            Console.Error.WriteLine($"{cases.Count} cases");
            return 0;
        }
        if (cases.Count == 0) throw new UsageException("no test case matches the --test patterns");
        var map = mapFile is null ? new Dictionary<int, string[]>() : ReadMap(mapFile);
        using var output = outFile is null ? new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = true }
            : new StreamWriter(outFile, append: true) { AutoFlush = true };
        Console.Error.WriteLine($"replay: {cases.Count} cases, {ids.Count} mutants, engine {engine}");

        var sw = Stopwatch.StartNew();
        if (baseline)
        {
            var (verdict, detail) = RunMutant(control!, -1, cases, limit);
            if (verdict != "survived")
            {
                output.WriteLine($"-1\t-\t-\tbaseline-failed\t{sw.Elapsed.TotalSeconds:F1}\t{detail}");
                Console.Error.WriteLine($"replay: with no mutant active a case fails ({verdict}): {detail}");
                return 2;   // not 3: the driver must stop, not go on after a mutant
            }
            Console.Error.WriteLine($"replay: baseline (no mutant) passes, {sw.Elapsed.TotalSeconds:F1} s");
        }
        var engineBytes = File.ReadAllBytes(engine);
        foreach (var id in ids)
        {
            sw.Restart();
            Console.Error.WriteLine($"replay: mutant {id}");
            var (verdict, detail) = Compiled(engineBytes, id) ? RunMutant(control!, id, cases, limit)
                : ("compile-error", "not in the mutated assembly (no ldc.i4 of its id): Stryker's rollback removed it");
            var label = map.TryGetValue(id, out var m) ? $"{m[1]}\t{m[2]}" : "?\t?";
            output.WriteLine($"{id}\t{label}\t{verdict}\t{sw.Elapsed.TotalSeconds:F1}\t{detail}");
            if (verdict == "timeout")
            {
                output.Flush();
                Environment.Exit(3);   // the hung case's thread keeps running; the driver restarts after this id
            }
        }
        control!.Set(-1);
        return 0;
    }

    static (string Verdict, string Detail) RunMutant(MutantSwitch control, int id, List<Case> cases, double limit)
    {
        control.Set(id);
        var clock = Stopwatch.StartNew();
        foreach (var c in cases)
        {
            if (id == -1 && clock.Elapsed.TotalSeconds > 0) Console.Error.WriteLine($"replay: baseline {clock.Elapsed.TotalSeconds,7:F1} s  {c.Name}");
            Exception? failure = null;
            var thread = new Thread(() =>
            {
                try { c.Run(); }
                catch (Exception e) { failure = e; }
            }, 256 << 20) { IsBackground = true, Name = c.Name };
            thread.Start();
            if (!thread.Join(TimeSpan.FromSeconds(limit))) return ("timeout", $"{c.Name} ran past {limit} s");
            if (failure is null) continue;
            var inner = Unwrap(failure);
            if (inner.GetType().Name == "SkipException") continue;   // Xunit.SkippableFact's Skip.If: skipped, as under xunit
            var message = string.Join(' ', inner.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            if (message.Length > 300) message = message[..300] + "...";
            return ("killed", $"{c.Name}: {inner.GetType().Name}: {message}");
        }
        return ("survived", "");
    }

    /// <summary>
    /// Whether the mutated assembly tests the id at all: every mutant Stryker keeps is an `IsActive(ID)` call whose
    /// argument is an `ldc.i4 ID` (0x20 and the little-endian int32) in the IL; a mutant whose compile error Stryker
    /// rolled back (its log does not always say so) has none, and activating it changes nothing. Ids below 128 are
    /// emitted in shorter forms and are taken as compiled.
    /// </summary>
    static bool Compiled(byte[] assembly, int id)
    {
        if (id < 128) return true;
        Span<byte> pattern = [0x20, (byte)id, (byte)(id >> 8), (byte)(id >> 16), (byte)(id >> 24)];
        return assembly.AsSpan().IndexOf(pattern) >= 0;
    }

    static Exception Unwrap(Exception e)
    {
        while (true)
        {
            if (e is TargetInvocationException { InnerException: { } t }) e = t;
            else if (e is AggregateException { InnerExceptions.Count: 1 } a) e = a.InnerExceptions[0];
            else return e;
        }
    }

    static IEnumerable<string> ReadLines(string path) =>
        File.Exists(path)
            ? File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#'))
            : throw new UsageException($"{path}: no such file");

    static IEnumerable<int> ParseIds(string text)
    {
        foreach (var part in text.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries))
        {
            var range = part.Split('-');
            if (range.Length == 2 && int.TryParse(range[0], out int from) && int.TryParse(range[1], out int to) && from <= to)
                for (int id = from; id <= to; id++) yield return id;
            else if (range.Length == 1 && int.TryParse(part, out int one)) yield return one;
            else throw new UsageException($"'{part}' is not a mutant id or FROM-TO range");
        }
    }

    static Dictionary<int, string[]> ReadMap(string path)
    {
        var map = new Dictionary<int, string[]>();
        foreach (var line in ReadLines(path))
        {
            var cols = line.Split('\t');
            if (cols.Length < 3 || !int.TryParse(cols[0], out int id))
                throw new UsageException($"{path}: '{line}' is not 'id<TAB>file:line<TAB>mutator...' (ci/stryker/mutants.py)");
            map[id] = cols;
        }
        return map;
    }
}

/// <summary>The injected MutantControl's active mutant: a static field or property named ActiveMutant (Stryker.NET
/// 4-5) or the field _activeMutant behind it (later versions).</summary>
sealed class MutantSwitch(Action<int> set)
{
    public void Set(int id) => set(id);

    public static MutantSwitch? Find(Assembly engine)
    {
        Type[] types;
        try { types = engine.GetTypes(); }
        catch (ReflectionTypeLoadException e) { types = e.Types.Where(t => t is not null).ToArray()!; }
        const BindingFlags any = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static;
        foreach (var t in types.Where(t => t.Name == "MutantControl"))
        {
            if (t.GetProperty("ActiveMutant", any) is { CanWrite: true } p) return new MutantSwitch(id => p.SetValue(null, id));
            if ((t.GetField("ActiveMutant", any) ?? t.GetField("_activeMutant", any)) is { IsLiteral: false } f)
                return new MutantSwitch(id => f.SetValue(null, id));
        }
        return null;
    }
}

sealed record Case(string Name, Action Run);

/// <summary>The xunit cases of the test assembly whose names match the patterns, in pattern order.</summary>
static class Cases
{
    public static List<Case> Collect(Assembly tests, List<string> patterns)
    {
        var include = patterns.Where(p => !p.StartsWith('!')).ToList();
        var exclude = patterns.Where(p => p.StartsWith('!')).Select(p => p[1..]).ToList();
        var found = new List<(int Order, Case Case)>();
        foreach (var type in tests.GetTypes().Where(t => t.IsClass && !t.IsAbstract && !t.ContainsGenericParameters))
            foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static))
            {
                var fact = method.GetCustomAttributes<FactAttribute>(inherit: true).FirstOrDefault();
                if (fact is null || fact.Skip is not null) continue;
                string baseName = $"{type.FullName}.{method.Name}";
                // cheap pre-check: the row's arguments only extend the name
                if (!include.Any(p => baseName.Contains(p.Split('(')[0], StringComparison.Ordinal))) continue;
                var dataAttributes = method.GetCustomAttributes<DataAttribute>(inherit: true).ToList();
                var rows = dataAttributes.Count == 0 ? [[]] : dataAttributes.SelectMany(d => d.GetData(method)).ToList();
                foreach (var row in rows)
                {
                    var parameters = method.GetParameters();
                    var values = row.Select((v, i) => v is not null && i < parameters.Length && parameters[i].ParameterType.IsEnum
                        && v.GetType() != parameters[i].ParameterType ? Enum.ToObject(parameters[i].ParameterType, v) : v).ToArray();
                    string name = parameters.Length == 0 ? baseName : $"{baseName}({string.Join(", ", values.Select(Format))})";
                    int order = include.FindIndex(p => name.Contains(p, StringComparison.Ordinal));
                    if (order < 0 || exclude.Any(p => name.Contains(p, StringComparison.Ordinal))) continue;
                    found.Add((order, new Case(name, () => Invoke(type, method, values))));
                }
            }
        return found.OrderBy(f => f.Order).Select(f => f.Case).ToList();   // stable: declaration order within a pattern
    }

    static string Format(object? v) => v switch
    {
        null => "null",
        string s => s,
        Array a => "[" + string.Join(", ", a.Cast<object?>().Select(Format)) + "]",
        IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    /// <summary>One case as xunit runs it: a fresh instance (constructor arguments: an ITestOutputHelper, class fixtures
    /// made for the case), the method, a returned task awaited, Dispose.</summary>
    static void Invoke(Type type, MethodInfo method, object?[] values)
    {
        var owned = new List<object>();
        object? instance = null;
        try
        {
            if (!method.IsStatic)
            {
                var ctor = type.GetConstructors().OrderByDescending(c => c.GetParameters().Length).First();
                var ctorArgs = ctor.GetParameters().Select(p =>
                {
                    if (p.ParameterType == typeof(ITestOutputHelper)) return new DiscardOutput();
                    var fixture = Activator.CreateInstance(p.ParameterType)
                        ?? throw new InvalidOperationException($"{type.Name}: cannot make a {p.ParameterType.Name}");
                    owned.Add(fixture);
                    return fixture;
                }).ToArray();
                instance = ctor.Invoke(ctorArgs);
            }
            var result = method.Invoke(instance, values);
            if (result is Task task) task.GetAwaiter().GetResult();
            else if (result is ValueTask valueTask) valueTask.AsTask().GetAwaiter().GetResult();
        }
        finally
        {
            (instance as IDisposable)?.Dispose();
            foreach (var o in owned) (o as IDisposable)?.Dispose();
        }
    }

    sealed class DiscardOutput : ITestOutputHelper
    {
        public void WriteLine(string message) { }
        public void WriteLine(string format, params object[] args) { }
    }
}
