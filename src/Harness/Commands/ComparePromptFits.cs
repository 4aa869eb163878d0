using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// Issue 24's bound on the request for the compare paths of Gemma3n, Gemma4 and Qwen2-VL (Llama's is
/// <see cref="LlamaScenario.CheckInputs"/>): the prompt (seeded ids, --prompt, --text, or a text + image prompt with its
/// image tokens) plus the generated tokens within max_position_embeddings, and the reference's predicted memory within
/// what the machine has, before any reference work. One line naming config.json, exit 2
/// (<see cref="ModelFolder.CheckPromptFits(string, ModelFolder.PromptShape, int, int, DType, bool, long?, bool, bool)"/>).
/// </summary>
internal static class ComparePromptFits
{
    /// <summary>Gemma3n: text_config's positions (or the root's for gemma3n_text); the widest per-layer intermediate size.</summary>
    public static ModelFolder.PromptShape Of(Gemma3nConfig config)
    {
        var t = config.Text.Base;
        return ModelFolder.PromptShape.Of(t) with
        {
            Intermediate = config.Text.IntermediateSizes.Max(),
            MaxPositionsField = (config.ModelType == "gemma3n" ? "text_config." : "") + "max_position_embeddings",
        };
    }

    /// <summary>Gemma4: the full-attention layers' global_head_dim bounds the KV cache per position.</summary>
    public static ModelFolder.PromptShape Of(Gemma4TextConfig config) =>
        new(config.MaxPositionEmbeddings, config.NumAttentionHeads, Math.Max(config.NumKeyValueHeads, config.NumGlobalKeyValueHeads ?? 0),
            config.HeadDim, config.NumHiddenLayers, config.HiddenSize,
            Math.Max(config.IntermediateSize * (config.UseDoubleWideMlp ? 2 : 1), config.MoeIntermediateSize * Math.Max(1, config.TopKExperts)),
            config.VocabSize)
        {
            GlobalHeadDim = config.GlobalHeadDim,
            MaxPositionsField = config.Path + "max_position_embeddings",
        };

    /// <summary>Qwen2-VL: the text decoder's sizes (the vision tower's attention is per image, bounded by the processor).</summary>
    public static ModelFolder.PromptShape Of(Qwen2VlConfig config, string configPath) =>
        ModelFolder.PromptShape.Of(config.Text) with
        {
            MaxPositionsField = (HasTextConfig(configPath) ? "text_config." : "") + "max_position_embeddings",
        };

    /// <summary>
    /// The check itself: the memory prediction when the request fits, else null after one line on stderr (the caller exits
    /// <see cref="ExitCodes.Usage"/>). The memory is --max-memory's when given, else what the host has available; on
    /// --device cuda the GPU's memory is checked by <see cref="CompareCommand.Execute"/>, which the caller hands this same
    /// prediction to print and hold the device to: one prediction, made once, for the prompt and the weights.
    /// </summary>
    public static CompareMemory? Check(CompareCommand.Options o, string configPath, ModelFolder.PromptShape shape, int promptTokens, int newTokens)
    {
        try
        {
            long? cap = o.MaxMemoryGiB is { } gib ? (long)(gib * (1L << 30)) : o.Device == "cuda" ? long.MaxValue : null;
            return ModelFolder.CheckPromptFits(configPath, shape, promptTokens, newTokens, o.DType == "bf16" ? DType.BFloat16 : DType.Float32,
                oracle: !o.NoOracle, availableBytes: cap, steps: !o.NoSteps, oracleWhole: o.OracleWhole);
        }
        catch (Engine.IO.InputException e)
        {
            CliSupport.UsageError($"compare: {e.Message}");
            return null;
        }
    }

    private static bool HasTextConfig(string configPath)
    {
        try
        {
            return Engine.Config.HfConfig.Load(configPath).Has("text_config");
        }
        catch (Exception e) when (e is IOException or Engine.Config.ConfigException)
        {
            return false;
        }
    }
}
