using Harness.Engine.Tensors;

namespace Harness.Engine.Capture;

/// <summary>
/// Where the engine records named activations, at the same module paths the reference hooks
/// (model.layers.0.self_attn, model.norm, lm_head, ...), in the reference's layout ([batch, tokens, ...]).
/// Called from every rank; implementations are thread-safe and cheap when a module is not wanted.
/// <para>Records carry the decode step they belong to (0 = the prompt's forward, 1.. = decode steps; see
/// <see cref="Models.DecodeLoop"/>): a sink that implements only the two step-less members keeps what it kept before,
/// the prefill's records (step 0), and is asked nothing at later steps.</para>
/// </summary>
public interface IActivationSink
{
    bool Wants(string module);

    void Record(string module, int worldRank, Tensor value, ShardSpec shard);

    /// <summary>Whether a record of <paramref name="module"/> at decode step <paramref name="step"/> would be kept.</summary>
    bool Wants(string module, int step) => step == 0 && Wants(module);

    /// <summary>A module's output at decode step <paramref name="step"/> (0 = prefill, 1.. = decode steps, [1, 1, ...] rows).</summary>
    void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step)
    {
        if (step == 0) Record(module, worldRank, value, shard);
    }
}

/// <summary>Records nothing.</summary>
public sealed class NoCapture : IActivationSink
{
    public static readonly NoCapture Instance = new();
    public bool Wants(string module) => false;
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard) { }
    public bool Wants(string module, int step) => false;
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step) { }
}

/// <summary>
/// A model's view of its sink, scoped to the decode step it is running: each model instance (so each rank) holds one,
/// <see cref="Models.DecodeLoop"/> sets <see cref="Step"/> before every forward, and the model's modules record through it
/// with the step-less members, which carry <see cref="Step"/> to the sink. (One shared step on the sink itself would
/// race: ranks run their steps on their own threads.)
/// </summary>
public sealed class StepSink : IActivationSink
{
    private StepSink(IActivationSink inner) => Inner = inner;

    /// <summary>The sink records go to.</summary>
    public IActivationSink Inner { get; }

    /// <summary>The decode step of the records made now: 0 = the prompt's forward (the default), 1.. = decode steps.</summary>
    public int Step { get; set; }

    /// <summary>A step scope over a sink (null: none); a <see cref="StepSink"/> is returned as it is, so a model and the
    /// models it holds (a language model inside a multimodal one) share one step.</summary>
    public static StepSink Over(IActivationSink? sink) => sink as StepSink ?? new StepSink(sink ?? NoCapture.Instance);

    public bool Wants(string module) => Inner.Wants(module, Step);
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Inner.Record(module, worldRank, value, shard, Step);
    public bool Wants(string module, int step) => Inner.Wants(module, step);
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step) => Inner.Record(module, worldRank, value, shard, step);
}

/// <summary>An engine failure inside a named module on a rank, so the harness can say where a run broke.</summary>
public sealed class ModuleFailedException(string module, int worldRank, Exception inner)
    : Exception($"{module} (rank {worldRank}) failed: {inner.Message}", inner)
{
    public string Module { get; } = module;
    public int WorldRank { get; } = worldRank;
}
