using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>How a dimension splits over tensor-parallel ranks: even chunks, the size must divide.</summary>
public static class Sharding
{
    /// <summary>Rank r's range [r*n/tp, (r+1)*n/tp) of a dimension of size n.</summary>
    public static (int Start, int Length) Range(int size, int rank, int worldSize, string what)
    {
        if (size % worldSize != 0)
            throw new ArgumentException($"{what}: size {size} is not divisible by the tensor-parallel size {worldSize}");
        int len = size / worldSize;
        return (rank * len, len);
    }

    /// <summary>Rank r's shard of a weight along dim (a view of the full tensor, no copy).</summary>
    public static Tensor Shard(Tensor full, int dim, int rank, int worldSize, string name)
    {
        var (start, len) = Range(full.Size(dim), rank, worldSize, $"{name} {Shape.Format(full.Shape)} dim {dim}");
        return full.Narrow(dim, start, len);
    }

    /// <summary>n rounded up to a multiple of m.</summary>
    public static int RoundUp(int n, int m) => (n + m - 1) / m * m;
}
