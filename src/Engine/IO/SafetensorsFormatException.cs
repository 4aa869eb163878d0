namespace Harness.Engine.IO;

/// <summary>
/// A safetensors file (or a checkpoint index) that breaks the format. The message names the file, the tensor
/// when one is at fault, and the offending values; <see cref="Path"/> and <see cref="TensorName"/> carry them too.
/// </summary>
public sealed class SafetensorsFormatException : Exception, IInputError
{
    public string Path { get; }

    /// <summary>The tensor at fault, or null when the problem is with the file as a whole (length, header, gaps at the end).</summary>
    public string? TensorName { get; }

    string IInputError.InputPath => Path;

    public SafetensorsFormatException(string path, string? tensorName, string problem, Exception? inner = null)
        : base(Format(path, tensorName, problem), inner)
    {
        Path = path;
        TensorName = tensorName;
    }

    private static string Format(string path, string? tensorName, string problem) =>
        tensorName is null ? $"{path}: {problem}" : $"{path}: tensor '{tensorName}': {problem}";
}

/// <summary>A tensor asked for by name that the file or checkpoint does not hold; the message lists near names.</summary>
public sealed class TensorNotFoundException : KeyNotFoundException, IInputError
{
    string IInputError.InputPath => Origin;

    public string Origin { get; }
    public string TensorName { get; }
    public IReadOnlyList<string> NearNames { get; }

    public TensorNotFoundException(string source, string tensorName, IReadOnlyList<string> nearNames, int total, string? what = null)
        : base($"{source}: no tensor named '{tensorName}'{(what is null ? "" : " " + what)} ({total} tensors; " +
               (nearNames.Count == 0 ? "none is close" : "nearest: " + string.Join(", ", nearNames.Select(n => $"'{n}'"))) + ")")
    {
        Origin = source;
        TensorName = tensorName;
        NearNames = nearNames;
    }
}
