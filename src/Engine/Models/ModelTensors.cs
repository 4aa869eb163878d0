using System.Globalization;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models;

/// <summary>
/// One tensor a model loads: its HF name, the shape its config implies (with the fields it comes from, for messages,
/// e.g. "[vocab_size, hidden_size]"), and its dtype (null: the model's dtype, which is the dtype of the first
/// declared tensor that is present). Optional tensors (a tied lm_head) may be absent but are checked when present.
/// </summary>
public sealed record ExpectedTensor(string Name, int[] Shape, string ShapeFrom, DType? DType = null, bool Optional = false);

/// <summary>
/// Everything a model built from a config needs from a checkpoint (see <see cref="ICheckpointModel"/>): the tensors,
/// and suffixes of names a checkpoint may carry that the model ignores (e.g. ".rotary_emb.inv_freq" buffers).
/// The tensors are enumerated lazily: a config claiming 2^31 layers is judged by the first missing ones, not listed.
/// <paramref name="IgnoredPrefixes"/>: whole parts of a checkpoint the model does not load (e.g. "model.vision_tower."
/// where the engine is handed the tower's outputs).
/// </summary>
public sealed record ModelTensors(string ModelName, string ConfigSource, IEnumerable<ExpectedTensor> Tensors, IReadOnlyList<string> IgnoredSuffixes,
    IReadOnlyList<string>? IgnoredPrefixes = null)
{
    /// <summary>
    /// Other names a checkpoint may store a declared tensor under: a declared name starting with a pair's Declared prefix
    /// may be found with the Stored prefix instead (Qwen2-VL: model.language_model.* as model.*, model.visual.* as visual.*,
    /// the layout its released checkpoints use). Empty: the declared names only.
    /// </summary>
    public IReadOnlyList<(string Declared, string Stored)> StoredPrefixes { get; init; } = [];

    /// <summary>The name a checkpoint holds a declared tensor under: the declared one, else the first stored alias it has.</summary>
    public string StoredName(Func<string, bool> contains, string declared)
    {
        if (contains(declared)) return declared;
        foreach (var (prefix, stored) in StoredPrefixes)
            if (declared.StartsWith(prefix, StringComparison.Ordinal) && contains(stored + declared[prefix.Length..]))
                return stored + declared[prefix.Length..];
        return declared;
    }

    /// <summary>The dtypes the engine computes in; the model's dtype must be one of them.</summary>
    public static readonly DType[] ComputeDTypes = [Harness.Engine.Tensors.DType.Float32, Harness.Engine.Tensors.DType.BFloat16];
}

/// <summary>
/// A model that declares, from its config, the tensors it will load, so a checkpoint can be checked against it
/// (<see cref="CheckpointValidator"/>) before any work starts. Each model implements it beside its constructor:
/// <code>public static ModelTensors ExpectedTensors(HfConfig config) => ...;</code>
/// Config values the model cannot run (an unknown rope type, an activation it lacks) are <see cref="ConfigException"/>s
/// from the same call, so a config is judged once, before the weights.
/// </summary>
public interface ICheckpointModel
{
    /// <summary>The config.json model_type values this model class loads (e.g. "gemma4" and "gemma4_text").</summary>
    static abstract IReadOnlyList<string> ModelTypes { get; }

    static abstract ModelTensors ExpectedTensors(HfConfig config);
}

/// <summary>A checkpoint that does not hold what its config implies; one line naming the file and the tensors.</summary>
public sealed class CheckpointMismatchException(string path, string configSource, IReadOnlyList<string> problems)
    : Exception(Format(path, configSource, problems)), IInputError
{
    public string InputPath { get; } = path;
    public IReadOnlyList<string> Problems { get; } = problems;

    private static string Format(string path, string configSource, IReadOnlyList<string> problems)
    {
        int missing = problems.Count(p => p.EndsWith(" is missing", StringComparison.Ordinal) || p.Contains(" is missing (", StringComparison.Ordinal));
        int unexpected = problems.Count(p => p.StartsWith("unexpected ", StringComparison.Ordinal));
        var counts = new List<string>();
        if (missing > 0) counts.Add($"{missing} missing");
        if (unexpected > 0) counts.Add($"{unexpected} unexpected");
        int more = problems.Count(p => p.StartsWith('('));
        if (problems.Count - missing - unexpected - more > 0) counts.Add($"{problems.Count - missing - unexpected - more} of the wrong shape or dtype");
        if (more > 0) counts.Add("more not checked");
        return $"{path}: the weights do not match {configSource} ({string.Join(", ", counts)}): " +
        string.Join("; ", problems.Take(3)) + (problems.Count > 3 ? $"; and {problems.Count - 3} more" : "");
    }
}

/// <summary>Checks a <see cref="Checkpoint"/> against a model's <see cref="ModelTensors"/>: presence, shape, dtype, extras.</summary>
public static class CheckpointValidator
{
    /// <summary>At most this many problems are collected; past it the declaration is not enumerated further.</summary>
    public const int MaxProblems = 64;

    /// <summary>The problems, in declaration order then unexpected names (empty: the checkpoint fits).</summary>
    public static IReadOnlyList<string> Problems(Checkpoint checkpoint, ModelTensors model)
    {
        var problems = new List<string>();
        var declared = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<ExpectedTensor>();
        DType? modelDType = null;
        bool complete = true;
        foreach (var declaredTensor in model.Tensors)
        {
            if (problems.Count >= MaxProblems) { complete = false; break; }
            var t = declaredTensor with { Name = model.StoredName(checkpoint.Contains, declaredTensor.Name) };
            declared.Add(t.Name);
            if (!checkpoint.Contains(t.Name))
            {
                if (!t.Optional) missing.Add(t);
                if (!t.Optional) problems.Add("");   // filled in below, once the unexpected names are known
                continue;
            }
            var info = checkpoint.GetInfo(t.Name);
            if (!info.Shape.AsSpan().SequenceEqual(t.Shape))
                problems.Add($"'{t.Name}' is {Shape.Format(info.Shape)}, the config implies {Shape.Format(t.Shape)} ({t.ShapeFrom})");
            var want = t.DType ?? modelDType;
            if (want is null)
            {
                if (!ModelTensors.ComputeDTypes.Contains(info.DType))
                    problems.Add($"'{t.Name}' is {SafetensorsDType.Name(info.DType)}; the engine computes {model.ModelName} in " +
                                 string.Join(" or ", ModelTensors.ComputeDTypes.Select(SafetensorsDType.Name)));
                modelDType = info.DType;
            }
            else if (info.DType != want)
                problems.Add($"'{t.Name}' is {SafetensorsDType.Name(info.DType)}, the model's tensors are {SafetensorsDType.Name(want.Value)}");
        }
        // Unexpected names are only known when the whole declaration was seen.
        var unexpected = complete
            ? checkpoint.Names.Where(n => !declared.Contains(n) && !model.IgnoredSuffixes.Any(s => n.EndsWith(s, StringComparison.Ordinal))
                                            && !(model.IgnoredPrefixes ?? []).Any(s => n.StartsWith(s, StringComparison.Ordinal))).ToList()
            : [];
        int m = 0;
        for (int i = 0; i < problems.Count; i++)
        {
            if (problems[i].Length > 0) continue;
            var t = missing[m++];
            var close = NearNames.Find(t.Name, unexpected.Count > 0 ? unexpected : checkpoint.Names, 1);
            problems[i] = $"'{t.Name}' {Shape.Format(t.Shape)} is missing" + (close.Count == 0 ? "" : $" (close: {string.Join(", ", close.Select(c => $"'{c}'"))})");
        }
        foreach (var name in unexpected)
        {
            var close = NearNames.Find(name, missing.Select(t => t.Name), 1);
            problems.Add($"unexpected tensor '{name}'" + (close.Count == 0 ? "" : $" (close to the missing '{close[0]}': a misspelt prefix?)"));
        }
        if (!complete) problems.Add($"(more not checked: the first {MaxProblems} problems are listed)");
        return problems;
    }

    /// <summary>Throws <see cref="CheckpointMismatchException"/> when the checkpoint does not fit the model.</summary>
    public static void Validate(Checkpoint checkpoint, ModelTensors model)
    {
        var problems = Problems(checkpoint, model);
        if (problems.Count > 0)
            throw new CheckpointMismatchException(checkpoint.IndexPath ?? Path.Combine(checkpoint.Folder, Checkpoint.SingleFileName), model.ConfigSource, problems);
    }

    /// <summary>Opens the folder's checkpoint and validates it (the checkpoint's own format errors come first).</summary>
    public static void Validate(string folder, ModelTensors model)
    {
        using var checkpoint = Checkpoint.Open(folder);
        Validate(checkpoint, model);
    }
}
