using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Tensors;

/// <summary>
/// Seeded property tests: random shapes and random chains of views, each checked against a plain model
/// (a row-major double array plus its shape) that applies the same operation by explicit index arithmetic.
/// </summary>
public class ViewPropertyTests
{
    private sealed record Model(int[] Shape, double[] Values)
    {
        public int Rank => Shape.Length;

        public double At(int[] index)
        {
            int flat = 0;
            for (int d = 0; d < Rank; d++) flat = flat * Shape[d] + index[d];
            return Values[flat];
        }

        public static Model Build(int[] shape, Func<int[], double> valueAt)
        {
            int n = shape.Aggregate(1, (p, s) => p * s);
            var values = new double[n];
            var idx = new int[shape.Length];
            for (int i = 0; i < n; i++)
            {
                int rem = i;
                for (int d = shape.Length - 1; d >= 0; d--) { idx[d] = rem % shape[d]; rem /= shape[d]; }
                values[i] = valueAt(idx);
            }
            return new Model(shape, values);
        }
    }

    [Theory]
    [InlineData(1ul)]
    [InlineData(2ul)]
    [InlineData(3ul)]
    [InlineData(4ul)]
    [InlineData(5ul)]
    public void Random_view_chains_match_the_index_model(ulong seed)
    {
        var rng = new SplitMix64(seed);
        for (int trial = 0; trial < 60; trial++)
        {
            int rank = 1 + rng.NextInt(4);
            var shape = Enumerable.Range(0, rank).Select(_ => 1 + rng.NextInt(5)).ToArray();
            var tensor = Tensor.Arange((int)Shape.NumEl(shape), DType.Float32).Reshape(shape);
            var model = Model.Build(shape, idx => { int f = 0; for (int d = 0; d < idx.Length; d++) f = f * shape[d] + idx[d]; return f; });
            var log = new List<string> { $"start {Shape.Format(shape)}" };
            for (int step = 0; step < 6; step++)
            {
                (tensor, model, var what) = RandomStep(rng, tensor, model);
                log.Add(what);
                Assert.True(model.Shape.SequenceEqual(tensor.ShapeArray), $"{string.Join(" -> ", log)}: shape {Shape.Format(tensor.Shape)} vs model {Shape.Format(model.Shape)}");
                Assert.True(model.Values.SequenceEqual(tensor.ToDoubleArray()), $"{string.Join(" -> ", log)}: values differ");
            }
            // a copy is contiguous and equal; a reshape of the view equals the model's reshape
            var copy = tensor.Contiguous();
            Assert.True(copy.IsContiguous);
            Assert.Equal(model.Values, copy.ToDoubleArray());
            Assert.Equal(model.Values, tensor.Reshape(-1).ToDoubleArray());
        }
    }

    private static (Tensor, Model, string) RandomStep(SplitMix64 rng, Tensor t, Model m)
    {
        int rank = m.Rank;
        switch (rng.NextInt(7))
        {
            case 0 when rank >= 2:
            {
                int a = rng.NextInt(rank), b = rng.NextInt(rank);
                var shape = (int[])m.Shape.Clone();
                (shape[a], shape[b]) = (shape[b], shape[a]);
                return (t.Transpose(a, b), Model.Build(shape, idx => { var s = (int[])idx.Clone(); (s[a], s[b]) = (s[b], s[a]); return m.At(s); }), $"transpose({a},{b})");
            }
            case 1:
            {
                var perm = Enumerable.Range(0, rank).OrderBy(_ => rng.Next()).ToArray();
                var shape = perm.Select(p => m.Shape[p]).ToArray();
                return (t.Permute(perm), Model.Build(shape, idx => { var s = new int[rank]; for (int i = 0; i < rank; i++) s[perm[i]] = idx[i]; return m.At(s); }), $"permute({string.Join(",", perm)})");
            }
            case 2:
            {
                int d = rng.NextInt(rank);
                int start = rng.NextInt(m.Shape[d]);
                int len = 1 + rng.NextInt(m.Shape[d] - start);
                var shape = (int[])m.Shape.Clone();
                shape[d] = len;
                return (t.Narrow(d, start, len), Model.Build(shape, idx => { var s = (int[])idx.Clone(); s[d] += start; return m.At(s); }), $"narrow({d},{start},{len})");
            }
            case 3 when rank < 5:
            {
                int d = rng.NextInt(rank + 1);
                var shape = m.Shape.ToList();
                shape.Insert(d, 1);
                return (t.Unsqueeze(d), Model.Build(shape.ToArray(), idx => m.At(idx.Where((_, i) => i != d).ToArray())), $"unsqueeze({d})");
            }
            case 4:
            {
                // expand every size-1 dim to a random size, and maybe add a leading dim
                var target = m.Shape.Select(s => s == 1 ? 1 + rng.NextInt(3) : s).ToList();
                bool lead = rank < 5 && rng.NextInt(2) == 0;
                if (lead) target.Insert(0, 2);
                var shape = target.ToArray();
                return (t.Expand(shape), Model.Build(shape, idx =>
                {
                    var own = lead ? idx[1..] : idx;
                    return m.At(own.Select((v, i) => m.Shape[i] == 1 ? 0 : v).ToArray());
                }), $"expand({Shape.Format(shape)})");
            }
            case 5:
            {
                // reshape to a random factorisation (a view when possible, else a copy)
                int n = m.Values.Length;
                var divisors = Enumerable.Range(1, n).Where(x => n % x == 0).ToArray();
                int first = divisors[rng.NextInt(divisors.Length)];
                var shape = new[] { first, n / first };
                return (rng.NextInt(2) == 0 ? t.Reshape(first, -1) : t.Reshape(shape), new Model(shape, m.Values), $"reshape({first},{n / first})");
            }
            default:
            {
                int d = rng.NextInt(rank);
                int step = 1 + rng.NextInt(2);
                var shape = (int[])m.Shape.Clone();
                shape[d] = (m.Shape[d] + step - 1) / step;
                return (t.Slice(d, 0, null, step), Model.Build(shape, idx => { var s = (int[])idx.Clone(); s[d] *= step; return m.At(s); }), $"slice({d},::{step})");
            }
        }
    }

    [Theory]
    [InlineData(11ul)]
    [InlineData(12ul)]
    [InlineData(13ul)]
    public void Broadcast_shape_follows_torch_rules(ulong seed)
    {
        var rng = new SplitMix64(seed);
        for (int trial = 0; trial < 200; trial++)
        {
            int ra = rng.NextInt(5), rb = rng.NextInt(5);
            var a = Enumerable.Range(0, ra).Select(_ => 1 + rng.NextInt(3)).ToArray();
            var b = Enumerable.Range(0, rb).Select(_ => 1 + rng.NextInt(3)).ToArray();
            bool compatible = true;
            var expected = new int[Math.Max(ra, rb)];
            for (int i = 0; i < expected.Length; i++)
            {
                int x = i - (expected.Length - ra) >= 0 ? a[i - (expected.Length - ra)] : 1;
                int y = i - (expected.Length - rb) >= 0 ? b[i - (expected.Length - rb)] : 1;
                if (x != y && x != 1 && y != 1) compatible = false;
                expected[i] = Math.Max(x, y);
            }
            if (compatible)
            {
                Assert.Equal(expected, Shape.Broadcast(a, b));
                var t = Tensor.Zeros(DType.Float32, a).Expand(expected);
                Assert.Equal(expected, t.ShapeArray);
            }
            else
            {
                var ex = Assert.Throws<ArgumentException>(() => Shape.Broadcast(a, b));
                Assert.Contains("must match the size of tensor b", ex.Message);
            }
        }
    }

    [Theory]
    [InlineData(21ul, DType.BFloat16)]
    [InlineData(22ul, DType.Float16)]
    [InlineData(23ul, DType.Int64)]
    [InlineData(24ul, DType.Int32)]
    public void Dtype_round_trips_through_float32_are_exact_for_representable_values(ulong seed, DType dtype)
    {
        // values first rounded to the narrow type are representable in float32, so narrow -> f32 -> narrow is the identity
        var narrow = Tensor.Normal(dtype, seed, 0, 100, 7, 33);
        var back = narrow.To(DType.Float32).To(dtype);
        Assert.True(narrow.BitwiseEquals(back), $"{dtype.TorchName()} -> float32 -> {dtype.TorchName()} changed bits");
        var strided = narrow.Transpose(0, 1).To(DType.Float32);
        Assert.Equal(narrow.Transpose(0, 1).ToDoubleArray(), strided.ToDoubleArray());
    }
}
