using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4.Audio;

/// <summary>
/// Gemma4ClippableLinear (HF modeling_gemma4.py 164-190), used by both towers:
/// <code>
/// if use_clipped_linears: x = torch.clamp(x, input_min, input_max)
/// x = self.linear(x)                       # nn.Linear, no bias: weight "{prefix}.linear.weight" [out, in]
/// if use_clipped_linears: x = torch.clamp(x, output_min, output_max)
/// </code>
/// The four bounds are 0-dim buffers of the checkpoint ("{prefix}.input_min", ...). The product goes through
/// <see cref="Matmul"/> with the model's <see cref="MatmulOptions"/>. Input [..., in], output [..., out].
/// </summary>
public sealed class Gemma4ClippableLinear
{
    private readonly Tensor _weightT;                     // [in, out], a view of the checkpoint's [out, in]
    private readonly Tensor? _inMin, _inMax, _outMin, _outMax;
    private readonly MatmulOptions _matmul;

    public string Prefix { get; }
    public int InFeatures => _weightT.Shape[0];
    public int OutFeatures => _weightT.Shape[1];

    public Gemma4ClippableLinear(IWeightSource weights, string prefix, bool useClippedLinears, MatmulOptions matmul)
        : this(weights, prefix, $"{prefix}.linear.weight", useClippedLinears, matmul)
    {
    }

    /// <summary>
    /// Gemma3n's audio tower's nn.Linear(bias=False): the same product without the clip, its weight "{prefix}.weight"
    /// (<c>self.ffw_layer_1 = nn.Linear(self.config.hidden_size, self.config.hidden_size * 4, bias=False)</c>).
    /// </summary>
    public static Gemma4ClippableLinear Plain(IWeightSource weights, string prefix, MatmulOptions matmul) =>
        new(weights, prefix, $"{prefix}.weight", false, matmul);

    private Gemma4ClippableLinear(IWeightSource weights, string prefix, string weightName, bool useClippedLinears, MatmulOptions matmul)
    {
        Prefix = prefix;
        _matmul = matmul;
        var w = weights.Get(weightName);
        if (w.Rank != 2) throw new ArgumentException($"{weightName} must be [out_features, in_features], got {Shape.Format(w.Shape)}");
        _weightT = w.T();
        if (useClippedLinears)
        {
            _inMin = weights.Get($"{prefix}.input_min");
            _inMax = weights.Get($"{prefix}.input_max");
            _outMin = weights.Get($"{prefix}.output_min");
            _outMax = weights.Get($"{prefix}.output_max");
        }
    }

    public Tensor Forward(Tensor x)
    {
        if (x.Size(-1) != InFeatures)
            throw new ArgumentException(
                $"{Prefix}: mat1 and mat2 shapes cannot be multiplied ({x.NumEl / Math.Max(x.Size(-1), 1)}x{x.Size(-1)} and {InFeatures}x{OutFeatures})");
        if (_inMin is not null) x = Clamp(x, _inMin, _inMax!);  // torch.clamp(x, input_min, input_max)
        var y = Matmul.Forward(x, _weightT, _matmul);           // [..., out]
        if (_outMin is not null) y = Clamp(y, _outMin, _outMax!);
        return y;
    }

    /// <summary>torch.clamp(x, min_tensor, max_tensor) with 0-dim bounds: max(x, min) then min(., max), in x's dtype.</summary>
    private static Tensor Clamp(Tensor x, Tensor min, Tensor max) =>
        Elementwise.Clamp(x, min.ToHost().To(DType.Float32).Item(), max.ToHost().To(DType.Float32).Item());   // 0-dim bounds: read on the host
}
