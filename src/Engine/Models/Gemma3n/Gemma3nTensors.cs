namespace Harness.Engine.Models.Gemma3n;

/// <summary>
/// What <see cref="Gemma3nModel"/> loads, from its config (HF's Gemma3n parameter names, under <see cref="Gemma3nConfig.TextPrefix"/>):
/// the embeddings (per-layer table of vocab_size_per_layer_input rows), the per-layer-input projection, the AltUp
/// projections; per layer AltUp, Laurel (laurel_rank), q/k/v/o (no k/v on a KV-shared layer; biases when
/// attention_bias), the MLP of that layer's intermediate_size, the per-layer-input gate and the norms; the final norm,
/// lm_head (optional when tied); and for gemma3n the two multimodal embedders. The towers are not the engine's (it is
/// handed their outputs) and are ignored.
/// </summary>
public static class Gemma3nTensors
{
    public static ModelTensors Expected(Gemma3nConfig c)
    {
        var b = c.Text.Base;
        return new ModelTensors("Gemma3n", b.SourceName.Length == 0 ? "config.json" : b.SourceName, Declare(c), [".rotary_emb.inv_freq"],
            ["model.vision_tower.", "model.audio_tower."]);
    }

    // Lazily, layer by layer: a config claiming 2^31 layers is judged by its first missing tensors.
    private static IEnumerable<ExpectedTensor> Declare(Gemma3nConfig config)
    {
        var c = config.Text;
        var b = c.Base;
        string p = config.TextPrefix;
        int d = c.HiddenSize, layers = c.NumLayers, ple = c.HiddenSizePerLayerInput, a = c.AltupNumInputs, r = c.LaurelRank;
        int hd = b.HeadDim, q = b.NumAttentionHeads * hd, kv = b.NumKeyValueHeads * hd;
        bool bias = b.AttentionBias;
        yield return new($"{p}.embed_tokens.weight", [c.VocabSize, d], "vocab_size, hidden_size");
        yield return new($"{p}.embed_tokens_per_layer.weight", [c.VocabSizePerLayerInput, layers * ple],
            "vocab_size_per_layer_input, num_hidden_layers * hidden_size_per_layer_input");
        yield return new($"{p}.per_layer_model_projection.weight", [layers * ple, d], "num_hidden_layers * hidden_size_per_layer_input, hidden_size");
        yield return new($"{p}.per_layer_projection_norm.weight", [ple], "hidden_size_per_layer_input");
        for (int i = 0; i < a - 1; i++)
        {
            yield return new($"{p}.altup_projections.{i}.weight", [d, d], "hidden_size, hidden_size (altup_num_inputs - 1 of them)");
            yield return new($"{p}.altup_unembed_projections.{i}.weight", [d, d], "hidden_size, hidden_size (altup_num_inputs - 1 of them)");
        }
        for (int l = 0; l < layers; l++)
        {
            string lp = $"{p}.layers.{l}";
            int inter = c.IntermediateSizes[l];
            yield return new($"{lp}.altup.correct_output_scale", [d], "hidden_size");
            yield return new($"{lp}.altup.correction_coefs.weight", [a, a], "altup_num_inputs, altup_num_inputs");
            yield return new($"{lp}.altup.modality_router.weight", [a, d], "altup_num_inputs, hidden_size");
            yield return new($"{lp}.altup.prediction_coefs.weight", [a * a, a], "altup_num_inputs^2, altup_num_inputs");
            yield return new($"{lp}.altup.router_norm.weight", [d], "hidden_size");
            foreach (var norm in new[] { "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "post_per_layer_input_norm" })
                yield return new($"{lp}.{norm}.weight", [d], "hidden_size");
            yield return new($"{lp}.laurel.linear_left.weight", [r, d], "laurel_rank, hidden_size");
            yield return new($"{lp}.laurel.linear_right.weight", [d, r], "hidden_size, laurel_rank");
            yield return new($"{lp}.laurel.post_laurel_norm.weight", [d], "hidden_size");
            yield return new($"{lp}.mlp.gate_proj.weight", [inter, d], $"intermediate_size[{l}], hidden_size");
            yield return new($"{lp}.mlp.up_proj.weight", [inter, d], $"intermediate_size[{l}], hidden_size");
            yield return new($"{lp}.mlp.down_proj.weight", [d, inter], $"hidden_size, intermediate_size[{l}]");
            yield return new($"{lp}.per_layer_input_gate.weight", [ple, d], "hidden_size_per_layer_input, hidden_size");
            yield return new($"{lp}.per_layer_projection.weight", [d, ple], "hidden_size, hidden_size_per_layer_input");
            yield return new($"{lp}.self_attn.q_proj.weight", [q, d], "num_attention_heads * head_dim, hidden_size");
            if (bias) yield return new($"{lp}.self_attn.q_proj.bias", [q], "num_attention_heads * head_dim (attention_bias)");
            yield return new($"{lp}.self_attn.q_norm.weight", [hd], "head_dim");
            if (c.KvSourceLayer(l) == l)
            {
                yield return new($"{lp}.self_attn.k_proj.weight", [kv, d], "num_key_value_heads * head_dim, hidden_size");
                if (bias) yield return new($"{lp}.self_attn.k_proj.bias", [kv], "num_key_value_heads * head_dim (attention_bias)");
                yield return new($"{lp}.self_attn.v_proj.weight", [kv, d], "num_key_value_heads * head_dim, hidden_size");
                if (bias) yield return new($"{lp}.self_attn.v_proj.bias", [kv], "num_key_value_heads * head_dim (attention_bias)");
                yield return new($"{lp}.self_attn.k_norm.weight", [hd], "head_dim");
            }
            yield return new($"{lp}.self_attn.o_proj.weight", [d, q], "hidden_size, num_attention_heads * head_dim");
            if (bias) yield return new($"{lp}.self_attn.o_proj.bias", [d], "hidden_size (attention_bias)");
        }
        yield return new($"{p}.norm.weight", [d], "hidden_size");
        yield return new("lm_head.weight", [c.VocabSize, d], "vocab_size, hidden_size", Optional: b.TieWordEmbeddings);
        foreach (var (name, e) in new[] { ("embed_vision", config.Vision), ("embed_audio", config.Audio) })
        {
            if (e is null) continue;
            string ep = $"model.{name}";
            yield return new($"{ep}.embedding.weight", [e.VocabSize, e.HiddenSize], $"{e.JsonPath}.vocab_size, {e.JsonPath}.hidden_size");
            yield return new($"{ep}.hard_embedding_norm.weight", [e.HiddenSize], $"{e.JsonPath}.hidden_size");
            yield return new($"{ep}.soft_embedding_norm.weight", [e.HiddenSize], $"{e.JsonPath}.hidden_size");
            yield return new($"{ep}.embedding_projection.weight", [d, e.HiddenSize], $"text_config.hidden_size, {e.JsonPath}.hidden_size");
        }
    }
}
