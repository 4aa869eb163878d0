namespace Harness.Engine.Tensors;

/// <summary>Element types, named as torch names them (torch.float32, torch.bfloat16, ...).</summary>
public enum DType
{
    Float32,
    BFloat16,
    Float16,
    Int64,
    Int32,
    Bool,
    /// <summary>Storage only (the float64 oracle's captures and comparisons); no op computes in it.</summary>
    Float64,
}

public static class DTypeInfo
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.BFloat16 => 2,
        DType.Float16 => 2,
        DType.Int64 => 8,
        DType.Int32 => 4,
        DType.Bool => 1,
        DType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    public static bool IsFloatingPoint(this DType dtype) =>
        dtype is DType.Float32 or DType.BFloat16 or DType.Float16 or DType.Float64;

    /// <summary>The name torch prints: float32, bfloat16, float16, int64, int32, bool.</summary>
    public static string TorchName(this DType dtype) => dtype switch
    {
        DType.Float32 => "float32",
        DType.BFloat16 => "bfloat16",
        DType.Float16 => "float16",
        DType.Int64 => "int64",
        DType.Int32 => "int32",
        DType.Bool => "bool",
        DType.Float64 => "float64",
        _ => dtype.ToString(),
    };

    /// <summary>Parses torch names ("float32", "torch.bfloat16", "bf16", "fp32", "half", ...).</summary>
    public static DType Parse(string name)
    {
        var n = name.Trim().ToLowerInvariant();
        if (n.StartsWith("torch.", StringComparison.Ordinal)) n = n[6..];
        return n switch
        {
            "float32" or "float" or "fp32" or "f32" => DType.Float32,
            "bfloat16" or "bf16" => DType.BFloat16,
            "float16" or "half" or "fp16" or "f16" => DType.Float16,
            "int64" or "long" or "i64" => DType.Int64,
            "int32" or "int" or "i32" => DType.Int32,
            "bool" => DType.Bool,
            "float64" or "double" or "fp64" or "f64" => DType.Float64,
            _ => throw new ArgumentException(
                $"unknown dtype '{name}'; known: float32, bfloat16, float16, int64, int32, bool, float64", nameof(name)),
        };
    }
}
