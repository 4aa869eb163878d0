using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// The float64 oracle of the gemma4 ops: the text decoder's and the multimodal model's (HF's audio tower does not run in
/// float64 in 5.12.1; the twin keeps it in float32) come back as oracle.* tensors close to the float32 reference.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public class Gemma4OracleTests
{
    [SkippableFact]
    public void The_multimodal_oracle_runs_with_audio_and_agrees_with_the_float32_reference()
    {
        var client = LiveReference.Client();
        var scenario = new Gemma4MultimodalScenario("mixed", 1, DType.Float32);
        var dir = client.ShareDirectory(Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-gemma4-e2b-like-mm-fp32"));
        var inputs = scenario.Inputs(ScenarioContext.Recorded()).Select(kv => (kv.Key, kv.Value)).ToArray();
        Harness.Reference.ReferenceClient.Reply reply;
        try
        {
            reply = client.Invoke("gemma4_mm_forward", new JsonObject
            {
                ["model_dir"] = client.WorkerPath(dir), ["dtype"] = "float32", ["oracle"] = true,
                ["capture"] = new JsonArray("model.embed_audio", "model.language_model.layers.0"),
            }, inputs);
        }
        catch (Exception e) when (e.Message.Contains("float64 cannot go over the wire", StringComparison.Ordinal))
        {   // the twin ran (the failure is in naming its float64 outputs): the wire's float64 is the lead's issue-8 work
            Skip.If(true, "the worker protocol has no float64 yet: " + e.Message.Split('\n')[0]);
            return;
        }
        var logits = reply.Need("logits").ToDoubleArray();
        var oracle = reply.Need("oracle.logits");
                var o = oracle.ToDoubleArray();
        double worst = logits.Zip(o, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(worst < 1e-3, $"float32 logits and the float64 oracle differ by {worst}");
        Assert.Contains("oracle.model.embed_audio", reply.Tensors.Keys);
    }
}
