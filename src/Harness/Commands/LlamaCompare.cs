using Harness.Engine.Models.Llama;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// The Llama family (<see cref="ModelFamilies"/>): `harness compare --model DIR` on a llama checkpoint (any TP x PP, SP)
/// and its registration: contract, tiny configs, catalog scenarios.
/// </summary>
internal static class LlamaCompare
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "llama",
        Title = "Llama",
        Contract = ModelContract.Of((weights, config, ctx, plan) => new LlamaForCausalLM(weights, config.Text, ctx, options: plan.Llama)),
        ReferenceExtension = null,                                                  // the worker's own build_model / forward / generate
        TinyConfigs = () => TinyLlama.Variants.ToDictionary(TinyLlama.ModelName, v => TinyLlama.Config(v)),
        Scenarios = LlamaScenarios.All,
        ScenarioTypes = [typeof(LlamaScenario)],
        CompareLayouts = "--tp, --pp, --sp",
        Compare = Run,
        CheckpointScenario = (dir, dtype, ids) => LlamaScenario.ForCheckpoint(dir, 1, 1, false, dtype, ids, ids.Length),
    };

    public static int Run(CompareCommand.Options o, CompareCommand.Checkpoint c)
    {
        if (o.Image) return CliSupport.UsageError($"compare: --image needs a qwen2_vl checkpoint; {c.ConfigPath} is a Llama");
        // the folder judged by ModelFolder before any reference work starts (and before an interpreter is looked for): a
        // problem is one line naming the file and the field or tensor, exit 2
        var config = ModelFolder.Check(c.Dir, o.Tp, o.Pp, c.Ids);
        // the prompt and the generated tokens (--max-new-tokens) fit the positions and the memory, before an interpreter is looked for
        if (ComparePromptFits.Check(o, c.ConfigPath, ModelFolder.PromptShape.Of(config.Text), c.Ids?.Length ?? o.PromptLength ?? 7,
                o.NewTokens(LlamaScenario.DefaultNewTokens)) is not { } predicted)
            return ExitCodes.Usage;
        return CompareCommand.Execute(o, c.Dir, LlamaScenario.ForCheckpoint(c.Dir, o.Tp, o.Pp, o.Sp, c.DType, c.Ids, o.PromptLength ?? 7,
            o.PromptEmbeds ? InputKind.PromptEmbeds : InputKind.InputIds), predicted);
    }
}
