using Harness.Engine.Tensors;

namespace Harness.Bench;

/// <summary>`harness bench`'s options as System.CommandLine parsed and validated them (Commands/BenchCommands.cs); null: the
/// path's default (the GEMM bench, the CPU model bench and the GPU model bench each have their own).</summary>
public sealed record BenchOptions
{
    public int? Threads { get; init; }
    public int[]? Sizes { get; init; }
    public bool NoDecode { get; init; }
    public bool NoReference { get; init; }
    public bool Linear { get; init; }
    public int[]? M { get; init; }
    public string? Model { get; init; }
    public string? RandomLlama { get; init; }
    public string Device { get; init; } = "cpu";
    public DType[]? DTypes { get; init; }
    public int[]? Prompts { get; init; }
    public int? NewTokens { get; init; }
    public int? Runs { get; init; }
    public bool NoHf { get; init; }
    public bool Profile { get; init; }
}
