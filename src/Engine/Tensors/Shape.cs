using System.Text;

namespace Harness.Engine.Tensors;

/// <summary>Shape arithmetic shared by views, broadcasting and error messages.</summary>
public static class Shape
{
    /// <summary>Formats a shape as torch prints it in messages: [2, 3, 4].</summary>
    public static string Format(ReadOnlySpan<int> shape)
    {
        var sb = new StringBuilder("[");
        for (int i = 0; i < shape.Length; i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append(shape[i]);
        }
        return sb.Append(']').ToString();
    }

    /// <summary>Formats a matrix shape as torch's mm errors do: 32x64.</summary>
    public static string FormatX(ReadOnlySpan<int> shape)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < shape.Length; i++)
        {
            if (i > 0) sb.Append('x');
            sb.Append(shape[i]);
        }
        return sb.ToString();
    }

    public static long NumEl(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var s in shape) n *= s;
        return n;
    }

    public static int[] ContiguousStrides(ReadOnlySpan<int> shape)
    {
        var strides = new int[shape.Length];
        int acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            strides[i] = acc;
            acc *= Math.Max(shape[i], 1);
        }
        return strides;
    }

    /// <summary>Wraps a possibly negative dim; the error reads like torch's.</summary>
    public static int WrapDim(int dim, int rank)
    {
        int r = Math.Max(rank, 1);
        if (dim < -r || dim >= r)
            throw new IndexOutOfRangeException(
                $"Dimension out of range (expected to be in range of [{-r}, {r - 1}], but got {dim})");
        return dim < 0 ? dim + r : dim;
    }

    /// <summary>
    /// Resolves a requested shape with at most one -1 against an element count.
    /// Errors name the requested shape and the input's shape, as torch's view/reshape errors do.
    /// </summary>
    public static int[] Infer(ReadOnlySpan<int> requested, long numel, ReadOnlySpan<int> inputShape)
    {
        var result = requested.ToArray();
        int inferIdx = -1;
        long known = 1;
        for (int i = 0; i < result.Length; i++)
        {
            if (result[i] == -1)
            {
                if (inferIdx >= 0) throw new ArgumentException("only one dimension can be inferred");
                inferIdx = i;
            }
            else if (result[i] < 0)
            {
                throw new ArgumentException($"invalid shape dimension {result[i]} in {Format(requested)}");
            }
            else known *= result[i];
        }
        if (inferIdx >= 0)
        {
            if (known == 0 || numel % known != 0)
                throw new ArgumentException(
                    $"shape '{Format(requested)}' is invalid for input of size {numel} (input shape {Format(inputShape)})");
            result[inferIdx] = (int)(numel / known);
        }
        else if (known != numel)
        {
            throw new ArgumentException(
                $"shape '{Format(requested)}' is invalid for input of size {numel} (input shape {Format(inputShape)})");
        }
        return result;
    }

    /// <summary>
    /// torch's broadcasting rule: align from the right; sizes must match or be 1.
    /// The error is torch's: "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 0".
    /// </summary>
    public static int[] Broadcast(ReadOnlySpan<int> a, ReadOnlySpan<int> b)
    {
        int rank = Math.Max(a.Length, b.Length);
        var result = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            int ai = a.Length - rank + i, bi = b.Length - rank + i;
            int sa = ai >= 0 ? a[ai] : 1, sb = bi >= 0 ? b[bi] : 1;
            if (sa != sb && sa != 1 && sb != 1)
                throw new ArgumentException(
                    $"The size of tensor a ({sa}) must match the size of tensor b ({sb}) at non-singleton dimension {i}");
            result[i] = sa == 1 ? sb : sa;
        }
        return result;
    }

    public static bool SequenceEqual(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);
}
