using Harness.Engine.Tensors;

namespace Harness.Engine.IO;

/// <summary>The dtype names of the safetensors header ("F32", "BF16", ...) and the writer's layout order.</summary>
public static class SafetensorsDType
{
    /// <summary>The header names this engine reads and writes, in the order listed in messages.</summary>
    public static readonly IReadOnlyList<string> Supported = ["F32", "BF16", "F16", "I64", "I32", "BOOL", "F64"];

    /// <summary>Every dtype name the safetensors format defines (0.8), used to tell "unsupported" from "unknown".</summary>
    internal static readonly IReadOnlyList<string> Defined =
        ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
         "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"];

    public static string Name(DType dtype) => dtype switch
    {
        DType.Float32 => "F32",
        DType.BFloat16 => "BF16",
        DType.Float16 => "F16",
        DType.Int64 => "I64",
        DType.Int32 => "I32",
        DType.Bool => "BOOL",
        DType.Float64 => "F64",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no safetensors name"),
    };

    public static bool TryParse(string name, out DType dtype)
    {
        switch (name)
        {
            case "F32": dtype = DType.Float32; return true;
            case "BF16": dtype = DType.BFloat16; return true;
            case "F16": dtype = DType.Float16; return true;
            case "I64": dtype = DType.Int64; return true;
            case "I32": dtype = DType.Int32; return true;
            case "BOOL": dtype = DType.Bool; return true;
            case "F64": dtype = DType.Float64; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>
    /// Position of the dtype in the Rust crate's <c>Dtype</c> enum (BOOL &lt; ... &lt; F16 &lt; BF16 &lt; I32 &lt; F32 &lt; I64).
    /// The crate's writer lays tensors out by this rank descending, then by name (byte order), so we do too.
    /// </summary>
    internal static int LayoutRank(DType dtype) => dtype switch
    {
        DType.Bool => 0,
        DType.Float16 => 11,
        DType.BFloat16 => 12,
        DType.Int32 => 13,
        DType.Float32 => 15,
        DType.Int64 => 17,
        DType.Float64 => 16,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no safetensors name"),
    };
}
