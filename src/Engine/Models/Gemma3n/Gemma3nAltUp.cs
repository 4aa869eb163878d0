using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n;

/// <summary>
/// Gemma3nTextAltUp: A streams [A, tokens, hidden] around each layer. Replicated on every rank (its weights are tiny;
/// vLLM uses ReplicatedLinear). The router: <c>tanh(modality_router(router_norm(x) * hidden_size**-1.0).float())</c>
/// -> [tokens, A] (the scale is 1/hidden, not 1/sqrt(hidden)).
/// </summary>
public sealed class Gemma3nAltUp
{
    private readonly Linear _correctionCoefs, _predictionCoefs, _modalityRouter;
    private readonly Tensor _routerNorm, _correctOutputScale;
    private readonly double _eps, _routerInputScale;
    private readonly int _streams, _active;

    public Gemma3nAltUp(IWeightSource weights, string prefix, Gemma3nTextSettings config)
    {
        _correctionCoefs = new Linear(weights.Get(prefix + ".correction_coefs.weight"));   // [A, A]
        _predictionCoefs = new Linear(weights.Get(prefix + ".prediction_coefs.weight"));   // [A*A, A]
        _modalityRouter = new Linear(weights.Get(prefix + ".modality_router.weight"));     // [A, hidden]
        _routerNorm = weights.Get(prefix + ".router_norm.weight");
        _correctOutputScale = weights.Get(prefix + ".correct_output_scale");
        _eps = config.RmsNormEps;
        _routerInputScale = (float)Math.Pow(config.HiddenSize, -1.0);                     // a float32 buffer in HF
        _streams = config.AltupNumInputs;
        _active = config.AltupActiveIdx;
    }

    /// <summary>[tokens, hidden] -> modalities [tokens, A].</summary>
    private Tensor Router(Tensor x)
    {
        var routerInputs = Elementwise.Mul(Norms.RmsNorm(x, _routerNorm, _eps, RmsNormKind.GemmaScaled), _routerInputScale);
        var routed = _modalityRouter.Forward(routerInputs);
        return Elementwise.Tanh(routed.To(DType.Float32)).To(x.DType);
    }

    /// <summary>
    /// predict: <c>coefs = prediction_coefs(mod).reshape(T, A, A).permute(0, 2, 1)</c>;
    /// <c>pred = (hs.permute(1, 2, 0) @ coefs).permute(2, 0, 1) + hs</c>. hs [A, tokens, hidden] -> [A, tokens, hidden].
    /// </summary>
    public Tensor Predict(Tensor hs)
    {
        int t = hs.Shape[1];
        var modalities = Router(hs.Select(0, _active));                                      // [t, A]
        var coefs = _predictionCoefs.Forward(modalities).Reshape(t, _streams, _streams).Permute(0, 2, 1); // [t, A, A]
        var predictions = Matmul.Forward(hs.Permute(1, 2, 0), coefs);                       // [t, hidden, A]
        return Elementwise.Add(predictions.Permute(2, 0, 1), hs).Contiguous();             // [A, t, hidden]
    }

    /// <summary>
    /// correct: <c>innovation = activated - pred[active]</c>; <c>c = correction_coefs(mod(activated)) + 1.0</c>
    /// -> [A, tokens, 1]; <c>corrected = innovation * c + pred</c>.
    /// </summary>
    public Tensor Correct(Tensor predictions, Tensor activated)
    {
        var modalities = Router(activated);                                                  // [t, A]
        var innovation = Elementwise.Sub(activated, predictions.Select(0, _active));        // [t, hidden]
        var coefs = Elementwise.Add(_correctionCoefs.Forward(modalities), 1.0);              // [t, A]
        coefs = coefs.Permute(1, 0).Unsqueeze(-1);                                           // [A, t, 1]
        var corrected = Elementwise.Mul(innovation.Unsqueeze(0), coefs);                     // [A, t, hidden]
        return Elementwise.Add(corrected, predictions).Contiguous();
    }

    /// <summary>scale_corrected_output (AltUp.forward): <c>corrected * correct_output_scale</c>.</summary>
    public Tensor ScaleCorrectedOutput(Tensor corrected) =>
        Elementwise.Mul(corrected.To(_correctOutputScale.DType), _correctOutputScale).To(corrected.DType);
}

/// <summary>
/// Gemma3nTextLaurelBlock: <c>x + post_laurel_norm(linear_right(linear_left(x)))</c>; linear_left column-parallel
/// ([tokens, hidden] -> [tokens, rank/tp]), linear_right row-parallel (all-reduced), as vLLM shards it.
/// </summary>
public sealed class Gemma3nLaurel
{
    private readonly ColumnParallelLinear _left;
    private readonly RowParallelLinear _right;
    private readonly Tensor _norm;
    private readonly double _eps;

    public Gemma3nLaurel(IWeightSource weights, string prefix, Gemma3nTextSettings config, Distributed.ParallelContext ctx)
    {
        _left = ColumnParallelLinear.Load(weights, prefix + ".linear_left", ctx.Tp);
        _right = RowParallelLinear.Load(weights, prefix + ".linear_right", ctx.Tp, inputIsParallel: true);
        _norm = weights.Get(prefix + ".post_laurel_norm.weight");
        _eps = config.RmsNormEps;
    }

    public Tensor Forward(Tensor x) =>
        Elementwise.Add(x, Norms.RmsNorm(_right.Forward(_left.Forward(x)), _norm, _eps, RmsNormKind.GemmaScaled));
}
