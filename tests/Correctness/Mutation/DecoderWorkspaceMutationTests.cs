using Harness.Engine.Models.Common;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The decoders' reusable host buffers (src/Engine/Models/Common/DecoderWorkspace.cs) slot by slot. The catalog and the
/// allocation test (<c>CpuGlueTests.A_decode_step_allocates_no_tensor_storage_after_warm_up</c>) see a workspace through a
/// model whose decode steps all ask one slot for the same shape; what they cannot see is a slot asked for fewer rows and
/// then for its full rows again (a prefill after decode steps, a teacher-forced chunk), or for another dtype at the same
/// width: Stryker.NET mutants of the llama slice's Models/Common files (notes/issue-21-mutllama2.md).
/// </summary>
public class DecoderWorkspaceMutationTests
{
    [Fact]
    public void A_slot_keeps_its_buffer_for_every_row_count_up_to_the_largest_seen()
    {
        // mutant: a buffer regrown when asked for exactly its rows again (`b.Shape[0] <= rows`): every prefill after a
        // decode step allocated the prompt's buffers anew
        var ws = new DecoderWorkspace();
        var prompt = ws.Get(DecoderWorkspace.Normed, DType.Float32, 6, 8);               // [6, 8]
        Assert.Equal([6, 8], prompt.ShapeArray);
        var step = ws.Get(DecoderWorkspace.Normed, DType.Float32, 1, 8);                 // a decode step: rows of the same buffer
        Assert.Equal([1, 8], step.ShapeArray);
        Assert.Same(prompt.Storage, step.Storage);
        Assert.Same(step, ws.Get(DecoderWorkspace.Normed, DType.Float32, 1, 8));           // the same shape again: the same view
        foreach (int rows in new[] { 6, 4, 6, 1 })
        {
            var again = ws.Get(DecoderWorkspace.Normed, DType.Float32, rows, 8);
            Assert.Equal([rows, 8], again.ShapeArray);
            Assert.Equal(DType.Float32, again.DType);
            Assert.Same(prompt.Storage, again.Storage);
        }
        var longer = ws.Get(DecoderWorkspace.Normed, DType.Float32, 9, 8);               // a longer prompt: the slot grows
        Assert.Equal([9, 8], longer.ShapeArray);
        Assert.NotSame(prompt.Storage, longer.Storage);
        Assert.Same(longer.Storage, ws.Get(DecoderWorkspace.Normed, DType.Float32, 6, 8).Storage);
        Assert.NotSame(longer.Storage, ws.Get(DecoderWorkspace.Query, DType.Float32, 6, 8).Storage);   // slots are separate
    }

    [Fact]
    public void A_slot_asked_for_another_dtype_or_width_hands_out_a_buffer_of_that_dtype_and_width()
    {
        // mutants: the regrowth condition's dtype or width test dropped or inverted, so a buffer of the old dtype or width
        // (narrowed to the rows asked) is handed out for the new one
        var ws = new DecoderWorkspace();
        var f32 = ws.Get(DecoderWorkspace.Act, DType.Float32, 6, 8);
        var bf16 = ws.Get(DecoderWorkspace.Act, DType.BFloat16, 2, 8);                   // same width, fewer rows
        Assert.Equal(DType.BFloat16, bf16.DType);
        Assert.Equal([2, 8], bf16.ShapeArray);
        Assert.NotSame(f32.Storage, bf16.Storage);
        var wide = ws.Get(DecoderWorkspace.Act, DType.BFloat16, 1, 16);                  // same dtype, wider, fewer rows
        Assert.Equal(DType.BFloat16, wide.DType);
        Assert.Equal([1, 16], wide.ShapeArray);
        var back = ws.Get(DecoderWorkspace.Act, DType.Float32, 6, 8);
        Assert.Equal(DType.Float32, back.DType);
        Assert.Equal([6, 8], back.ShapeArray);
    }

    [Fact]
    public void Linear_outputs_come_from_a_slot_only_when_the_workspace_allows_them()
    {
        // one rank writes q/k/v, o_proj, gate_up and down into slots; a workspace without LinearOutputs (TP, PP, SP) never does
        Assert.Null(new DecoderWorkspace().Linear(DecoderWorkspace.Qkv, DType.Float32, 3, 12));
        var ws = new DecoderWorkspace { LinearOutputs = true };
        var qkv = ws.Linear(DecoderWorkspace.Qkv, DType.BFloat16, 3, 12)!;
        Assert.Equal([3, 12], qkv.ShapeArray);
        Assert.Equal(DType.BFloat16, qkv.DType);
        Assert.Same(qkv.Storage, ws.Get(DecoderWorkspace.Qkv, DType.BFloat16, 3, 12).Storage);
    }
}
