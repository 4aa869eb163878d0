namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// What <see cref="Gemma4ForCausalLM"/> loads, from its config (HF's Gemma4TextModel parameter names, under "model." for
/// gemma4_text or "model.language_model." for gemma4): the embedding, the per-layer-input tables when
/// hidden_size_per_layer_input &gt; 0 (vocab_size_per_layer_input rows), per layer the norms, layer_scalar, q/k/v/o (no
/// k/v on a KV-shared layer, no v on a k=v layer; biases when attention_bias), the dense MLP (twice intermediate_size on
/// KV-shared layers when use_double_wide_mlp), the router and experts when enable_moe_block, the per-layer-input gate;
/// the final norm and lm_head (optional when tied). The towers and embedders of a gemma4 checkpoint are not the text
/// model's and are ignored.
/// </summary>
public static class Gemma4Tensors
{
    public static ModelTensors Expected(Gemma4TextConfig c)
    {
        bool nested = c.Path.Length > 0;
        string p = nested ? "model.language_model." : "model.";
        return new ModelTensors("Gemma4", c.Source.Length == 0 ? "config.json" : c.Source, Declare(c, p), [".rotary_emb.inv_freq"],
            nested ? ["model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio."] : null);
    }

    // Lazily, layer by layer: a config claiming 2^31 layers is judged by its first missing tensors.
    private static IEnumerable<ExpectedTensor> Declare(Gemma4TextConfig c, string p)
    {
        int d = c.HiddenSize, v = c.VocabSize, ple = c.HiddenSizePerLayerInput, layers = c.NumHiddenLayers;
        yield return new($"{p}embed_tokens.weight", [v, d], "vocab_size, hidden_size");
        if (ple > 0)
        {
            yield return new($"{p}embed_tokens_per_layer.weight", [c.VocabSizePerLayerInput, layers * ple],
                "vocab_size_per_layer_input, num_hidden_layers * hidden_size_per_layer_input");
            yield return new($"{p}per_layer_model_projection.weight", [layers * ple, d], "num_hidden_layers * hidden_size_per_layer_input, hidden_size");
            yield return new($"{p}per_layer_projection_norm.weight", [ple], "hidden_size_per_layer_input");
        }
        for (int l = 0; l < layers; l++)
        {
            string lp = $"{p}layers.{l}";
            int hd = c.LayerHeadDim(l), q = c.NumAttentionHeads * hd, kv = c.LayerKvHeads(l) * hd, inter = c.MlpIntermediate(l);
            string hdFrom = c.IsSliding(l) ? "head_dim" : "global_head_dim";
            string kvFrom = c.KEqV(l) ? $"num_global_key_value_heads * {hdFrom}" : $"num_key_value_heads * {hdFrom}";
            string interFrom = inter == c.IntermediateSize ? "intermediate_size" : "2 * intermediate_size (use_double_wide_mlp, KV-shared layer)";
            foreach (var norm in new[] { "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm" })
                yield return new($"{lp}.{norm}.weight", [d], "hidden_size");
            yield return new($"{lp}.layer_scalar", [1], "one scalar");
            yield return new($"{lp}.self_attn.q_proj.weight", [q, d], $"num_attention_heads * {hdFrom}, hidden_size");
            if (c.AttentionBias) yield return new($"{lp}.self_attn.q_proj.bias", [q], $"num_attention_heads * {hdFrom} (attention_bias)");
            yield return new($"{lp}.self_attn.q_norm.weight", [hd], hdFrom);
            if (!c.IsKvSharedLayer(l))
            {
                yield return new($"{lp}.self_attn.k_proj.weight", [kv, d], $"{kvFrom}, hidden_size");
                if (c.AttentionBias) yield return new($"{lp}.self_attn.k_proj.bias", [kv], $"{kvFrom} (attention_bias)");
                if (!c.KEqV(l))
                {
                    yield return new($"{lp}.self_attn.v_proj.weight", [kv, d], $"{kvFrom}, hidden_size");
                    if (c.AttentionBias) yield return new($"{lp}.self_attn.v_proj.bias", [kv], $"{kvFrom} (attention_bias)");
                }
                yield return new($"{lp}.self_attn.k_norm.weight", [hd], hdFrom);
            }
            yield return new($"{lp}.self_attn.o_proj.weight", [d, q], $"hidden_size, num_attention_heads * {hdFrom}");
            if (c.AttentionBias) yield return new($"{lp}.self_attn.o_proj.bias", [d], "hidden_size (attention_bias)");
            yield return new($"{lp}.mlp.gate_proj.weight", [inter, d], $"{interFrom}, hidden_size");
            yield return new($"{lp}.mlp.up_proj.weight", [inter, d], $"{interFrom}, hidden_size");
            yield return new($"{lp}.mlp.down_proj.weight", [d, inter], $"hidden_size, {interFrom}");
            if (c.EnableMoeBlock)
            {
                int e = c.NumExperts, mi = c.MoeIntermediateSize;
                yield return new($"{lp}.router.scale", [d], "hidden_size");
                yield return new($"{lp}.router.per_expert_scale", [e], "num_experts");
                yield return new($"{lp}.router.proj.weight", [e, d], "num_experts, hidden_size");
                yield return new($"{lp}.experts.gate_up_proj", [e, 2 * mi, d], "num_experts, 2 * moe_intermediate_size, hidden_size");
                yield return new($"{lp}.experts.down_proj", [e, d, mi], "num_experts, hidden_size, moe_intermediate_size");
                foreach (var norm in new[] { "post_feedforward_layernorm_1", "post_feedforward_layernorm_2", "pre_feedforward_layernorm_2" })
                    yield return new($"{lp}.{norm}.weight", [d], "hidden_size");
            }
            if (ple > 0)
            {
                yield return new($"{lp}.per_layer_input_gate.weight", [ple, d], "hidden_size_per_layer_input, hidden_size");
                yield return new($"{lp}.per_layer_projection.weight", [d, ple], "hidden_size, hidden_size_per_layer_input");
                yield return new($"{lp}.post_per_layer_input_norm.weight", [d], "hidden_size");
            }
        }
        yield return new($"{p}norm.weight", [d], "hidden_size");
        yield return new("lm_head.weight", [v, d], "vocab_size, hidden_size", Optional: c.TieWordEmbeddings);
    }
}
