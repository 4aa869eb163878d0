using Harness.Engine.Cuda;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Bench;

/// <summary>
/// `harness check-gpu model-ops`: the device paths the Gemma3n, Gemma4 and Qwen2-VL forwards add to Llama's
/// (<see cref="CudaOps"/>, the new element-wise ops, RoPE on any layout), each against the CPU engine on the same
/// inputs, fp32 and bf16; and an op without a device path names itself and "no CUDA path".
/// </summary>
public static class GpuModelOpsCheck
{
    private static Tensor Rand(DType dt, params int[] shape) => Tensor.Normal(DType.Float32, 7, 0, 1, shape).To(dt);

    private static string? Close(string what, Tensor got, Tensor want, double tol)
    {
        got = got.ToHost();
        if (!Shape.SequenceEqual(got.Shape, want.Shape)) return $"{what}: shape {Shape.Format(got.Shape)} != {Shape.Format(want.Shape)}";
        if (got.DType != want.DType) return $"{what}: dtype {got.DType.TorchName()} != {want.DType.TorchName()}";
        var g = got.ToDoubleArray();
        var w = want.ToDoubleArray();
        double num = 0, den = 0;
        for (int i = 0; i < g.Length; i++)
        {
            if (double.IsNaN(g[i]) != double.IsNaN(w[i]) || (double.IsInfinity(w[i]) && g[i] != w[i])) return $"{what}: element {i} is {g[i]} vs {w[i]}";
            if (double.IsNaN(w[i]) || double.IsInfinity(w[i])) continue;
            num += (g[i] - w[i]) * (g[i] - w[i]);
            den += w[i] * w[i];
        }
        double e = den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
        return e <= tol ? null : $"{what}: relative error {e:E3} > {tol:E1}";
    }

    public static string? Run(CudaDevice d)
    {
        foreach (var (dt, tol) in new[] { (DType.Float32, 2e-6), (DType.BFloat16, 4e-3) })
        {
            string n = dt.TorchName();
            var x = Rand(dt, 6, 5, 40);
            var xd = x.ToDevice(d);
            var pos = Elementwise.Add(Elementwise.Abs(x), 0.5);
            var checks = new List<(string, Func<Tensor>, Func<Tensor>)>
            {
                ("abs", () => Elementwise.Abs(xd), () => Elementwise.Abs(x)),
                ("log", () => Elementwise.Log(pos.ToDevice(d)), () => Elementwise.Log(pos)),
                ("sqrt", () => Elementwise.Sqrt(pos.ToDevice(d)), () => Elementwise.Sqrt(pos)),
                ("rsqrt", () => Elementwise.Rsqrt(pos.ToDevice(d)), () => Elementwise.Rsqrt(pos)),
                ("tanh", () => Elementwise.Tanh(xd), () => Elementwise.Tanh(x)),
                ("sigmoid", () => Elementwise.Sigmoid(xd), () => Elementwise.Sigmoid(x)),
                ("square", () => Elementwise.Square(xd), () => Elementwise.Square(x)),
                ("reciprocal", () => Elementwise.Reciprocal(pos.ToDevice(d)), () => Elementwise.Reciprocal(pos)),
                ("pow 0.5", () => Elementwise.Pow(pos.ToDevice(d), 0.5), () => Elementwise.Pow(pos, 0.5)),
                ("pow 3", () => Elementwise.Pow(xd, 3), () => Elementwise.Pow(x, 3)),
                ("clamp", () => Elementwise.Clamp(xd, -0.5, 0.7), () => Elementwise.Clamp(x, -0.5, 0.7)),
                ("div scalar", () => Elementwise.Div(xd, 7.5), () => Elementwise.Div(x, 7.5)),
                ("maximum", () => Elementwise.Maximum(xd, xd.Transpose(0, 0)), () => Elementwise.Maximum(x, x)),
                ("minimum (broadcast)", () => Elementwise.Minimum(xd, xd.Narrow(0, 0, 1)), () => Elementwise.Minimum(x, x.Narrow(0, 0, 1))),
                ("where (host mask)", () => Elementwise.Where(Mask(6, 1, 40), xd, Tensor.Scalar(-1, dt)), () => Elementwise.Where(Mask(6, 1, 40), x, Tensor.Scalar(-1, dt))),
                ("sum dim -1", () => Reductions.Sum(xd, -1, keepDim: true), () => Reductions.Sum(x, -1, keepDim: true)),
                ("mean dim 1", () => Reductions.Mean(xd, 1), () => Reductions.Mean(x, 1)),
                ("amax dim -1", () => Reductions.Amax(xd, -1, keepDim: true), () => Reductions.Amax(x, -1, keepDim: true)),
                ("argmax", () => Reductions.ArgMax(xd), () => Reductions.ArgMax(x)),
                ("max indices dim 0", () => Reductions.Max(xd, 0).Indices, () => Reductions.Max(x, 0).Indices),
                ("rotate_half", () => Rotary.RotateHalf(xd), () => Rotary.RotateHalf(x)),
                ("rope unsqueeze 2", () => Rotary.Apply(xd.Unsqueeze(0), Rand(dt, 1, 6, 40), Rand(dt, 1, 6, 40), unsqueezeDim: 2),
                    () => Rotary.Apply(x.Unsqueeze(0), Rand(dt, 1, 6, 40), Rand(dt, 1, 6, 40), unsqueezeDim: 2)),
                ("index_select dim 1", () => xd.IndexSelect(1, Tensor.FromArray(new long[] { 4, 0, -1, 2 }, 4)), () => x.IndexSelect(1, Tensor.FromArray(new long[] { 4, 0, -1, 2 }, 4))),
                ("gather dim -1", () => xd.Gather(-1, Index(6, 5, 3, 40)), () => x.Gather(-1, Index(6, 5, 3, 40))),
                ("gaussian top-k cutoff", () => Gemma3nMlp.GaussianTopKCutoff(xd, 0.95), () => Gemma3nMlp.GaussianTopKCutoff(x, 0.95)),
                ("topk (torch order)", () => TopKTorchOrder.Forward(xd, 3).Values, () => TopKTorchOrder.Forward(x, 3).Values),
            };
            foreach (var (name, gpu, cpu) in checks)
            {
                Tensor got;
                try { got = gpu(); }
                catch (Exception e) { return $"{n} {name}: {e.GetType().Name}: {e.Message.Split('\n')[0]}"; }
                if (Close($"{n} {name}", got, cpu(), name.Contains("index") || name.Contains("max") || name.Contains("gather") ? 0 : tol) is { } err) return err;
            }
            // the eager attention mask: causal + sliding window + one vision block under both of Gemma4VisionMask's rules
            // (Gemma 3's: the block widens every layer; Gemma 4's: sliding layers only, inside the window), as Gemma4Attention's CPU loop
            foreach (bool slidingOnly in new[] { false, true })
            {
                var scores = Rand(DType.Float32, 2, 4, 7);
                var masked = scores.ToDevice(d).Clone();
                int[] blocks = [-1, 0, 0, 0];
                CudaOps.AttentionMask(masked, 4, 7, 3, 2, blocks, slidingOnly);
                var want = scores.Clone();
                var ws = want.Span<float>();
                for (int p = 0; p < 2; p++)
                    for (int i = 0; i < 4; i++)
                        for (int j = 0; j < 7; j++)
                        {
                            int at = 3 + i;
                            bool causal = j <= at, inWindow = j > at - 2, same = j >= 3 && blocks[i] >= 0 && blocks[i] == blocks[j - 3];
                            bool visible = slidingOnly ? inWindow && (causal || same) : (causal && inWindow) || same;
                            if (!visible) ws[(p * 4 + i) * 7 + j] = float.NegativeInfinity;
                        }
                if (Close($"attention_mask (sliding layers only: {slidingOnly})", masked, want, 0) is { } em) return em;
            }
            // the audio tower's kernels
            var img = Rand(dt, 2, 5, 7, 3);
            if (Close($"{n} im2col3x3s2", CudaOps.Im2Col3x3S2(img.ToDevice(d)), Im2Col(img), 0) is { } ei) return ei;
            var seq = Rand(dt, 2, 9, 8);
            var dw = Rand(dt, 8, 1, 5);
            if (Close($"{n} depthwise causal conv1d", CudaOps.DepthwiseCausalConv1d(seq.ToDevice(d), dw.ToDevice(d)), DwConv(seq, dw), tol) is { } ec) return ec;
        }
        // an op without a device path says so, naming itself
        try
        {
            Elementwise.Gt(Tensor.FromArray(new float[] { 1, 2 }, 2).ToDevice(d), 1.0);
            return "comparison on device tensors did not fail";
        }
        catch (NotSupportedException e) when (e.Message.Contains("no CUDA path", StringComparison.Ordinal) && e.Message.Contains("comparison", StringComparison.Ordinal)) { }
        return null;
    }

    private static Tensor Mask(params int[] shape)
    {
        var v = new bool[Shape.NumEl(shape)];
        for (int i = 0; i < v.Length; i++) v[i] = i % 3 == 1;
        return Tensor.FromArray(v, shape);
    }

    private static Tensor Index(int a, int b, int k, int n)
    {
        var v = new long[a * b * k];
        for (int i = 0; i < v.Length; i++) v[i] = (i * 7 + 3) % n;
        return Tensor.FromArray(v, a, b, k);
    }

    private static Tensor Im2Col(Tensor x)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), c = x.Size(3), ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
        var y = Tensor.Zeros(x.DType, b * ho * wo, c * 9);
        for (int n = 0; n < b; n++)
        for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
        for (int ch = 0; ch < c; ch++)
        for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
        {
            int iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) y.Set(x.At(n, iy, ix, ch), (n * ho + oy) * wo + ox, ch * 9 + ky * 3 + kx);
        }
        return y;
    }

    private static Tensor DwConv(Tensor x, Tensor w)
    {
        int b = x.Size(0), t = x.Size(1), c = x.Size(2), k = w.Size(2);
        var y = Tensor.Zeros(DType.Float32, b, t, c);
        for (int n = 0; n < b; n++)
        for (int i = 0; i < t; i++)
        for (int ch = 0; ch < c; ch++)
        {
            float acc = 0f;
            for (int j = 0; j < k; j++) if (i - (k - 1) + j >= 0) acc += (float)w.At(ch, 0, j) * (float)x.At(n, i - (k - 1) + j, ch);
            y.Set(acc, n, i, ch);
        }
        return y.To(x.DType);
    }
}
