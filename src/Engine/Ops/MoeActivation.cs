using Harness.Engine.Tensors;

namespace Harness.Engine.Ops;

/// <summary>
/// The activation of a fused-MoE layer, as vLLM's <c>MoEActivation</c> enumerates them
/// (vllm/model_executor/layers/fused_moe/activation.py): gated variants take the fused gate_up output [..., 2d] and
/// return act(x[..., :d]) * x[..., d:] [..., d]; the "_no_mul" variants take [..., d] and return act(x).
/// <para>vLLM's enumeration has one "gelu", the exact erf GELU, and its Gemma4 MoE passed <c>activation="gelu"</c>
/// while the checkpoint's <c>hidden_activation</c> is <c>gelu_pytorch_tanh</c>: the experts ran exact GELU where HF runs
/// the tanh approximation (the dense MLP, which reads the same field, was right). Here the tanh variant has its own
/// member, and a model passes the config's name through <see cref="MoeActivations.Parse"/>, which never falls back.</para>
/// </summary>
public enum MoeActivation
{
    /// <summary>"silu" (alias "swish"): silu(gate) * up.</summary>
    Silu,
    /// <summary>"gelu": exact erf GELU, gelu(gate) * up.</summary>
    Gelu,
    /// <summary>"gelu_tanh" (aliases "gelu_pytorch_tanh", HF's name, and "gelu_approximate_tanh"): F.gelu(gate, approximate="tanh") * up.</summary>
    GeluTanh,
    /// <summary>"silu_no_mul": silu(x), not gated.</summary>
    SiluNoMul,
    /// <summary>"gelu_no_mul": exact gelu(x), not gated.</summary>
    GeluNoMul,
    /// <summary>"gelu_tanh_no_mul" (alias "gelu_pytorch_tanh_no_mul"): tanh gelu(x), not gated.</summary>
    GeluTanhNoMul,
    /// <summary>"relu2_no_mul": relu(x)², not gated.</summary>
    Relu2NoMul,
}

/// <summary>Parsing, properties and application of <see cref="MoeActivation"/>.</summary>
public static class MoeActivations
{
    /// <summary>Canonical names (vLLM's values, plus gelu_tanh and gelu_tanh_no_mul).</summary>
    public static readonly IReadOnlyDictionary<MoeActivation, string> CanonicalNames = new Dictionary<MoeActivation, string>
    {
        [MoeActivation.Silu] = "silu",
        [MoeActivation.Gelu] = "gelu",
        [MoeActivation.GeluTanh] = "gelu_tanh",
        [MoeActivation.SiluNoMul] = "silu_no_mul",
        [MoeActivation.GeluNoMul] = "gelu_no_mul",
        [MoeActivation.GeluTanhNoMul] = "gelu_tanh_no_mul",
        [MoeActivation.Relu2NoMul] = "relu2_no_mul",
    };

    /// <summary>Every accepted name: the canonical ones and the aliases (HF's config spellings).</summary>
    public static readonly IReadOnlyDictionary<string, MoeActivation> Names = BuildNames();

    private static Dictionary<string, MoeActivation> BuildNames()
    {
        var names = CanonicalNames.ToDictionary(kv => kv.Value, kv => kv.Key, StringComparer.Ordinal);
        names["swish"] = MoeActivation.Silu;
        names["gelu_pytorch_tanh"] = MoeActivation.GeluTanh;
        names["gelu_approximate_tanh"] = MoeActivation.GeluTanh;
        names["gelu_pytorch_tanh_no_mul"] = MoeActivation.GeluTanhNoMul;
        return names;
    }

    /// <summary>
    /// The activation for a name (case-sensitive, as HF's ACT2FN and vLLM's from_str). An unknown name is an error that
    /// names it and every known one: "gelu_new" is NOT silently taken as some GELU.
    /// </summary>
    public static MoeActivation Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (Names.TryGetValue(name, out var act)) return act;
        throw new ArgumentException(
            $"unknown MoE activation '{name}'; known: {string.Join(", ", Names.Keys.Order(StringComparer.Ordinal))}", nameof(name));
    }

    public static string Name(this MoeActivation act) => CanonicalNames[act];

    /// <summary>Gated variants expect [..., 2d] (gate half first, then up) and return [..., d].</summary>
    public static bool IsGated(this MoeActivation act) => act is MoeActivation.Silu or MoeActivation.Gelu or MoeActivation.GeluTanh;

    /// <summary>The non-gated variant (vLLM's without_mul); a non-gated one returns itself.</summary>
    public static MoeActivation WithoutMul(this MoeActivation act) => act switch
    {
        MoeActivation.Silu => MoeActivation.SiluNoMul,
        MoeActivation.Gelu => MoeActivation.GeluNoMul,
        MoeActivation.GeluTanh => MoeActivation.GeluTanhNoMul,
        _ => act,
    };

    /// <summary>The element-wise function underneath (relu for relu2, squared after).</summary>
    public static ActivationKind Kind(this MoeActivation act) => act switch
    {
        MoeActivation.Silu or MoeActivation.SiluNoMul => ActivationKind.Silu,
        MoeActivation.Gelu or MoeActivation.GeluNoMul => ActivationKind.Gelu,
        MoeActivation.GeluTanh or MoeActivation.GeluTanhNoMul => ActivationKind.GeluTanh,
        MoeActivation.Relu2NoMul => ActivationKind.Relu,
        _ => throw new ArgumentOutOfRangeException(nameof(act), act, null),
    };

    /// <summary>
    /// Applies the activation. Gated: x [..., 2d] -> act(x[..., :d]) * x[..., d:] [..., d] (act rounds to the dtype, then
    /// the product rounds, as HF's <c>act_fn(gate) * up</c>). Not gated: x [..., d] -> act(x) [..., d].
    /// </summary>
    public static Tensor Apply(this MoeActivation act, Tensor x)
    {
        if (!act.IsGated())
        {
            var y = Activation.Apply(x, act.Kind());
            return act == MoeActivation.Relu2NoMul ? Elementwise.Mul(y, y) : y;
        }
        if (x.Rank == 0 || x.Size(-1) % 2 != 0)
            throw new ArgumentException(
                $"{act.Name()} is gated: the last dimension must be 2d (gate and up halves), got shape {Shape.Format(x.Shape)}");
        int d = x.Size(-1) / 2;
        return Apply(act, x.Narrow(-1, 0, d), x.Narrow(-1, d, d));
    }

    /// <summary>Gated with separate halves: act(gate) * up, both [..., d].</summary>
    public static Tensor Apply(this MoeActivation act, Tensor gate, Tensor up)
    {
        if (!act.IsGated()) throw new ArgumentException($"{act.Name()} is not gated: it takes one input");
        if (!Shape.SequenceEqual(gate.Shape, up.Shape))
            throw new ArgumentException($"{act.Name()}: gate {Shape.Format(gate.Shape)} and up {Shape.Format(up.Shape)} differ");
        return Elementwise.Mul(Activation.Apply(gate, act.Kind()), up);
    }
}
