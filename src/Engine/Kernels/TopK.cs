namespace Harness.Engine.Kernels;

/// <summary>
/// Top-k of one row: values sorted descending, ties by lower index first, NaN ranked above every number (torch's order).
/// A sorted buffer of k with insertion: O(n) compares while the buffer's last entry rejects most elements.
/// </summary>
public static class TopK
{
    public static bool Greater(float a, float b) => float.IsNaN(a) ? !float.IsNaN(b) : !float.IsNaN(b) && a > b;

    public static void Row(ReadOnlySpan<float> x, int k, Span<float> values, Span<long> indices)
    {
        if (k == 0) return;
        int count = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float v = x[i];
            if (count == k && !Greater(v, values[k - 1])) continue;
            int p = count < k ? count : k - 1;
            // find insertion point: after every kept element not smaller than v (stable: earlier index first)
            while (p > 0 && Greater(v, values[p - 1])) p--;
            int last = Math.Min(count, k - 1);
            for (int j = last; j > p; j--) { values[j] = values[j - 1]; indices[j] = indices[j - 1]; }
            values[p] = v;
            indices[p] = i;
            if (count < k) count++;
        }
    }
}
