using Harness.Engine.Tensors;
using R = Harness.Engine.Ops.Rotary;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>One image's or video's patch grid: temporal, height and width in patches (image_grid_thw / video_grid_thw rows).</summary>
public readonly record struct GridThw(int T, int H, int W)
{
    public int Patches => T * H * W;
    /// <summary>Tokens after the patch merger: T * (H/m) * (W/m).</summary>
    public int MergedTokens(int merge) => T * (H / merge) * (W / merge);
    public override string ToString() => $"({T}, {H}, {W})";
}

/// <summary>
/// Qwen2-VL's positions: the decoder's 3 position streams (temporal, height, width) as Qwen2VLModel.get_rope_index
/// computes them, the multimodal rotary cos/sin (apply_multimodal_rotary_pos_emb's section interleave), and the vision
/// tower's 2D rotary (get_vision_position_ids + VisionRotaryEmbedding).
/// </summary>
public static class Qwen2VlRope
{
    /// <summary>mm_token_type_ids as the processor writes them: 1 at image tokens, 2 at video tokens, 0 elsewhere.</summary>
    public static int[] TokenTypes(IReadOnlyList<long> ids, Qwen2VlConfig config) =>
        ids.Select(id => id == config.ImageTokenId ? 1 : id == config.VideoTokenId ? 2 : 0).ToArray();

    /// <summary>
    /// get_rope_index for one sequence: runs of equal token type; a text run gets arange + current_pos on all 3 streams;
    /// a vision run takes the next grid of its modality and gets get_vision_position_ids(current_pos, grid, 1, m):
    /// t = arange(T) repeat_interleave(h*w) + start, h = (arange(H/m) + start) repeat_interleave(W/m), tiled T times,
    /// w = (arange(W/m) + start) tiled (H/m)*T times; then current_pos += max(H, W) / m (T ignored).
    /// rope_delta = max(positions) + 1 - tokens, added to the cache position at decode steps.
    /// </summary>
    /// <returns>positions [3][tokens] and the delta.</returns>
    public static (long[][] Positions, long Delta) RopeIndex(IReadOnlyList<long> ids, Qwen2VlConfig config,
        IReadOnlyList<GridThw> imageGrids, IReadOnlyList<GridThw> videoGrids)
    {
        int n = ids.Count, m = config.SpatialMergeSize;
        var types = TokenTypes(ids, config);
        var pos = new[] { new long[n], new long[n], new long[n] };
        int nextImage = 0, nextVideo = 0;
        long current = 0;
        for (int start = 0; start < n;)
        {
            int end = start;
            while (end < n && types[end] == types[start]) end++;
            if (types[start] == 0)
            {
                for (int i = start; i < end; i++)
                    for (int s = 0; s < 3; s++) pos[s][i] = current + (i - start);
                current += end - start;
            }
            else
            {
                bool image = types[start] == 1;
                var grids = image ? imageGrids : videoGrids;
                int index = image ? nextImage++ : nextVideo++;
                string what = image ? "image" : "video";
                if (index >= grids.Count)
                    throw new ArgumentException($"the prompt has more {what} runs than {what}_grid_thw rows ({grids.Count})");
                var g = grids[index];
                int h = g.H / m, w = g.W / m;
                if (end - start != g.T * h * w)
                    throw new ArgumentException(
                        $"{what} {index} has {end - start} placeholder tokens at {start}..{end - 1}, but its grid {g} merges to {g.T * h * w}");
                int i = start;
                for (int t = 0; t < g.T; t++)
                    for (int y = 0; y < h; y++)
                        for (int x = 0; x < w; x++, i++)
                        {
                            pos[0][i] = t + current;
                            pos[1][i] = y + current;
                            pos[2][i] = x + current;
                        }
                current += Math.Max(g.H, g.W) / m;
            }
            start = end;
        }
        long max = n == 0 ? -1 : pos.Max(p => p.Max());
        return (pos, max + 1 - n);
    }

    /// <summary>Text-only positions: arange(start, start + count) on all 3 streams (rope_deltas 0).</summary>
    public static long[][] Sequential(long start, int count)
    {
        var p = Enumerable.Range(0, count).Select(i => start + i).ToArray();
        return [p, (long[])p.Clone(), (long[])p.Clone()];
    }

    /// <summary>
    /// Qwen2VLRotaryEmbedding + apply_multimodal_rotary_pos_emb's cos/sin: per stream s, cos_s = cos(cat(f, f)) with
    /// f = inv_freq * pos_s in float32 (as LlamaRotaryEmbedding); then
    /// <c>torch.cat([m[i % 3] for i, m in enumerate(cos.split(mrope_section * 2, dim=-1))], dim=-1)</c>: column block i
    /// of the doubled section list comes from stream i % 3. Cast to dtype (the selection commutes with the cast).
    /// </summary>
    /// <returns>cos, sin [1, tokens, head_dim] in dtype, ready for the plain rotate_half RoPE.</returns>
    public static (Tensor Cos, Tensor Sin) MultimodalCosSin(Tensor invFreq, long[][] positions, int[] mropeSection, DType dtype)
    {
        int n = positions[0].Length;
        var ids = Tensor.FromArray(positions.SelectMany(p => p).ToArray(), 3, n);
        var (cos3, sin3) = R.CosSin(invFreq, ids, DType.Float32);             // [3, n, hd] float32
        int hd = cos3.Size(-1);
        var streamOf = new int[hd];
        int col = 0;
        for (int i = 0; i < 2 * mropeSection.Length; i++)
            for (int j = 0; j < mropeSection[i % 3]; j++) streamOf[col++] = i % 3;
        if (col != hd) throw new ArgumentException($"mrope_section * 2 covers {col} columns, head_dim is {hd}");
        var cos = Tensor.Zeros(DType.Float32, 1, n, hd);
        var sin = Tensor.Zeros(DType.Float32, 1, n, hd);
        var c3 = cos3.Span<float>(); var s3 = sin3.Span<float>();
        var c = cos.Span<float>(); var s = sin.Span<float>();
        for (int t = 0; t < n; t++)
            for (int d = 0; d < hd; d++)
            {
                c[t * hd + d] = c3[(streamOf[d] * n + t) * hd + d];
                s[t * hd + d] = s3[(streamOf[d] * n + t) * hd + d];
            }
        return (cos.To(dtype), sin.To(dtype));
    }

    /// <summary>
    /// vision_utils.get_vision_position_ids: (row, col) of every patch in the order the processor lays patches out:
    /// m x m merge blocks row-major, patches row-major inside a block, the whole frame repeated T times.
    /// </summary>
    public static (int[] Rows, int[] Cols) VisionPositions(IReadOnlyList<GridThw> grids, int merge)
    {
        var rows = new List<int>();
        var cols = new List<int>();
        foreach (var g in grids)
            for (int t = 0; t < g.T; t++)
                for (int by = 0; by < g.H / merge; by++)
                    for (int bx = 0; bx < g.W / merge; bx++)
                        for (int y = 0; y < merge; y++)
                            for (int x = 0; x < merge; x++)
                            {
                                rows.Add(by * merge + y);
                                cols.Add(bx * merge + x);
                            }
        return (rows.ToArray(), cols.ToArray());
    }

    /// <summary>
    /// The vision tower's rotary: VisionRotaryEmbedding(head_dim/2) with theta 1e4 has head_dim/4 frequencies;
    /// rot = (position_ids[..., None] * inv_freq).flatten(1) = [row freqs | col freqs] (head_dim/2), emb = cat(rot, rot),
    /// cos = emb.cos(), sin = emb.sin(), all float32. So the head's layout is [h | w | h | w].
    /// </summary>
    /// <returns>cos, sin [patches, head_dim] float32.</returns>
    public static (Tensor Cos, Tensor Sin) VisionCosSin(int[] rows, int[] cols, int headDim)
    {
        var inv = R.InvFreq(10000.0, headDim / 2).ToFloatArray();             // head_dim/4 frequencies
        int q = inv.Length, n = rows.Length;
        var cos = Tensor.Zeros(DType.Float32, n, headDim);
        var sin = Tensor.Zeros(DType.Float32, n, headDim);
        var c = cos.Span<float>(); var s = sin.Span<float>();
        for (int p = 0; p < n; p++)
            for (int j = 0; j < 2 * q; j++)
            {
                float f = j < q ? inv[j] * rows[p] : inv[j - q] * cols[p];
                float cv = (float)Math.Cos(f), sv = (float)Math.Sin(f);
                c[p * headDim + j] = cv; c[p * headDim + 2 * q + j] = cv;
                s[p * headDim + j] = sv; s[p * headDim + 2 * q + j] = sv;
            }
        return (cos, sin);
    }

    /// <summary>get_vision_cu_seqlens as segments: one (start, length) per temporal frame, H*W patches each.</summary>
    public static IReadOnlyList<(int Start, int Length)> FrameSegments(IReadOnlyList<GridThw> grids)
    {
        var list = new List<(int, int)>();
        int at = 0;
        foreach (var g in grids)
            for (int t = 0; t < g.T; t++) { list.Add((at, g.H * g.W)); at += g.H * g.W; }
        return list;
    }
}
