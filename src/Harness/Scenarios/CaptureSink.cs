using Harness.Engine.Capture;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// Feeds the engine's activation records into a harness <see cref="ActivationCapture"/>: the prefill's (step 0) by
/// default; with <see cref="FirstStep"/>..<see cref="LastStep"/> set, the records of those decode steps, named
/// <c>step&lt;s&gt;.&lt;module&gt;</c> (<see cref="DecodeSteps"/>), so one capture holds every step apart.
/// </summary>
public sealed class CaptureSink(ActivationCapture capture, Action<string>? onRecord = null) : IActivationSink
{
    public ActivationCapture Capture { get; } = capture;

    /// <summary>Also hears every kept record, with its step (<see cref="ScenarioContext.Tap"/>: `harness dump`).</summary>
    public IActivationSink? Tap { get; init; }

    /// <summary>The first decode step recorded (0: the prefill).</summary>
    public int FirstStep { get; init; }

    /// <summary>The last decode step recorded.</summary>
    public int LastStep { get; init; }

    /// <summary>A sink of decode steps 1 .. newTokens - 1 (the forced run's steps after its prompt).</summary>
    public static CaptureSink DecodeSteps(ActivationCapture capture, int newTokens, Action<string>? onRecord = null, IActivationSink? tap = null) =>
        new(capture, onRecord) { FirstStep = 1, LastStep = newTokens - 1, Tap = tap };

    public bool Wants(string module) => Wants(module, 0);

    public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Record(module, worldRank, value, shard, 0);

    public bool Wants(string module, int step) => step >= FirstStep && step <= LastStep && Capture.Wants(Runs.DecodeSteps.Name(step, module));

    public void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step)
    {
        if (step < FirstStep || step > LastStep) return;
        Capture.Record(Runs.DecodeSteps.Name(step, module), value, shard, worldRank);   // the capture keeps its own snapshot (a clone here was a second, discarded copy of every record)
        if (Capture.Wants(Runs.DecodeSteps.Name(step, module))) Tap?.Record(module, worldRank, value, shard, step);
        onRecord?.Invoke(module);
    }
}

/// <summary>
/// Records the prompt's forward only: a scenario builds its model ONCE over this sink, runs the captured forward, then turns
/// it off (<see cref="Enabled"/> = false) and decodes on the same model (issue 20: each scenario built its model twice, with
/// and without the capture sink, and Llama three times). One per rank: ranks finish their forward at different times.
/// </summary>
public sealed class PrefillSink(IActivationSink inner) : IActivationSink
{
    public volatile bool Enabled = true;

    /// <summary>Where decode steps' records (step 1..) go, once set: the forced run's per-step capture on the same model
    /// (<see cref="CaptureSink.DecodeSteps"/>); null: none.</summary>
    public volatile IActivationSink? Steps;

    public bool Wants(string module) => Enabled && inner.Wants(module);
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard)
    {
        if (Enabled) inner.Record(module, worldRank, value, shard);
    }

    public bool Wants(string module, int step) => step == 0 ? Wants(module) : Steps?.Wants(module, step) ?? false;

    public void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step)
    {
        if (step == 0) Record(module, worldRank, value, shard);
        else Steps?.Record(module, worldRank, value, shard, step);
    }
}
