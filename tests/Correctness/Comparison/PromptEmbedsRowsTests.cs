using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Comparison;

/// <summary>
/// `compare --prompt-embeds` feeds both sides HF's <c>embed_tokens(input_ids)</c> read from the checkpoint: each id's row
/// of model.embed_tokens.weight, in order, repeated ids included, at the compare dtype (bf16 rounds the fp32 table as HF's
/// load in bf16 does).
/// </summary>
public class PromptEmbedsRowsTests
{
    private static readonly string Dir = Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void The_prompt_embeds_are_the_ids_rows_of_the_checkpoints_embed_tokens(DType dtype)
    {
        long[] ids = [5, 199, 5, 0, 42];
        var rows = LlamaScenario.EmbeddingRows(Dir, ids, dtype);
        Assert.Equal([ids.Length, 64], rows.ShapeArray);
        Assert.Equal(dtype, rows.DType);
        using var checkpoint = Checkpoint.Open(Dir);
        var table = checkpoint.GetTensor("model.embed_tokens.weight").To(DType.Float32);        // [200, 64]
        var got = rows.To(DType.Float32);
        for (int t = 0; t < ids.Length; t++)
        {
            var want = table.Narrow(0, (int)ids[t], 1);
            if (dtype == DType.BFloat16) want = want.To(DType.BFloat16).To(DType.Float32);
            Assert.True(got.Narrow(0, t, 1).BitwiseEquals(want.Contiguous()), $"row {t} (id {ids[t]})");
        }
        Assert.False(got.Narrow(0, 0, 1).BitwiseEquals(got.Narrow(0, 1, 1)));      // different ids, different rows (a planted off-by-one reads another)
    }
}
