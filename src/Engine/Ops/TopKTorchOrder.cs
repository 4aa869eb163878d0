using Harness.Engine.Tensors;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// torch.topk(x, k, largest=True, sorted=True) on CPU with torch's own order among EQUAL values, which torch leaves
/// unspecified and which <see cref="TopK"/> fixes as lower index first. torch's CPU kernel (ATen topk_impl_loop) puts
/// (value, index) pairs in index order and, with comp(a, b) = (isnan(a) &amp;&amp; !isnan(b)) || a &gt; b on the float values,
/// calls <c>std::partial_sort(q, q + k, q + n, comp)</c> when k * 64 &lt;= n, else <c>std::nth_element(q, q + k - 1, q + n, comp)</c>
/// and <c>std::sort(q, q + k - 1, comp)</c> (the first k - 1 only). This replays libstdc++'s algorithms step for step, so
/// ties come out as torch's do. It matters where ties are common: Gemma4's router takes the top-k of bf16 probabilities,
/// where two experts often get the same bf16 value (measured: 0.125 and 0.125, torch picks the higher index there).
/// </summary>
public static class TopKTorchOrder
{
    /// <summary>The k largest along the last dim (values in x's dtype, int64 indices), ties ordered as torch's CPU topk.</summary>
    public static (Tensor Values, Tensor Indices) Forward(Tensor x, int k)
    {
        OpSupport.RequireFloat(x, "topk");
        var src = OpSupport.As1D(x);
        int n = src.Size(-1);
        if (k < 0 || k > n)
            throw new ArgumentOutOfRangeException(nameof(k), $"topk: selected index k={k} out of range for last dim of size {n} (shape {Shape.Format(x.Shape)})");
        var (values, indices) = OpBackend.Of(x).TopKTorchOrder(src, k, x.DType);   // a GPU: torch's CUDA order (ties: lower index first)
        return x.Rank == 0 ? (values.Reshape(), indices.Reshape()) : (values, indices);
    }

    /// <summary>The host's: torch's CPU order among equal values (<see cref="Row"/>), src [.., n] of rank >= 1.</summary>
    internal static (Tensor Values, Tensor Indices) OnHost(Tensor src, int k, DType dtype)
    {
        int n = src.Size(-1);
        var f = OpSupport.Float32Contiguous(src).Span<float>().ToArray();
        var shape = src.ShapeArray;
        shape[^1] = k;
        var values = Tensor.Zeros(DType.Float32, shape);
        var indices = Tensor.Zeros(DType.Int64, shape);
        var vs = values.Span<float>();
        var ids = indices.Span<long>();
        int rows = n == 0 ? 0 : f.Length / n;
        var q = new (float V, long I)[n];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++) q[j] = (f[r * n + j], j);
            Row(q, k);
            for (int j = 0; j < k; j++) { vs[r * k + j] = q[j].V; ids[r * k + j] = q[j].I; }
        }
        return (OpSupport.FromFloat32(values, dtype), indices);
    }

    /// <summary>Rearranges q as torch's topk_impl_loop (largest, sorted) leaves it: the first k are the result.</summary>
    public static void Row((float V, long I)[] q, int k)
    {
        int n = q.Length;
        if (k == 0 || n == 0) return;
        if ((long)k * 64 <= n) PartialSort(q, 0, k, n);
        else
        {
            NthElement(q, 0, k - 1, n);
            Sort(q, 0, k - 1);
        }
    }

    private static bool Comp((float V, long I) a, (float V, long I) b) => (float.IsNaN(a.V) && !float.IsNaN(b.V)) || a.V > b.V;

    private static void Swap((float V, long I)[] q, int a, int b) => (q[a], q[b]) = (q[b], q[a]);

    private static int Lg(int n) => 31 - System.Numerics.BitOperations.LeadingZeroCount((uint)n);

    // std::nth_element -> __introselect(first, nth, last, __lg(last - first) * 2)
    private static void NthElement((float V, long I)[] q, int first, int nth, int last)
    {
        if (first == last || nth == last) return;
        int depth = Lg(last - first) * 2;
        while (last - first > 3)
        {
            if (depth == 0)
            {
                HeapSelect(q, first, nth + 1, last);
                Swap(q, first, nth);
                return;
            }
            --depth;
            int cut = UnguardedPartitionPivot(q, first, last);
            if (cut <= nth) first = cut;
            else last = cut;
        }
        InsertionSort(q, first, last);
    }

    // std::sort -> __introsort_loop(first, last, __lg(n) * 2) then __final_insertion_sort
    private static void Sort((float V, long I)[] q, int first, int last)
    {
        if (first == last) return;
        IntrosortLoop(q, first, last, Lg(last - first) * 2);
        if (last - first > 16)
        {
            InsertionSort(q, first, first + 16);
            for (int i = first + 16; i != last; i++) UnguardedLinearInsert(q, i);
        }
        else InsertionSort(q, first, last);
    }

    private static void IntrosortLoop((float V, long I)[] q, int first, int last, int depth)
    {
        while (last - first > 16)
        {
            if (depth == 0)
            {
                PartialSort(q, first, last, last);
                return;
            }
            --depth;
            int cut = UnguardedPartitionPivot(q, first, last);
            IntrosortLoop(q, cut, last, depth);
            last = cut;
        }
    }

    // std::partial_sort -> __heap_select(first, middle, last) then __sort_heap(first, middle)
    private static void PartialSort((float V, long I)[] q, int first, int middle, int last)
    {
        HeapSelect(q, first, middle, last);
        SortHeap(q, first, middle);
    }

    private static int UnguardedPartitionPivot((float V, long I)[] q, int first, int last)
    {
        int mid = first + (last - first) / 2;
        MoveMedianToFirst(q, first, first + 1, mid, last - 1);
        return UnguardedPartition(q, first + 1, last, first);
    }

    private static void MoveMedianToFirst((float V, long I)[] q, int result, int a, int b, int c)
    {
        if (Comp(q[a], q[b]))
        {
            if (Comp(q[b], q[c])) Swap(q, result, b);
            else if (Comp(q[a], q[c])) Swap(q, result, c);
            else Swap(q, result, a);
        }
        else if (Comp(q[a], q[c])) Swap(q, result, a);
        else if (Comp(q[b], q[c])) Swap(q, result, c);
        else Swap(q, result, b);
    }

    private static int UnguardedPartition((float V, long I)[] q, int first, int last, int pivot)
    {
        while (true)
        {
            while (Comp(q[first], q[pivot])) ++first;
            --last;
            while (Comp(q[pivot], q[last])) --last;
            if (!(first < last)) return first;
            Swap(q, first, last);
            ++first;
        }
    }

    private static void InsertionSort((float V, long I)[] q, int first, int last)
    {
        if (first == last) return;
        for (int i = first + 1; i != last; ++i)
        {
            if (Comp(q[i], q[first]))
            {
                var val = q[i];
                Array.Copy(q, first, q, first + 1, i - first);                 // move_backward(first, i, i + 1)
                q[first] = val;
            }
            else UnguardedLinearInsert(q, i);
        }
    }

    private static void UnguardedLinearInsert((float V, long I)[] q, int last)
    {
        var val = q[last];
        int next = last - 1;
        while (Comp(val, q[next])) { q[last] = q[next]; last = next; --next; }
        q[last] = val;
    }

    // libstdc++ heap ops on [first, first + len) with comp (a max-heap under comp: the "largest" under comp at the top)
    private static void HeapSelect((float V, long I)[] q, int first, int middle, int last)
    {
        MakeHeap(q, first, middle);
        for (int i = middle; i < last; ++i)
            if (Comp(q[i], q[first])) PopHeap(q, first, middle, i);
    }

    private static void MakeHeap((float V, long I)[] q, int first, int last)
    {
        int len = last - first;
        if (len < 2) return;
        int parent = (len - 2) / 2;
        while (true)
        {
            var value = q[first + parent];
            AdjustHeap(q, first, parent, len, value);
            if (parent == 0) return;
            parent--;
        }
    }

    // __pop_heap(first, last, result): value = *result; *result = *first; __adjust_heap(first, 0, last - first, value)
    private static void PopHeap((float V, long I)[] q, int first, int last, int result)
    {
        var value = q[result];
        q[result] = q[first];
        AdjustHeap(q, first, 0, last - first, value);
    }

    private static void SortHeap((float V, long I)[] q, int first, int last)
    {
        while (last - first > 1)
        {
            --last;
            PopHeap(q, first, last, last);
        }
    }

    private static void AdjustHeap((float V, long I)[] q, int first, int hole, int len, (float V, long I) value)
    {
        int top = hole, child = hole;
        while (child < (len - 1) / 2)
        {
            child = 2 * (child + 1);
            if (Comp(q[first + child], q[first + child - 1])) child--;
            q[first + hole] = q[first + child];
            hole = child;
        }
        if ((len & 1) == 0 && child == (len - 2) / 2)
        {
            child = 2 * (child + 1);
            q[first + hole] = q[first + child - 1];
            hole = child - 1;
        }
        // __push_heap(first, hole, top, value)
        int parent = (hole - 1) / 2;
        while (hole > top && Comp(q[first + parent], value))
        {
            q[first + hole] = q[first + parent];
            hole = parent;
            parent = (hole - 1) / 2;
        }
        q[first + hole] = value;
    }
}

internal sealed partial class HostOps
{
    public (Tensor Values, Tensor Indices) TopKTorchOrder(Tensor src, int k, DType dtype) => Ops.TopKTorchOrder.OnHost(src, k, dtype);
}
