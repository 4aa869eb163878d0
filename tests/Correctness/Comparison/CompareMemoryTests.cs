using Harness.Commands;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Comparison;

/// <summary>
/// Issue 22: the float64 oracle deep-copied the whole model (8 bytes a parameter beside the reference), so at real sizes
/// `compare` died of an out-of-memory kill after minutes of loading. The prediction is made from the safetensors headers
/// before anything loads, and a model that does not fit is refused with what would.
/// </summary>
public class CompareMemoryTests
{
    private static string Tiny(string name) => Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", name);

    [Fact]
    public void The_prediction_counts_the_checkpoints_parameters_and_its_largest_layer()
    {
        var m = CompareMemory.Of(Tiny("tiny-llama-fp32"), DType.Float32, oracle: true, whole: false);
        Assert.Equal(4, m.Units);                              // model.layers.0 .. 3 (num_hidden_layers 4)
        Assert.True(m.LargestUnit > 0 && m.LargestUnit * 4 < m.Parameters);
        Assert.True(m.Streamed >= 200 * 64);                   // embed_tokens (vocab 200 x hidden 64): looked up by rows, never upcast
        Assert.Equal(m.Parameters * 8, (m with { OracleWhole = true }).OracleBytes);
        Assert.True(m.OracleBytes < (m with { OracleWhole = true }).OracleBytes);
    }

    [Fact]
    public void A_Llama_3_1_8B_in_fp32_is_refused_on_an_80_GiB_GPU_with_bf16_named_as_what_fits()
    {
        // Llama-3.1-8B's counts: 32 layers of 218,112,000, embed_tokens and lm_head 128256 x 4096, the final norm 4096
        long layer = 218_112_000, table = 128_256L * 4096;
        var m = new CompareMemory(32 * layer + 2 * table + 4096, layer, 2 * table, 4096, 32, 4, OracleWhole: false, Oracle: true, Gpu: true);
        string? line = m.Refusal("/models/llama-3.1-8b", 80L << 30, "GPU");
        Assert.NotNull(line);
        Assert.DoesNotContain('\n', line);
        Assert.Contains("needs about", line);
        Assert.Contains("float64 oracle (streamed)", line);
        Assert.Contains("--dtype bf16", line);
        Assert.Null((m with { BytesPerParameter = 2 }).Refusal("/models/llama-3.1-8b", 80L << 30, "GPU"));
        // the whole twin alone is 64 GB: refused where the streamed oracle fits, and the line says so
        var whole = m with { BytesPerParameter = 2, OracleWhole = true };
        Assert.Contains("the streamed oracle", whole.Refusal("/models/llama-3.1-8b", 80L << 30, "GPU"));
        // on a 24 GiB host even bf16 without the oracle does not fit: a copy with fewer layers is what is left
        Assert.Contains("layers", (m with { Gpu = false, BytesPerParameter = 2 }).Refusal("/models/llama-3.1-8b", 24L << 30, "host"));
    }

    [Fact]
    public void A_1_1B_model_on_the_CPU_gets_more_than_the_300_s_that_killed_its_greedy_run_as_hung()
    {
        // "reference op 'generate' did not answer within 300 s; the worker (pid 14214) was killed" (TinyLlama-1.1B dims,
        // bf16, 128 ids, every step captured, streamed oracle, on this 2-core machine under load)
        const long tinyLlama11B = 1_100_048_384;
        Assert.Equal(TimeSpan.FromSeconds(1500), CompareCommand.ReferenceTimeout(tinyLlama11B, gpu: false, given: null));
        Assert.Equal(TimeSpan.FromSeconds(300), CompareCommand.ReferenceTimeout(tinyLlama11B, gpu: true, given: null));
        Assert.Equal(TimeSpan.FromSeconds(300), CompareCommand.ReferenceTimeout(150_000, gpu: false, given: null)); // the tiny models: the worker's own
        Assert.Equal(TimeSpan.FromSeconds(900), CompareCommand.ReferenceTimeout(30_000_000_000, gpu: true, given: null));
        Assert.Equal(TimeSpan.FromSeconds(42), CompareCommand.ReferenceTimeout(tinyLlama11B, gpu: false, given: 42));
    }
}
