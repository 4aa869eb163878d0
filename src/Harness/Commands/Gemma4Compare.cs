using Harness.Engine.Models.Gemma4;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR` on a Gemma4 checkpoint: gemma4_text (Gemma4ForCausalLM) or gemma4
/// (Gemma4ForConditionalGeneration, its text decoder under model.language_model), with a text prompt, at --tp N.
/// </summary>
internal static class Gemma4Compare
{
    public static readonly string[] ModelTypes = ["gemma4", "gemma4_text"];

    public static int Run(CompareCommand.Options o, string dir, string configPath, long[]? ids)
    {
        if (o.Pp != 1 || o.Sp)
            return CliSupport.UsageError($"compare: Gemma4 runs with tensor parallelism only (--tp N); --pp and --sp are not supported for it yet");
        Gemma4TextConfig config;
        try
        {
            config = Gemma4ForCausalLM.LoadConfig(dir);
        }
        catch (Exception e) when (e is IOException or Engine.Config.ConfigException or FormatException or InvalidOperationException)
        {
            return CliSupport.UsageError($"compare: cannot load {configPath}: {e.Message}");
        }
        if (ids is not null && ids.FirstOrDefault(id => id >= config.VocabSize, -1) is var bad && bad >= 0)
            return CliSupport.UsageError($"compare: prompt token id {bad} is outside the vocabulary ({config.Path}vocab_size {config.VocabSize} in {configPath})");
        if (config.NumAttentionHeads % o.Tp != 0)
            return CliSupport.UsageError($"compare: {config.NumAttentionHeads} attention heads ({config.Path}num_attention_heads in {configPath}) do not split over --tp {o.Tp}");
        // the weights against the tensors the config declares, before any reference work (a mismatch is exit 2, one line)
        Engine.Models.CheckpointValidator.Validate(dir, Gemma4Tensors.Expected(config));
        // the prompt and the generated tokens fit the positions and the memory, before any reference work (issue 24)
        if (ComparePromptFits.Check(o, configPath, ComparePromptFits.Of(config), ids?.Length ?? o.PromptLength ?? Gemma4Scenario.PromptTokens,
                Gemma4Scenario.NewTokens) is { } refused)
            return refused;

        var dtype = o.DType == "bf16" ? DType.BFloat16 : DType.Float32;
        return CompareCommand.Execute(o, dir, Gemma4Scenario.ForCheckpoint(dir, o.Tp, dtype, ids, o.PromptLength ?? Gemma4Scenario.PromptTokens));
    }
}
