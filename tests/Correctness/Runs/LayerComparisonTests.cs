using Harness.Engine.Capture;
using Harness.Comparison;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Tests.Correctness.Runs;

/// <summary>Layer-by-layer comparison on synthetic tensors: full, TP shards, SP token rows with padding, shape bugs, missing modules.</summary>
public class LayerComparisonTests
{
    private static Tensor Ref(ulong seed, params int[] shape) => Tensor.Randn(DType.Float32, seed, shape);

    private static Dictionary<string, Tensor> One(string module, Tensor t) => new() { [module] = t };

    [Fact]
    public void Full_vs_full_passes()
    {
        var reference = Ref(1, 3, 8);
        var capture = new ActivationCapture();
        capture.Record("model.layers.0.mlp", reference, ShardSpec.Whole);
        var report = LayerComparison.Run(One("model.layers.0.mlp", reference), capture, ["model.layers.0.mlp"]);
        Assert.True(report.Passed, report.ToString());
        var row = Assert.Single(report.Rows);
        Assert.Equal(LayerVerdict.Pass, row.Verdict);
        Assert.Equal("model.layers.0.mlp (rank 0)", row.Label);
        Assert.Null(report.FirstDivergence);
        Assert.Contains("PASS", report.ToString());
    }

    [Fact]
    public void Tp_rank_1_of_2_along_the_last_dim_is_compared_with_the_right_half()
    {
        var reference = Ref(2, 4, 8);
        var capture = new ActivationCapture();
        capture.Record("model.layers.0.mlp.gate_up_proj", reference.Narrow(-1, 0, 4), new ShardSpec.Sharded(-1, 0, 2));
        capture.Record("model.layers.0.mlp.gate_up_proj", reference.Narrow(-1, 4, 4), new ShardSpec.Sharded(-1, 1, 2));
        var report = LayerComparison.Run(One("model.layers.0.mlp.gate_up_proj", reference), capture, ["model.layers.0.mlp.gate_up_proj"]);
        Assert.True(report.Passed, report.ToString());
        Assert.Equal([0, 1], report.Rows.Select(r => r.Rank));
        Assert.Equal("model.layers.0.mlp.gate_up_proj (rank 1, dim 1 [4, 8) of 8)", report.Rows[1].Label);

        // The left half given as rank 1's shard is a value failure, not a shape one.
        var swapped = new ActivationCapture();
        swapped.Record("m", reference.Narrow(-1, 0, 4), new ShardSpec.Sharded(-1, 1, 2));
        var bad = LayerComparison.Run(One("m", reference), swapped, ["m"]);
        Assert.False(bad.Passed);
        Assert.Equal(LayerVerdict.Fail, bad.FirstDivergence!.Verdict);
    }

    [Fact]
    public void Shape_bug_is_a_shape_mismatch_naming_both_shapes_and_the_module_and_is_the_first_divergence()
    {
        var reference = Ref(3, 4, 2048);
        var capture = new ActivationCapture();
        capture.Record("model.layers.0.input_layernorm", Ref(4, 4, 2048), ShardSpec.Whole);
        // Rank 1 forgot to shard: it holds the whole [4, 2048] where its slice is [4, 1024].
        capture.Record("model.layers.1.self_attn.o_proj", reference, new ShardSpec.Sharded(1, 1, 2), rank: 1);
        var refs = new Dictionary<string, Tensor>
        {
            ["model.layers.0.input_layernorm"] = Ref(4, 4, 2048),
            ["model.layers.1.self_attn.o_proj"] = reference,
        };
        var report = LayerComparison.Run(refs, capture, ["model.layers.0.input_layernorm", "model.layers.1.self_attn.o_proj"]);
        Assert.False(report.Passed);
        var first = report.FirstDivergence!;
        Assert.Equal(LayerVerdict.ShapeMismatch, first.Verdict);
        Assert.Equal("model.layers.1.self_attn.o_proj", first.Module);
        Assert.Equal([4, 2048], first.EngineShape!);
        Assert.Equal([4, 1024], first.ExpectedShape!);
        Assert.False(first.Result!.ShapeMatches);
        var text = report.ToString();
        Assert.Contains("first divergence: model.layers.1.self_attn.o_proj (rank 1, dim 1 [1024, 2048) of 2048)", text);
        Assert.Contains("engine [4, 2048] vs expected [4, 1024]", text);
        Assert.Contains("shard: sharded dim 1 rank 1 of 2", text);
        Assert.Contains("FAIL (shape)", text);
    }

    /// <summary>7 tokens, TP=2: tokens padded to 8, each rank holds 4 rows, rank 1's last row is padding.</summary>
    private static ActivationCapture SpCapture(Tensor reference, Tensor rank1Rows)
    {
        var capture = new ActivationCapture();
        capture.Record("model.layers.1.self_attn", reference.Narrow(0, 0, 4), new ShardSpec.Rows(0, 4, 0), rank: 0);
        capture.Record("model.layers.1.self_attn", rank1Rows, new ShardSpec.Rows(4, 4, 0), rank: 1);
        return capture;
    }

    [Fact]
    public void Sp_token_rows_with_padding_pass_when_the_values_match()
    {
        var reference = Ref(5, 7, 16);
        var rank1 = Tensor.Cat([reference.Narrow(0, 4, 3), Tensor.Full(DType.Float32, 123.0, 1, 16)], 0); // padding holds junk
        var report = LayerComparison.Run(One("model.layers.1.self_attn", reference), SpCapture(reference, rank1), ["model.layers.1.self_attn"]);
        Assert.True(report.Passed, report.ToString());
        Assert.Equal("model.layers.1.self_attn (rank 1, tokens 4..6 of 7, 1 padding row)", report.Rows[1].Label);
        Assert.Equal([4, 16], report.Rows[1].ExpectedShape!);
        Assert.Equal(3 * 16, report.Rows[1].Result!.Total);
    }

    [Fact]
    public void Sp_residual_sliced_as_rows_0_to_L_on_every_rank_fails_naming_the_module_and_rank()
    {
        var reference = Ref(6, 7, 16);
        var report = LayerComparison.Run(One("model.layers.1.self_attn", reference),
            SpCapture(reference, reference.Narrow(0, 0, 4).Clone()), ["model.layers.1.self_attn"]);
        Assert.False(report.Passed);
        Assert.Equal(LayerVerdict.Pass, report.Rows[0].Verdict);
        var first = report.FirstDivergence!;
        Assert.Equal(LayerVerdict.Fail, first.Verdict);
        Assert.Equal(1, first.Rank);
        Assert.Contains("first divergence: model.layers.1.self_attn (rank 1, tokens 4..6 of 7, 1 padding row)", report.ToString());
        Assert.Contains("shard: rows [4, 8) dim 0", report.ToString());
    }

    [Fact]
    public void Sp_rank_without_the_padding_row_is_a_shape_mismatch()
    {
        var reference = Ref(7, 7, 16);
        var report = LayerComparison.Run(One("model.layers.1.self_attn", reference), SpCapture(reference, reference.Narrow(0, 4, 3)),
            ["model.layers.1.self_attn"]);
        Assert.Equal(LayerVerdict.ShapeMismatch, report.FirstDivergence!.Verdict);
        Assert.Contains("engine [3, 16] vs expected [4, 16]", report.ToString());
    }

    [Fact]
    public void Missing_module_fails_and_extras_are_information()
    {
        var refs = new Dictionary<string, Tensor> { ["model.embed_tokens"] = Ref(8, 2, 4), ["model.norm"] = Ref(9, 2, 4) };
        var capture = new ActivationCapture();
        capture.Record("model.embed_tokens", refs["model.embed_tokens"], ShardSpec.Whole);
        capture.Record("engine.scratch", Ref(10, 3), ShardSpec.Whole);
        var report = LayerComparison.Run(refs, capture, ["model.embed_tokens", "model.norm"]);
        Assert.False(report.Passed);
        Assert.Equal([LayerVerdict.Pass, LayerVerdict.Missing, LayerVerdict.Extra], report.Rows.Select(r => r.Verdict));
        Assert.Equal("model.norm", report.FirstDivergence!.Module);
        Assert.Contains("FAIL (missing)", report.ToString());
        Assert.Contains("the engine recorded nothing", report.ToString());
        Assert.False(report.Rows[2].Failed);
    }

    [Fact]
    public void Policy_per_module_is_used_and_shown()
    {
        var reference = Ref(11, 4, 4);
        var off = reference.Clone();
        off.Set(off.At(0, 0) + 1e-3, 0, 0);
        var capture = new ActivationCapture();
        capture.Record("m", off, ShardSpec.Whole);
        Assert.False(LayerComparison.Run(One("m", reference), capture, ["m"]).Passed);
        var loose = new TolerancePolicy("loose", 1e-2, 1e-2, "test");
        var report = LayerComparison.Run(One("m", reference), capture, ["m"], _ => loose);
        Assert.True(report.Passed);
        Assert.Contains("loose (rtol", report.ToString());
    }

    [Fact]
    public void Capture_filters_snapshots_and_is_off_when_disabled()
    {
        var capture = new ActivationCapture(["keep"]);
        var t = Tensor.FromArray([1f, 2f], 2);
        capture.Record("keep", t, ShardSpec.Whole);
        capture.Record("drop", t, ShardSpec.Whole);
        t.Set(5, 0);
        Assert.Equal(1.0, Assert.Single(capture.Records).Value.At(0));
        capture.Enabled = false;
        Assert.False(capture.Wants("keep"));
        capture.Record("keep", t, ShardSpec.Whole);
        Assert.Equal(1, capture.Count);
        var multi = new ActivationCapture();
        Parallel.For(0, 8, r => multi.Record("m", t, new ShardSpec.Sharded(0, r % 2, 2)));
        Assert.Equal(8, multi.Count);
        Assert.Equal([0, 0, 0, 0, 1, 1, 1, 1], multi.For("m").Select(r => r.Rank));
    }
}
