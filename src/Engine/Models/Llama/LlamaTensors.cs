using Harness.Engine.Config;
using Harness.Engine.Ops;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// What <see cref="LlamaForCausalLM"/> loads, from its config (HF's LlamaForCausalLM parameter names): the embedding,
/// per layer the two norms, q/k/v/o and gate/up/down projections (biases when attention_bias / mlp_bias), the final
/// norm and lm_head (optional when tie_word_embeddings). Config values the engine's Llama cannot run are errors
/// naming the field.
/// </summary>
public static class LlamaTensors
{
    /// <summary>rope_parameters.rope_type values the engine's Llama implements.</summary>
    public static readonly string[] RopeTypes = ["default", "linear", "llama3"];

    public static ModelTensors Expected(TextConfig c)
    {
        CheckConfig(c);
        return new ModelTensors("Llama", c.SourceName.Length == 0 ? "config.json" : c.SourceName, Declare(c), [".rotary_emb.inv_freq"]);
    }

    // Lazily, in HF's parameter order: a config claiming 2^31 layers is judged by its first missing tensors.
    private static IEnumerable<ExpectedTensor> Declare(TextConfig c)
    {
        int h = c.HiddenSize, q = c.NumAttentionHeads * c.HeadDim, kv = c.NumKeyValueHeads * c.HeadDim, i = c.IntermediateSize, v = c.VocabSize;
        var list = new List<ExpectedTensor> { new("model.embed_tokens.weight", [v, h], "vocab_size, hidden_size") };
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            foreach (var t in list) yield return t;
            list.Clear();
            string p = $"model.layers.{l}";
            list.Add(new($"{p}.input_layernorm.weight", [h], "hidden_size"));
            list.Add(new($"{p}.self_attn.q_proj.weight", [q, h], "num_attention_heads * head_dim, hidden_size"));
            list.Add(new($"{p}.self_attn.k_proj.weight", [kv, h], "num_key_value_heads * head_dim, hidden_size"));
            list.Add(new($"{p}.self_attn.v_proj.weight", [kv, h], "num_key_value_heads * head_dim, hidden_size"));
            list.Add(new($"{p}.self_attn.o_proj.weight", [h, q], "hidden_size, num_attention_heads * head_dim"));
            if (c.AttentionBias)
            {
                list.Add(new($"{p}.self_attn.q_proj.bias", [q], "num_attention_heads * head_dim"));
                list.Add(new($"{p}.self_attn.k_proj.bias", [kv], "num_key_value_heads * head_dim"));
                list.Add(new($"{p}.self_attn.v_proj.bias", [kv], "num_key_value_heads * head_dim"));
                list.Add(new($"{p}.self_attn.o_proj.bias", [h], "hidden_size"));
            }
            list.Add(new($"{p}.post_attention_layernorm.weight", [h], "hidden_size"));
            list.Add(new($"{p}.mlp.gate_proj.weight", [i, h], "intermediate_size, hidden_size"));
            list.Add(new($"{p}.mlp.up_proj.weight", [i, h], "intermediate_size, hidden_size"));
            list.Add(new($"{p}.mlp.down_proj.weight", [h, i], "hidden_size, intermediate_size"));
            if (c.MlpBias)
            {
                list.Add(new($"{p}.mlp.gate_proj.bias", [i], "intermediate_size"));
                list.Add(new($"{p}.mlp.up_proj.bias", [i], "intermediate_size"));
                list.Add(new($"{p}.mlp.down_proj.bias", [h], "hidden_size"));
            }
        }
        list.Add(new("model.norm.weight", [h], "hidden_size"));
        list.Add(new("lm_head.weight", [v, h], "vocab_size, hidden_size", Optional: c.TieWordEmbeddings));
        foreach (var t in list) yield return t;
    }

    /// <summary>The config values the engine's Llama needs (an unsupported rope type, an unknown activation, ...).</summary>
    public static void CheckConfig(TextConfig c)
    {
        if (c.HeadDim % 2 != 0) throw c.Error("head_dim", $"is {c.HeadDim}; rotary embeddings need an even head_dim");
        if (c.IntermediateSizes is { Length: > 1 }) throw c.Error("intermediate_size", "is a per-layer list; Llama has one intermediate_size");
        try
        {
            Activation.Parse(c.HiddenAct ?? "silu");
        }
        catch (ArgumentException e)
        {
            throw c.Error("hidden_act", e.Message.Split(" (Parameter")[0]);
        }
        if (c.NormEps is double eps && !(eps > 0 && double.IsFinite(eps))) throw c.Error("rms_norm_eps", $"must be a positive number, but is {eps}");
        var rope = c.Rope;
        string ropePath = rope.JsonPath.Length == 0 ? "rope_parameters" : rope.JsonPath;
        ConfigException RopeError(string key, string problem) => new(c.SourceName.Length == 0 ? "config.json" : c.SourceName, $"{ropePath}.{key}", problem);
        if (!RopeTypes.Contains(rope.RopeType))
            throw RopeError("rope_type", $"is '{rope.RopeType}'; the engine's Llama supports {string.Join(", ", RopeTypes)}");
        if (!(rope.RopeTheta > 0 && double.IsFinite(rope.RopeTheta))) throw RopeError("rope_theta", $"must be a positive number, but is {rope.RopeTheta}");
        if (rope.RopeType is "linear" or "llama3")
        {
            if (rope.Factor is not double f) throw RopeError("factor", $"is missing (rope_type '{rope.RopeType}' needs it)");
            if (!(f > 0 && double.IsFinite(f))) throw RopeError("factor", $"must be a positive number, but is {f}");
        }
        if (rope.RopeType == "llama3")
        {
            if (rope.LowFreqFactor is not double lo) throw RopeError("low_freq_factor", "is missing (rope_type 'llama3' needs it)");
            if (rope.HighFreqFactor is not double hi) throw RopeError("high_freq_factor", "is missing (rope_type 'llama3' needs it)");
            if (rope.OriginalMaxPositionEmbeddings is not int orig) throw RopeError("original_max_position_embeddings", "is missing (rope_type 'llama3' needs it)");
            if (!(lo > 0 && hi > lo && double.IsFinite(hi))) throw RopeError("high_freq_factor", $"must be above low_freq_factor > 0, but they are {hi} and {lo}");
            if (orig < 1) throw RopeError("original_max_position_embeddings", $"must be at least 1, but is {orig}");
        }
    }

    /// <summary>Why a TP x PP layout cannot run this config (null: it can), naming the option and the config field.</summary>
    public static string? LayoutProblem(TextConfig c, int tp, int pp)
    {
        string src = c.SourceName.Length == 0 ? "config.json" : c.SourceName;
        if (c.NumAttentionHeads % tp != 0)
            return $"--tp {tp} does not divide num_attention_heads {c.NumAttentionHeads} ({src})";
        if (c.NumKeyValueHeads % tp != 0 && tp % c.NumKeyValueHeads != 0)
            return $"--tp {tp} and num_key_value_heads {c.NumKeyValueHeads} ({src}): one must divide the other";
        if (c.IntermediateSize % tp != 0)
            return $"--tp {tp} does not divide intermediate_size {c.IntermediateSize} ({src})";
        if (c.NumHiddenLayers % pp != 0)
            return $"--pp {pp} does not divide num_hidden_layers {c.NumHiddenLayers} ({src})";
        return null;
    }
}
