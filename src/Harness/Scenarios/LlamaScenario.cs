using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>How the prompt reaches the model: token ids through model.embed_tokens, or prompt embeddings directly.</summary>
public enum InputKind { InputIds, PromptEmbeds }

/// <summary>
/// One comparison of the engine's Llama with HF's on the same weights: a parallel layout (TP x PP, SP on or off), an
/// input kind, a dtype, a prompt length (odd lengths need SP padding), and optionally an injected fault that must make
/// the comparison fail. The id is stable, e.g. "llama/tp2-sp-pp2/prompt-embeds/fp32".
/// </summary>
public sealed record LlamaScenario(int Tp, int Pp, bool Sp, InputKind Input, DType DType = DType.Float32, int PromptTokens = 7, string? Fault = null)
{
    public int WorldSize => Tp * Pp;

    public string Layout => $"tp{Tp}{(Sp ? "-sp" : "")}{(Pp > 1 ? $"-pp{Pp}" : "")}";

    public string Id =>
        $"llama/{Layout}/{(Input == InputKind.InputIds ? "input-ids" : "prompt-embeds")}/{(DType == DType.Float32 ? "fp32" : DType == DType.BFloat16 ? "bf16" : "fp16")}" +
        (Fault is null ? "" : $"/fault={Fault}");

    public override string ToString() => Id;
}
