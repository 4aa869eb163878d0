using System.Diagnostics;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// A scenario on one op or layer: seeded inputs, one reference output per compared module from torch, the engine's
/// outputs captured under the same names (per rank when the engine runs ranks). An engine exception is attributed to
/// the module it happened in.
/// </summary>
public abstract record TensorScenario : Scenario
{
    /// <summary>The compared modules, in order.</summary>
    public abstract IReadOnlyList<string> Modules { get; }

    public abstract TolerancePolicy Policy { get; }

    /// <summary>The reference outputs by module name.</summary>
    protected abstract IReadOnlyDictionary<string, Tensor> Reference(Reference.ReferenceClient client);

    /// <summary>Runs the engine, recording each module's output into the sink (world rank, shard spec).</summary>
    protected abstract void Engine(IActivationSink sink);

    /// <summary>The seeded input tensors by name.</summary>
    protected abstract IReadOnlyDictionary<string, Tensor> SeededInputs();

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context) => SeededInputs();

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["description"] = Description,
        ["inputs"] = string.Join(", ", SeededInputs().Select(kv => $"{kv.Key} {Harness.Engine.Tensors.Shape.Format(kv.Value.Shape)} {kv.Value.DType.TorchName()}")),
    };

    public override ReferenceBundle ComputeReference(ScenarioContext context) =>
        new(Reference(context.Client!), null, context.Versions());

    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var capture = new ActivationCapture(Modules);
        string? error = null, module = null;
        {
            try
            {
                Engine(new CaptureSink(capture, context.ReportModule) { Tap = context.Tap });
            }
            catch (Exception e)
            {
                var failure = EngineFailures.FindModule(e);
                module = failure?.Module ?? Modules[0];
                error = (failure is null ? e : (Exception)failure).Message.Split('\n')[0];
            }
        }
        var layers = LayerComparison.Run(reference.Tensors, capture, Modules, _ => Policy);
        return new ScenarioResult(this, layers, null, error, module, sw.Elapsed);
    }
}
