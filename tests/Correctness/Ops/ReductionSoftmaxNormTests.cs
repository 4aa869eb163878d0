using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Ops.OpsTestUtil;

namespace Harness.Tests.Correctness.Ops;

public class ReductionTests
{
    [Fact]
    public void Sum_mean_max_min_over_dims()
    {
        var x = Rand(DType.Float32, 31, 3, 5, 7);
        var v = x.ToDoubleArray();
        double At(int i, int j, int k) => v[(i * 5 + j) * 7 + k];
        var sum1 = Reductions.Sum(x, 1);
        Assert.Equal([3, 7], sum1.ShapeArray);
        var exp = new List<double>();
        for (int i = 0; i < 3; i++) for (int k = 0; k < 7; k++) exp.Add(Enumerable.Range(0, 5).Sum(j => At(i, j, k)));
        AssertClose(exp.ToArray(), sum1, Tol.F32ReductionRel, Tol.F32Abs, "sum dim1");
        Assert.Equal([3, 1, 7], Reductions.Mean(x, -2, keepDim: true).ShapeArray);
        AssertClose(exp.Select(e => e / 5).ToArray(), Reductions.Mean(x, -2, true), Tol.F32ReductionRel, Tol.F32Abs, "mean dim-2");
        var rows = Rows(x);
        AssertClose(rows.Select(r => r.Max()).ToArray(), Reductions.Amax(x, -1), 0, 0, "amax");
        var (mv, mi) = Reductions.Min(x, 2);
        AssertClose(rows.Select(r => r.Min()).ToArray(), mv, 0, 0, "min");
        Assert.Equal(rows.Select(r => (long)Array.IndexOf(r, r.Min())).ToArray(), mi.ToInt64Array());
        AssertClose([v.Sum()], Reductions.Sum(x), Tol.F32ReductionRel, Tol.F32Abs, "sum all");
        Assert.Equal(0, Reductions.Sum(x).Rank);
        Assert.Equal((long)Array.IndexOf(v, v.Max()), Reductions.ArgMax(x).ToInt64Array()[0]);

        var xb = x.To(DType.BFloat16);
        var rb = Rows(xb);
        AssertBf16(rb.Select(r => r.Sum()).ToArray(), Reductions.Sum(xb, -1), Tol.Bf16MaxUlp, "bf16 sum");
        AssertBf16(rb.Select(r => r.Average()).ToArray(), Reductions.Mean(xb, -1), Tol.Bf16MaxUlp, "bf16 mean");
        // strided input
        var xt = x.Transpose(0, 2);
        AssertClose(Rows(xt).Select(r => r.Sum()).ToArray(), Reductions.Sum(xt, -1), Tol.F32ReductionRel, Tol.F32Abs, "strided sum");
    }

    [Fact]
    public void Argmax_ties_take_first_and_nan_wins()
    {
        var t = Tensor.FromArray(new float[] { 1, 3, 3, 2, 5, 5, float.NaN, 5 }, 2, 4);
        Assert.Equal(new long[] { 1, 2 }, Reductions.ArgMax(t, -1).ToInt64Array());
        var (v, i) = Reductions.Max(t, 1, keepDim: true);
        Assert.Equal([2, 1], v.ShapeArray);
        Assert.Equal(new long[] { 1, 2 }, i.ToInt64Array());
        Assert.True(double.IsNaN(v.ToDoubleArray()[1]));
        Assert.Equal(new long[] { 0, 1, 0, 0 }, Reductions.ArgMax(Tensor.FromArray(new float[] { 2, 1, 2, 1, 2, 2, 1, 1 }, 2, 4), 0).ToInt64Array());
        Assert.Equal(new long[] { 7 }, Reductions.Sum(Tensor.FromArray(new long[] { 3, 4 }, 2), 0).ToInt64Array());
        Assert.Throws<IndexOutOfRangeException>(() => Reductions.Sum(t, 2));
        Assert.Equal(3.0, Reductions.Sum(Tensor.Scalar(3.0)).Item());
    }

    [Fact]
    public void Invariant_sum_follows_the_documented_order()
    {
        var rng = new SplitMix64(5);
        foreach (int n in new[] { 0, 1, 15, 16, 17, 33, 100, 1000 })
        {
            var x = Enumerable.Range(0, n).Select(_ => (float)rng.NextGaussian() * 1000).ToArray();
            var acc = new float[16];
            int blocks = n / 16;
            for (int b = 0; b < blocks; b++) for (int j = 0; j < 16; j++) acc[j] += x[b * 16 + j];
            var v = new float[4];
            for (int j = 0; j < 4; j++) v[j] = (acc[j] + acc[j + 8]) + (acc[j + 4] + acc[j + 12]);
            float s = (v[0] + v[2]) + (v[1] + v[3]);
            for (int i = blocks * 16; i < n; i++) s += x[i];
            Assert.Equal(BitConverter.SingleToInt32Bits(s), BitConverter.SingleToInt32Bits(Harness.Engine.Kernels.Reductions.SumInvariant(x)));
        }
    }
}

public class SoftmaxTests
{
    private static double[] RefSoftmax(double[] r) { var m = r.Max(); var e = r.Select(v => Math.Exp(v - m)).ToArray(); var s = e.Sum(); return e.Select(v => v / s).ToArray(); }
    private static double[] RefLogSoftmax(double[] r) { var m = r.Max(); var s = r.Sum(v => Math.Exp(v - m)); return r.Select(v => v - m - Math.Log(s)).ToArray(); }

    [Fact]
    public void Softmax_and_log_softmax_match_float64()
    {
        var x = Elementwise.Mul(Rand(DType.Float32, 41, 6, 300), 4.0);
        AssertClose(RowMap(x, RefSoftmax), Softmax.Forward(x, -1), Tol.F32ReductionRel, Tol.F32Abs, "softmax");
        AssertClose(RowMap(x, RefLogSoftmax), Softmax.LogSoftmax(x, 1), Tol.F32ReductionRel, 1e-5, "log_softmax");
        var xb = x.To(DType.BFloat16);
        AssertBf16(RowMap(xb, RefSoftmax), Softmax.Forward(xb), Tol.Bf16MaxUlp, "bf16 softmax");
        AssertBf16(RowMap(xb, RefLogSoftmax), Softmax.LogSoftmax(xb), Tol.Bf16MaxUlp, "bf16 log_softmax");
        // over dim 0 of a strided view
        var xt = x.Narrow(1, 0, 5);
        var got = Softmax.Forward(xt, 0);
        var expect = Softmax.Forward(xt.Transpose(0, 1).Contiguous(), -1).Transpose(0, 1);
        Assert.True(got.BitwiseEquals(expect.Contiguous()));
        var big = Tensor.FromArray(new float[] { 1000, 1000, -1000 }, 3);
        AssertClose([0.5, 0.5, 0], Softmax.Forward(big), 1e-7, 0, "max-subtracted");
    }
}

public class NormTests
{
    private static double[] RmsCore(double[] r, double eps) { var ms = r.Sum(v => v * v) / r.Length; return r.Select(v => v / Math.Sqrt(ms + eps)).ToArray(); }

    [Fact]
    public void Rms_norm_variants_match_hf_arithmetic()
    {
        const double eps = 1e-6;
        var x = Rand(DType.Float32, 51, 4, 3, 96);
        var w = Elementwise.Add(Elementwise.Mul(Rand(DType.Float32, 52, 96), 0.1), 1.0);
        var wv = w.ToDoubleArray();
        double[] Weighted(Tensor t, Func<double, int, double> f) => RowMap(t, r => RmsCore(r, eps).Select((v, i) => f(v, i)).ToArray());

        AssertClose(Weighted(x, (v, i) => v * wv[i]), Norms.RmsNorm(x, w, eps), Tol.F32ReductionRel, Tol.F32Abs, "llama f32");
        AssertClose(Weighted(x, (v, i) => v * (1 + wv[i])), Norms.RmsNorm(x, w, eps, RmsNormKind.GemmaOnePlusWeight), Tol.F32ReductionRel, Tol.F32Abs, "gemma3 f32");
        AssertClose(Weighted(x, (v, i) => v * wv[i]), Norms.RmsNorm(x, w, eps, RmsNormKind.GemmaScaled), Tol.F32ReductionRel, Tol.F32Abs, "gemma3n f32");
        AssertClose(Weighted(x, (v, _) => v), Norms.RmsNorm(x, null, eps, RmsNormKind.GemmaNoScale), Tol.F32ReductionRel, Tol.F32Abs, "noscale f32");

        var xb = x.To(DType.BFloat16);
        var wb = w.To(DType.BFloat16);
        var wbv = wb.ToDoubleArray();
        // Llama: normalized value rounded to bf16, then bf16 * bf16 weight rounded again
        var llamaRef = RowMap(xb, r => RmsCore(r, eps).Select((v, i) => BFloat16.Round((float)v) * wbv[i]).ToArray());
        AssertBf16(llamaRef, Norms.RmsNorm(xb, wb, eps), Tol.Bf16MaxUlp, "llama bf16");
        // Gemma3: float32 all the way, one rounding at the end
        AssertBf16(RowMap(xb, r => RmsCore(r, eps).Select((v, i) => v * (1 + wbv[i])).ToArray()),
            Norms.RmsNorm(xb, wb, eps, RmsNormKind.GemmaOnePlusWeight), Tol.Bf16MaxUlp, "gemma3 bf16");
        AssertBf16(RowMap(xb, r => RmsCore(r, eps).Select((v, i) => v * wbv[i]).ToArray()),
            Norms.RmsNorm(xb, wb, eps, RmsNormKind.GemmaScaled), Tol.Bf16MaxUlp, "gemma4 bf16");
        // Llama with float32 weight and bf16 input: torch promotes the output to float32
        var mixed = Norms.RmsNorm(xb, w, eps);
        Assert.Equal(DType.Float32, mixed.DType);
        Assert.Equal(DType.BFloat16, Norms.RmsNorm(xb, w, eps, RmsNormKind.GemmaScaled).DType);
        Assert.Throws<ArgumentException>(() => Norms.RmsNorm(x, Rand(DType.Float32, 1, 95), eps));
        // strided input
        var xs = x.Transpose(0, 1);
        AssertClose(RowMap(xs, r => RmsCore(r, eps).Select((v, i) => v * wv[i]).ToArray()), Norms.RmsNorm(xs, w, eps), Tol.F32ReductionRel, Tol.F32Abs, "strided");
    }

    [Fact]
    public void Layer_norm_with_and_without_affine()
    {
        const double eps = 1e-5;
        var x = Elementwise.Add(Rand(DType.Float32, 61, 5, 200), 3.0);
        var w = Rand(DType.Float32, 62, 200);
        var b = Rand(DType.Float32, 63, 200);
        var wv = w.ToDoubleArray(); var bv = b.ToDoubleArray();
        double[] Ln(double[] r) { var m = r.Average(); var var_ = r.Sum(v => (v - m) * (v - m)) / r.Length; return r.Select(v => (v - m) / Math.Sqrt(var_ + eps)).ToArray(); }
        AssertClose(RowMap(x, r => Ln(r).Select((v, i) => v * wv[i] + bv[i]).ToArray()), Norms.LayerNorm(x, w, b, eps), Tol.F32ReductionRel, 1e-6, "ln affine");
        AssertClose(RowMap(x, r => Ln(r).Select((v, i) => v * wv[i]).ToArray()), Norms.LayerNorm(x, w, null, eps), Tol.F32ReductionRel, 1e-6, "ln no bias");
        AssertClose(RowMap(x, Ln), Norms.LayerNorm(x, null, null, eps), Tol.F32ReductionRel, 1e-6, "ln plain");
        var xb = x.To(DType.BFloat16);
        AssertBf16(RowMap(xb, r => Ln(r).Select((v, i) => v * wv[i] + bv[i]).ToArray()), Norms.LayerNorm(xb, w, b, eps), Tol.Bf16MaxUlp, "ln bf16");
    }
}

public class BatchInvariantTests
{
    private static readonly (string Name, Func<Tensor, Tensor> Op)[] Ops =
    [
        ("softmax", t => Softmax.Forward(t)),
        ("log_softmax", t => Softmax.LogSoftmax(t)),
        ("rmsnorm", t => Norms.RmsNorm(t, Tensor.Full(t.DType, 1.25, t.Size(-1)), 1e-6)),
        ("layernorm", t => Norms.LayerNorm(t, Tensor.Full(t.DType, 0.75, t.Size(-1)), Tensor.Full(t.DType, 0.1, t.Size(-1)), 1e-5)),
        ("mean", t => Reductions.Mean(t, -1, keepDim: true)),
        ("sum", t => Reductions.Sum(t, -1, keepDim: true)),
    ];

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Every_row_equals_the_row_computed_alone(DType dt)
    {
        using var inv = ComputeSettings.UseBatchInvariant();
        using var threads = ComputeSettings.UseThreads(2);
        foreach (var (name, op) in Ops)
        {
            var difference = FirstBatchDependentRow(name, op, dt);
            Assert.True(difference is null, difference);
        }
    }

    [Fact]
    public void The_check_catches_an_op_whose_rows_depend_on_the_batch()
    {
        // A normalisation over the batch dim instead of the row (x - mean over rows): each row's bits depend on its
        // neighbours, the kind of bug the check above exists for.
        using var inv = ComputeSettings.UseBatchInvariant();
        var difference = FirstBatchDependentRow("mean over the batch", t => Elementwise.Sub(t, Reductions.Mean(t, 0, keepDim: true)), DType.Float32);
        Assert.NotNull(difference);
        Assert.Contains("differs from the row alone", difference);
    }

    /// <summary>The first row whose bits inside a batch differ from the row computed alone, or null.</summary>
    private static string? FirstBatchDependentRow(string name, Func<Tensor, Tensor> op, DType dt)
    {
        foreach (int n in new[] { 67, 1003 })
        {
            var batches = n == 67 ? Enumerable.Range(1, 64) : new[] { 1, 7, 33, 64 };
            foreach (int batch in batches)
            {
                var x = Tensor.Randn(dt, (ulong)(batch * 1000 + n), batch, n);
                var all = op(x);
                for (int p = 0; p < batch; p++)
                {
                    var alone = op(x.Narrow(0, p, 1).Contiguous());
                    if (!all.Narrow(0, p, 1).Contiguous().BitwiseEquals(alone))
                        return $"{name} {dt.TorchName()} n={n}: row {p} of a batch of {batch} differs from the row alone";
                }
            }
        }
        return null;
    }
}
