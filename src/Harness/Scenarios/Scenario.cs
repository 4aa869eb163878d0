using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>
/// One catalog entry: a comparison of the engine with the HF/torch reference, described as data with a stable id
/// ("llama/tp2-sp-pp2/prompt-embeds/fp32", "gemma4/e2b-like/tp1/audio-tower/bf16/fault=matmul-no-nd-broadcast").
/// A scenario with a <see cref="Fault"/> is a mutation check: it passes when the comparison FAILS and the failure
/// points at <see cref="ExpectedFirstBadModule"/>. The xunit tests and the CLI run the same entries.
/// </summary>
public abstract record Scenario
{
    public required string Id { get; init; }
    /// <summary>What is compared: "llama", "matmul", "gemma4", "gemma3n".</summary>
    public required string Model { get; init; }
    /// <summary>Parallel layout: "single", "tp2", "tp2-sp-pp2", ...</summary>
    public required string Layout { get; init; }
    public required DType DType { get; init; }
    /// <summary>"input-ids", "prompt-embeds" or "tensors".</summary>
    public required string Input { get; init; }
    public required string Description { get; init; }
    /// <summary>The tolerance policy's name, for listings and reports.</summary>
    public required string Tolerance { get; init; }
    /// <summary>Scenarios sharing a key share one reference recording (fixtures/reference/KEY.safetensors).</summary>
    public required string ReferenceKey { get; init; }
    /// <summary>The named engine fault to inject (Harness.Engine.Runtime.Faults), or null.</summary>
    public string? Fault { get; init; }
    /// <summary>For a fault: the module the harness must name as the first bad one.</summary>
    public string? ExpectedFirstBadModule { get; init; }
    /// <summary>"cpu", or "cuda" to run the engine on the GPU (see <see cref="CudaScenarios"/>; the id ends in /cuda).</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>
    /// Models that generate: every decode step judged per module (<see cref="Runs.DecodeSteps"/>; on by default, the step
    /// tensors are [1, 1, ...] rows); off (`compare --no-steps`): decode is judged by its tokens only. A family's reference
    /// captures the step modules, and its engine runs teacher-forced on the reference's tokens with a step sink, only when on.
    /// </summary>
    public bool JudgeSteps { get; init; } = true;

    /// <summary>
    /// Models that generate: the greedy tokens decoded after the prompt (each family's default; `compare --max-new-tokens N`),
    /// every one judged by its token and, with <see cref="JudgeSteps"/>, every module at its step. 0: the scenario does not
    /// generate (tensor and tower scenarios).
    /// </summary>
    public virtual int NewTokens { get; init; }

    /// <summary>
    /// The reference's decode teacher-forced on these tokens instead of its own greedy ones (decode step s fed
    /// ForcedTokens[s - 1]; steps past them greedy): `harness judge --dump` judging another engine's steps on the tokens it
    /// was fed. Null (default): greedy. It changes the reference, so a scenario that sets it gives its
    /// <see cref="ReferenceKey"/> the tokens too (the judge does).
    /// </summary>
    public long[]? ForcedTokens { get; init; }

    /// <summary>The forced tokens as the worker's generate ops take them ("forced_tokens", int64 [n]); none when null.</summary>
    protected IEnumerable<(string Name, Tensor Value)> ForcedTokensInput() =>
        ForcedTokens is { } f ? [("forced_tokens", Tensor.FromArray(f, f.Length))] : [];

    /// <summary>A mutation check: the comparison must fail at <see cref="ExpectedFirstBadModule"/>. A fault injected
    /// ad hoc (repro --fault, run --fault) has no expected module and is judged as a plain comparison.</summary>
    public bool ExpectFailure => Fault is not null && ExpectedFirstBadModule is not null;

    /// <summary>The seeded inputs the engine and the reference are given (recorded with the reference outputs).</summary>
    public abstract IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context);

    /// <summary>What else defines the reference: seeds, the HF config (as JSON), shapes; recorded in the fixture's metadata.</summary>
    public abstract IReadOnlyDictionary<string, string> Manifest();

    /// <summary>Computes the reference outputs with the live reference (HF/torch in the worker).</summary>
    public abstract ReferenceBundle ComputeReference(ScenarioContext context);

    /// <summary>
    /// Checks what the engine will load (config.json, the weights against the model it builds) before any reference work
    /// starts; bad input throws an exception marked <see cref="Engine.IO.IInputError"/> whose message names the file and
    /// the field or tensor. Default: nothing to check (the scenario builds its inputs in code).
    /// </summary>
    public virtual void CheckInputs(ScenarioContext context) { }

    /// <summary>Runs the engine and compares it with the reference bundle.</summary>
    public abstract ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference);

    public override string ToString() => Id;

    /// <summary>The id's fault part: "/fault=NAME".</summary>
    public const string FaultPart = "/fault=";

    /// <summary>
    /// Every id is built here from its parts, as ggml's test cases build names from their parameters:
    /// <c>model/part/.../dtype[/fault=NAME]</c>, e.g. ("llama", ["tp2-sp-pp2", "prompt-embeds"], Float32, null) is
    /// "llama/tp2-sp-pp2/prompt-embeds/fp32". Parts are the layout, the input and whatever else tells scenarios apart.
    /// </summary>
    public static string BuildId(string model, IEnumerable<string> parts, DType dtype, string? fault = null)
    {
        var all = parts.Prepend(model).Append(DTypeTag(dtype)).ToList();
        var bad = all.FirstOrDefault(p => p.Length == 0 || p.Contains('/') || p.Contains('='));
        if (bad is not null) throw new ArgumentException($"scenario id part '{bad}' is empty or holds '/' or '=' (parts: {string.Join(", ", all)})");
        return string.Join('/', all) + (fault is null ? "" : FaultPart + fault);
    }

    /// <summary>The id with its fault part replaced by <paramref name="fault"/> (added when it had none).</summary>
    public static string WithFault(string id, string fault)
    {
        int at = id.IndexOf(FaultPart, StringComparison.Ordinal);
        return (at < 0 ? id : id[..at]) + FaultPart + fault;
    }

    internal static string DTypeTag(DType d) => d switch
    {
        DType.Float32 => "fp32",
        DType.BFloat16 => "bf16",
        DType.Float16 => "fp16",
        _ => d.TorchName(),
    };
}
