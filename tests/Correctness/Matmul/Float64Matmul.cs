using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.MatmulSemantics;

/// <summary>
/// torch.matmul written out plainly in float64, independent of the engine: promote 1D operands, broadcast the batch
/// dims by hand, triple loop. Returns the expected shape, the values, and for each output element the sum of
/// |a_ik * b_kj| (the scale of its rounding error bound).
/// </summary>
public static class Float64Matmul
{
    public sealed record Result(int[] Shape, double[] Values, double[] AbsSums);

    public static Result Compute(Tensor a, Tensor b)
    {
        double[] av = a.ToDoubleArray(), bv = b.ToDoubleArray();
        int[] sa = a.ShapeArray, sb = b.ShapeArray;
        bool dropRow = sa.Length == 1, dropCol = sb.Length == 1;
        if (dropRow) sa = [1, sa[0]];
        if (dropCol) sb = [sb[0], 1];
        int m = sa[^2], k = sa[^1], n = sb[^1];
        if (sb[^2] != k) throw new ArgumentException($"reference: inner dims differ ({k} vs {sb[^2]})");

        int rank = Math.Max(sa.Length, sb.Length) - 2;
        var batch = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            int da = i - (rank - (sa.Length - 2)), db = i - (rank - (sb.Length - 2));
            int x = da >= 0 ? sa[da] : 1, y = db >= 0 ? sb[db] : 1;
            if (x != y && x != 1 && y != 1) throw new ArgumentException("reference: batch dims do not broadcast");
            batch[i] = Math.Max(x, y);
        }
        int batchCount = batch.Aggregate(1, (p, s) => p * s);
        var values = new double[batchCount * m * n];
        var absSums = new double[values.Length];
        var idx = new int[rank];
        for (int bi = 0; bi < batchCount; bi++)
        {
            int rem = bi;
            for (int d = rank - 1; d >= 0; d--) { idx[d] = rem % batch[d]; rem /= batch[d]; }
            int offA = BatchOffset(sa, idx, rank) * m * k, offB = BatchOffset(sb, idx, rank) * k * n;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double acc = 0, abs = 0;
                    for (int p = 0; p < k; p++)
                    {
                        double prod = av[offA + i * k + p] * bv[offB + p * n + j];
                        acc += prod;
                        abs += Math.Abs(prod);
                    }
                    values[(bi * m + i) * n + j] = acc;
                    absSums[(bi * m + i) * n + j] = abs;
                }
        }
        var shape = new List<int>(batch);
        if (!dropRow) shape.Add(m);
        if (!dropCol) shape.Add(n);
        return new Result(shape.ToArray(), values, absSums);
    }

    // Row-major index of the operand's own batch entry for a broadcast batch index (size-1 dims repeat).
    private static int BatchOffset(int[] operandShape, int[] index, int rank)
    {
        int own = operandShape.Length - 2, flat = 0;
        for (int d = 0; d < own; d++)
        {
            int size = operandShape[d];
            int i = index[rank - own + d];
            flat = flat * size + (size == 1 ? 0 : i);
        }
        return flat;
    }
}
