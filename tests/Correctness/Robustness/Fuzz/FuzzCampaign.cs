using Xunit.Abstractions;
using System.Diagnostics;
using System.Globalization;
using Harness.Engine.IO;

namespace Harness.Tests.Correctness.Robustness.Fuzz;

/// <summary>
/// A seeded, bounded fuzz campaign: mutants are generated from a seed, each is run with a time limit, and each must end
/// in a pass (the mutation was harmless, or the run reported a named result such as a failed comparison) or in a named
/// error: an exception marked <see cref="IInputError"/> whose message names the file. Anything else (another exception,
/// an input error that does not name the file, a run past the limit) is a finding and fails the test, with the seed and
/// the mutation so it can be replayed.
/// CI mode: <see cref="CiMutants"/> mutants (about 10 s). Long mode: HARNESS_FUZZ_SECONDS=N runs for N seconds.
/// </summary>
public sealed class FuzzCampaign(string name, ITestOutputHelper output)
{
    public const string SecondsVariable = "HARNESS_FUZZ_SECONDS";

    /// <summary>Mutants in CI mode.</summary>
    public int CiMutants { get; init; } = 100;

    /// <summary>CI mode also stops after this long, whatever the count.</summary>
    public TimeSpan CiBudget { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>A mutant that runs longer than this is a hang.</summary>
    public TimeSpan PerMutantLimit { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>What a mutant did to its input, and the file that must be named when it is rejected.</summary>
    public sealed record Mutant(string Kind, string Description, string File);

    private readonly SortedDictionary<string, int> _outcomes = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, int> _kinds = new(StringComparer.Ordinal);
    private readonly List<string> _findings = [];

    public int Total { get; private set; }
    public int Passed { get; private set; }
    public int Named { get; private set; }

    public static int? LongSeconds =>
        int.TryParse(Environment.GetEnvironmentVariable(SecondsVariable), NumberStyles.None, CultureInfo.InvariantCulture, out int s) && s > 0 ? s : null;

    /// <summary>
    /// Runs the campaign: <paramref name="mutate"/> makes mutant i from its own seeded Random and writes it to disk;
    /// <paramref name="run"/> runs it as the product would (throws on rejection).
    /// </summary>
    public void Run(int seed, Func<Random, Mutant> mutate, Action<Mutant> run)
    {
        var sw = Stopwatch.StartNew();
        var longMode = LongSeconds;
        for (int i = 0; ; i++)
        {
            if (longMode is int s ? sw.Elapsed.TotalSeconds >= s : i >= CiMutants || sw.Elapsed >= CiBudget) break;
            int mutantSeed = unchecked(seed * 7919 + i);
            var mutant = mutate(new Random(mutantSeed));
            Total++;
            _kinds[mutant.Kind] = _kinds.GetValueOrDefault(mutant.Kind) + 1;
            var outcome = Execute(mutant, run, out var finding);
            _outcomes[outcome] = _outcomes.GetValueOrDefault(outcome) + 1;
            if (finding is not null && _findings.Count < 20)
                _findings.Add($"mutant {i} (seed {mutantSeed}) {mutant.Kind}: {mutant.Description}\n    {finding}");
        }
        output.WriteLine($"fuzz {name}: {Total} mutants in {sw.Elapsed.TotalSeconds:F1} s ({(longMode is null ? "CI mode" : $"long mode, {SecondsVariable}={longMode}")}): " +
                         $"{Passed} passed, {Named} named errors, {_findings.Count} findings");
        output.WriteLine("  mutations: " + string.Join(", ", _kinds.Select(kv => $"{kv.Key} {kv.Value}")));
        output.WriteLine("  outcomes:  " + string.Join(", ", _outcomes.Select(kv => $"{kv.Key} {kv.Value}")));
        Summary = $"{name}: {Total} mutants, {Passed} passed, {Named} named errors, {_findings.Count} findings; " + string.Join(", ", _outcomes.Select(kv => $"{kv.Key} {kv.Value}"));
        if (Environment.GetEnvironmentVariable("HARNESS_FUZZ_LOG") is { Length: > 0 } log)
            File.AppendAllText(log, $"{DateTime.UtcNow:u} {Summary}\n  mutations: {string.Join(", ", _kinds.Select(kv => $"{kv.Key} {kv.Value}"))}\n");
        Assert.True(_findings.Count == 0, $"fuzz {name}: {_findings.Count} mutants crashed, hung or gave an error that does not name the file:\n" + string.Join("\n", _findings));
    }

    public string Summary { get; private set; } = "";

    private string Execute(Mutant mutant, Action<Mutant> run, out string? finding)
    {
        finding = null;
        Exception? error = null;
        var task = Task.Run(() =>
        {
            try { run(mutant); }
            catch (Exception e) { error = e; }
        });
        if (!task.Wait(PerMutantLimit))
        {
            finding = $"HANG: still running after {PerMutantLimit.TotalSeconds:F0} s";
            return "hang";
        }
        if (error is null)
        {
            Passed++;
            return "pass";
        }
        var input = InputErrors.Find(error);
        if (input is null)
        {
            finding = $"CRASH: {error}";
            return "crash:" + error.GetType().Name;
        }
        var line = InputErrors.OneLine(input);
        if (!line.Contains(mutant.File, StringComparison.Ordinal))
        {
            finding = $"UNNAMED: the message does not name {mutant.File}: {line}";
            return "unnamed";
        }
        Named++;
        return "named:" + input.GetType().Name;
    }
}
