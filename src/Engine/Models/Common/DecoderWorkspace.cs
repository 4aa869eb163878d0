using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Common;

/// <summary>
/// Reusable host buffers of a decoder (Llama, Qwen2-VL) for one model instance (one rank): each slot is a [rows, cols] tensor that grows to the largest
/// rows seen and is handed out again as a view, so after warm-up a decode step allocates no tensor storage for the glue
/// between linear layers (norm outputs, rotated q, attention output, activation output, the residual stream). Layers run
/// one after another, so one buffer per slot serves every layer; a slot's contents are valid until its next use
/// (captures are cloned by the sink).
/// </summary>
public sealed class DecoderWorkspace
{
    public const int Normed = 0, Query = 1, AttnOut = 2, Act = 3, Residual = 4, Final = 5,
        Qkv = 6, OProj = 7, GateUp = 8, Down = 9, Count = 10;

    /// <summary>
    /// Whether the linear layers write into slots too (qkv, o_proj, gate_up, down): only where no output leaves this rank's
    /// forward before the next layer overwrites it (one rank: no all-reduce, no pipeline send).
    /// </summary>
    public bool LinearOutputs { get; init; }

    /// <summary>A [rows, cols] buffer of slot for a linear layer's output, or null when <see cref="LinearOutputs"/> is off.</summary>
    public Tensor? Linear(int slot, DType dtype, int rows, int cols) => LinearOutputs && cols > 0 ? Get(slot, dtype, rows, cols) : null;

    private readonly Tensor?[] _buffers = new Tensor?[Count];
    private readonly Tensor?[] _views = new Tensor?[Count];

    /// <summary>A [rows, cols] tensor of slot (contents undefined).</summary>
    public Tensor Get(int slot, DType dtype, int rows, int cols)
    {
        if (_views[slot] is { } v && v.DType == dtype && v.Shape[0] == rows && v.Shape[1] == cols) return v;
        var b = _buffers[slot];
        if (b is null || b.DType != dtype || b.Shape[1] != cols || b.Shape[0] < rows)
            _buffers[slot] = b = Tensor.Zeros(dtype, Math.Max(rows, b is not null && b.DType == dtype && b.Shape[1] == cols ? b.Shape[0] : 0), cols);
        return _views[slot] = b.Shape[0] == rows ? b : b.Narrow(0, 0, rows);
    }
}
