namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// What <see cref="Qwen2VlForConditionalGeneration"/> loads, from its config, by HF module path (model.language_model.*,
/// model.visual.*, lm_head; a checkpoint may store them as model.* and visual.*, the layout the released checkpoints
/// and save_pretrained write, as <see cref="Qwen2VlWeights"/> reads them): the embedding [vocab_size, hidden_size]; per
/// decoder layer the two RMSNorms, q/k/v with biases (Qwen2's attention), o without, the gated MLP (biases when
/// mlp_bias); the final norm; lm_head (optional when tied); the vision tower's patch embedding [embed_dim, in_channels,
/// temporal_patch_size, patch_size, patch_size], per block two LayerNorms, qkv, proj, fc1 [embed_dim * mlp_ratio], fc2,
/// and the merger (ln_q, mlp.0 and mlp.2 over embed_dim * spatial_merge_size^2, out to vision hidden_size).
/// </summary>
public static class Qwen2VlTensors
{
    public static ModelTensors Expected(Qwen2VlConfig c) =>
        new("Qwen2-VL", c.Text.SourceName.Length == 0 ? "config.json" : c.Text.SourceName, Declare(c), [".rotary_emb.inv_freq"])
        {
            StoredPrefixes = [new("model.language_model.", "model."), new("model.visual.", "visual.")],
        };

    // Lazily, layer by layer: a config claiming 2^31 layers is judged by its first missing tensors.
    private static IEnumerable<ExpectedTensor> Declare(Qwen2VlConfig c)
    {
        var t = c.Text;
        int d = t.HiddenSize, q = t.NumAttentionHeads * c.HeadDim, kv = t.NumKeyValueHeads * c.HeadDim, inter = t.IntermediateSize;
        const string p = "model.language_model.";
        yield return new($"{p}embed_tokens.weight", [t.VocabSize, d], "text vocab_size, hidden_size");
        for (int l = 0; l < t.NumHiddenLayers; l++)
        {
            string lp = $"{p}layers.{l}";
            yield return new($"{lp}.input_layernorm.weight", [d], "hidden_size");
            yield return new($"{lp}.post_attention_layernorm.weight", [d], "hidden_size");
            yield return new($"{lp}.self_attn.q_proj.weight", [q, d], "num_attention_heads * head_dim, hidden_size");
            yield return new($"{lp}.self_attn.q_proj.bias", [q], "num_attention_heads * head_dim");
            foreach (var kvName in new[] { "k_proj", "v_proj" })
            {
                yield return new($"{lp}.self_attn.{kvName}.weight", [kv, d], "num_key_value_heads * head_dim, hidden_size");
                yield return new($"{lp}.self_attn.{kvName}.bias", [kv], "num_key_value_heads * head_dim");
            }
            yield return new($"{lp}.self_attn.o_proj.weight", [d, q], "hidden_size, num_attention_heads * head_dim");
            yield return new($"{lp}.mlp.gate_proj.weight", [inter, d], "intermediate_size, hidden_size");
            yield return new($"{lp}.mlp.up_proj.weight", [inter, d], "intermediate_size, hidden_size");
            yield return new($"{lp}.mlp.down_proj.weight", [d, inter], "hidden_size, intermediate_size");
            if (t.MlpBias)
            {
                yield return new($"{lp}.mlp.gate_proj.bias", [inter], "intermediate_size (mlp_bias)");
                yield return new($"{lp}.mlp.up_proj.bias", [inter], "intermediate_size (mlp_bias)");
                yield return new($"{lp}.mlp.down_proj.bias", [d], "hidden_size (mlp_bias)");
            }
        }
        yield return new($"{p}norm.weight", [d], "hidden_size");
        yield return new("lm_head.weight", [t.VocabSize, d], "text vocab_size, hidden_size", Optional: t.TieWordEmbeddings);

        const string v = "model.visual.";
        int e = c.VisionEmbedDim, mlp = c.VisionMlpHidden, merged = e * c.SpatialMergeSize * c.SpatialMergeSize;
        yield return new($"{v}patch_embed.proj.weight", [e, c.InChannels, c.TemporalPatchSize, c.PatchSize, c.PatchSize],
            "vision embed_dim, in_channels, temporal_patch_size, patch_size, patch_size");
        for (int b = 0; b < c.VisionDepth; b++)
        {
            string bp = $"{v}blocks.{b}";
            foreach (var norm in new[] { "norm1", "norm2" })
            {
                yield return new($"{bp}.{norm}.weight", [e], "vision embed_dim");
                yield return new($"{bp}.{norm}.bias", [e], "vision embed_dim");
            }
            yield return new($"{bp}.attn.qkv.weight", [3 * e, e], "3 * vision embed_dim, embed_dim");
            yield return new($"{bp}.attn.qkv.bias", [3 * e], "3 * vision embed_dim");
            yield return new($"{bp}.attn.proj.weight", [e, e], "vision embed_dim, embed_dim");
            yield return new($"{bp}.attn.proj.bias", [e], "vision embed_dim");
            yield return new($"{bp}.mlp.fc1.weight", [mlp, e], "vision embed_dim * mlp_ratio, embed_dim");
            yield return new($"{bp}.mlp.fc1.bias", [mlp], "vision embed_dim * mlp_ratio");
            yield return new($"{bp}.mlp.fc2.weight", [e, mlp], "vision embed_dim, embed_dim * mlp_ratio");
            yield return new($"{bp}.mlp.fc2.bias", [e], "vision embed_dim");
        }
        yield return new($"{v}merger.ln_q.weight", [e], "vision embed_dim");
        yield return new($"{v}merger.ln_q.bias", [e], "vision embed_dim");
        yield return new($"{v}merger.mlp.0.weight", [merged, merged], "embed_dim * spatial_merge_size^2 (both)");
        yield return new($"{v}merger.mlp.0.bias", [merged], "embed_dim * spatial_merge_size^2");
        yield return new($"{v}merger.mlp.2.weight", [c.VisionOutHidden, merged], "vision hidden_size, embed_dim * spatial_merge_size^2");
        yield return new($"{v}merger.mlp.2.bias", [c.VisionOutHidden], "vision hidden_size");
    }
}
