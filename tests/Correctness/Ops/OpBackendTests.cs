using System.Reflection;
using Harness.Engine.Attention;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Harness.Tests.Correctness.Tensors;

namespace Harness.Tests.Correctness.Ops;

/// <summary>
/// Devices below the ops (issue "One model core", item 4): the ops of Ops/, the attention, the layers and the tensors no
/// longer branch <c>if (x.IsCuda) return CudaOps.X(...)</c>; each op asks <see cref="OpBackend.Of(Tensor)"/> for its
/// operands' device's <see cref="IOpBackend"/> (vLLM's <c>quant_method.apply</c>: the host's reference eager code, or the
/// CUDA device's kernels) and calls it. A file or a type that branches on the device again fails here with its name.
/// </summary>
public class OpBackendTests
{
    private static readonly string[] Folders = ["Ops", "Attention", "Layers", "ParallelLayers", "Tensors"];

    // the one line of these folders that may say IsCuda: the property itself (Harness, the tests and Cuda/ read it)
    private const string IsCudaDeclaration = "public bool IsCuda => Storage.IsDevice;";

    private static string Root => Directory.GetParent(Fixtures.DefaultDirectory())!.FullName;

    /// <summary>Lines (comments cut off) that branch on the device or name a CUDA type.</summary>
    private static List<string> DeviceHits(IEnumerable<(string File, string Text)> files)
    {
        var code = files.Select(f => (f.File, Text: string.Join('\n', f.Text.Split('\n').Select(l => l.Contains("//") ? l[..l.IndexOf("//", StringComparison.Ordinal)] : l))))
            .ToList();
        var isCuda = code.SelectMany(f => f.Text.Split('\n').Select((line, i) => (f.File, Line: i + 1, Text: line)))
            .Where(l => l.Text.Contains("IsCuda", StringComparison.Ordinal) && !l.Text.Contains(IsCudaDeclaration, StringComparison.Ordinal))
            .Select(l => $"{l.File}:{l.Line}: {l.Text.Trim()}");
        return [.. isCuda.Concat(TensorBackendTests.SourceHits(TensorBackendTests.CudaNames(), code)).Distinct()];
    }

    [Fact]
    public void No_op_attention_layer_or_tensor_file_branches_on_the_device()
    {
        var files = Folders.SelectMany(d => Directory.EnumerateFiles(Path.Combine(Root, "src", "Engine", d), "*.cs", SearchOption.AllDirectories))
            .Select(f => (Path.GetRelativePath(Root, f), File.ReadAllText(f))).ToList();
        Assert.True(files.Count >= 40, $"{files.Count} files under {string.Join(", ", Folders)}");
        var hits = DeviceHits(files);
        Assert.True(hits.Count == 0, "device branches below the models:\n" + string.Join("\n", hits));
    }

    [Fact]
    public void The_source_check_fails_on_the_old_device_branches()
    {   // lines this change removed (main 0554b89), planted back one by one
        var planted = new[]
        {
            ("Ops/Elementwise.cs", "        if (x.IsCuda) return Cuda.CudaOps.Unary<Cuda.Kernels.PowScalarOp>(x, (float)exponent);"),
            ("Ops/Elementwise.cs", "        if (a.IsCuda || b.IsCuda) return CudaBinary(op, a, b, dt, name);"),
            ("Ops/Matmul.cs", "    private static Cuda.CudaDevice DeviceOf(Tensor a, Tensor b) => a.IsCuda ? a.CudaDevice : b.CudaDevice;"),
            ("Attention/AttentionCore.cs", "        if (q.IsCuda && plain && Spec.Mask.Causal) return Kind.FusedDevice;"),
            ("Attention/AttentionCore.cs", "            output = Cuda.CudaOps.Attention(q4.Select(0, 0), keys, values, past, Spec.Mask.Window ?? 0, (float)Spec.Scaling);"),
            ("ParallelLayers/VocabParallelEmbedding.cs", "            var rows = Cuda.CudaOps.IndexSelect(LocalWeight, 0, local);"),
            ("Layers/Linear.cs", "        !x.IsCuda && !Weight.IsCuda && Bias is not { IsCuda: true } && x.DType == Weight.DType"),
            ("Tensors/Tensor.Copy.cs", "        if (IsCuda) return ToHost().ToFloatArray();"),
            ("Ops/Norms.cs", "using Harness.Engine.Cuda;"),
        };
        foreach (var p in planted) Assert.Single(DeviceHits([p]));
        Assert.Empty(DeviceHits([("Tensors/Tensor.Device.cs", "    " + IsCudaDeclaration)]));
        Assert.Empty(DeviceHits([("Ops/Softmax.cs", "        var r = OpBackend.Of(x).Softmax(rows, log, x.DType, lastDim); // was: if (x.IsCuda) CudaOps.Softmax")]));
    }

    private static readonly MethodInfo IsCudaGetter = typeof(Tensor).GetProperty(nameof(Tensor.IsCuda))!.GetMethod!;

    private static bool CallsIsCuda(MemberInfo m) => m is MethodInfo mi && mi == IsCudaGetter;

    [Fact]
    public void No_op_attention_layer_or_tensor_type_reads_is_cuda_or_refers_to_cuda_in_its_il()
    {
        var namespaces = Folders.Select(f => "Harness.Engine." + f).ToHashSet();
        var types = typeof(Tensor).Assembly.GetTypes().Where(t => t.Namespace is { } ns && namespaces.Contains(ns) && !t.IsNested).ToList();
        Assert.Contains(typeof(Elementwise), types);
        Assert.Contains(typeof(AttentionCore), types);
        Assert.Contains(typeof(Harness.Engine.ParallelLayers.VocabParallelEmbedding), types);
        var hits = types.SelectMany(t => TensorBackendTests.CudaReferences(t, CallsIsCuda)).ToList();
        Assert.True(hits.Count == 0, "device branches or CUDA references below the models:\n" + string.Join("\n", hits));
    }

    // What Elementwise.Pow and Matmul did before: read IsCuda and call a CUDA driver.
    private static class PlantedPow
    {
        public static Tensor Pow(Tensor x, double e) => x.IsCuda ? Engine.Cuda.CudaOps.Unary<Engine.Cuda.Kernels.PowScalarOp>(x, (float)e) : x;
        public static bool OnDevice(Tensor a, Tensor b) => a.IsCuda || b.IsCuda;
    }

    [Fact]
    public void The_il_check_fails_on_an_op_that_reads_is_cuda()
    {
        var hits = TensorBackendTests.CudaReferences(typeof(PlantedPow), CallsIsCuda);
        Assert.Contains(hits, h => h.StartsWith("PlantedPow.Pow: ", StringComparison.Ordinal) && h.EndsWith("Harness.Engine.Tensors.Tensor::get_IsCuda", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.Contains("CudaOps::Unary", StringComparison.Ordinal));
        Assert.Equal(2, hits.Count(h => h.Contains("OnDevice:", StringComparison.Ordinal)));
    }

    // ---- the ops reach the backend of their operands' device ----

    /// <summary>A device's two backends in one object, as a device gives them (its memory's <see cref="IDeviceMemory.Backend"/>).</summary>
    internal interface IFakeDevice : ITensorBackend, IOpBackend;

    /// <summary>A device whose memory comes with this object as its tensor and op backend: every op call is recorded (name
    /// and arguments) and answered with <see cref="Result"/> (null for <see cref="Unfused"/>, false for a flag); every
    /// tensor primitive but Zeros throws (a host read of its bytes included).</summary>
    public class FakeDevice : DispatchProxy
    {
        public List<string> Calls { get; } = [];
        public List<object?[]> Args { get; } = [];
        public object? Result { get; set; }
        /// <summary>Ops answered with null (no fused kernel here).</summary>
        public HashSet<string> Unfused { get; } = [];

        protected override object? Invoke(MethodInfo? method, object?[]? args)
        {
            switch (method!.Name)
            {
                case "get_Name": return "fake:0";
                case nameof(ITensorBackend.Zeros): return Make((DType)args![0]!, (int[])args[1]!);
            }
            if (method.DeclaringType == typeof(ITensorBackend)) throw new NotSupportedException($"{method.Name} on a fake device tensor");
            Calls.Add(method.Name);
            Args.Add(args ?? []);
            return method.ReturnType == typeof(bool) ? false : Unfused.Contains(method.Name) ? null : Result;
        }

        public Tensor Make(DType dtype, params int[] shape) =>
            Tensor.FromStorage(new Storage(new FakeMemory((ITensorBackend)(object)this, Shape.NumEl(shape) * dtype.Size())), dtype, shape);
    }

    private sealed class FakeMemory(ITensorBackend backend, long bytes) : IDeviceMemory
    {
        public long Bytes => bytes;
        public ITensorBackend Backend => backend;
        public void Dispose() { }
    }

    private static FakeDevice NewDevice()
    {
        var device = (FakeDevice)(object)DispatchProxy.Create<IFakeDevice, FakeDevice>();
        device.Result = Tensor.Scalar(42.0);
        return device;
    }

    [Fact]
    public void Each_op_calls_its_device_backend_after_its_device_independent_checks()
    {
        var dev = NewDevice();
        var x = dev.Make(DType.BFloat16, 2, 8);
        var host = Tensor.Zeros(DType.BFloat16, 2, 8);
        var result = (Tensor)dev.Result!;

        Assert.Same(result, Elementwise.Add(x, host));
        Assert.Same(result, Elementwise.Mul(host, x));                       // a host first operand: the device's still
        Assert.Same(result, Elementwise.Where(Tensor.Zeros(DType.Bool, 2, 8), host, x));
        Assert.Same(result, Elementwise.Exp(x));
        Assert.Same(result, Elementwise.Clamp(x, min: 0.1));                 // no host buffer first: the fake refuses host reads
        Assert.Same(result, Activation.Apply(x, ActivationKind.Silu));
        Assert.Same(result, Norms.RmsNorm(x, Tensor.Zeros(DType.BFloat16, 8), 1e-6));
        Assert.Same(result, Softmax.Forward(x, -1));
        Assert.Same(result, Matmul.Forward(x, host.T()));
        Assert.Same(result, Embedding.Lookup(x, Tensor.FromArray(new long[] { 1 }, 1)));
        Assert.Equal(["Binary", "Binary", "Where", "Unary", "Clamp", "Activation", "RmsNorm", "Softmax", "Mm", "Embedding"], dev.Calls);

        // the device-independent work arrives done: the result dtype, the bounds rounded to bf16, eps as float32
        Assert.Equal(DType.BFloat16, dev.Args[0][3]);
        Assert.Equal((float?)0.10009765625f, dev.Args[4][1]);
        Assert.Null(dev.Args[4][2]);
        Assert.Equal(1e-6f, dev.Args[6][2]);
    }

    [Fact]
    public void Fused_paths_fall_back_to_the_unfused_ops_where_the_device_has_none()
    {   // Gated and AddRmsNorm answer null (no fused kernel for these operands): the op composes act + mul, add + norm
        var dev = NewDevice();
        dev.Unfused.UnionWith(["Gated", "AddRmsNorm"]);
        var result = Tensor.Zeros(DType.Float32, 2, 4);                        // what every other op of the fake returns
        dev.Result = result;
        var gate = dev.Make(DType.Float32, 2, 4);
        var up = dev.Make(DType.Float32, 2, 4);
        Assert.Same(result, Activation.ApplyGated(gate, up, ActivationKind.Silu));
        Assert.Equal(["Gated", "Activation", "Binary"], dev.Calls);            // act(gate) on the device, then act * up there

        dev.Calls.Clear();
        var (sum, normed) = ResidualNorm.AddRmsNorm(gate, up, Tensor.Zeros(DType.Float32, 4), 1e-5);
        Assert.Same(result, sum);                                              // x + residual: the device's add
        Assert.Equal(["AddRmsNorm", "Binary"], dev.Calls);                     // the norm of the (here host) sum: the host's
        Assert.Equal(new float[8], normed.ToFloatArray());
    }

    [Fact]
    public void The_first_device_operand_chooses_and_a_device_without_ops_is_named()
    {
        var dev = NewDevice();
        var d = dev.Make(DType.Float32, 2);
        var h = Tensor.Zeros(DType.Float32, 2);
        Assert.Same(HostOps.Instance, OpBackend.Of(h));
        Assert.Same(HostOps.Instance, OpBackend.Of(h, h, h));
        Assert.Same(dev, OpBackend.Of(d));
        Assert.Same(dev, OpBackend.Of(h, d));
        Assert.Same(dev, OpBackend.Of(h, h, d));
        Assert.True(OpBackend.OnHost(h, h) && !OpBackend.OnHost(h, d));

        var bare = new BareBackend();
        var b = Tensor.FromStorage(new Storage(new FakeMemory(bare, 8)), DType.Float32, [2]);
        var e = Assert.Throws<NotSupportedException>(() => Elementwise.Neg(b));
        Assert.Contains("no ops for tensors on bare:0", e.Message);
    }

    /// <summary>A planted chooser that takes the first operand's device whatever it is: the rule above catches it.</summary>
    private static IOpBackend PlantedOf(Tensor a, Tensor b) => OpBackend.Of(a);

    [Fact]
    public void The_chooser_check_fails_on_a_first_operand_rule()
    {
        var dev = NewDevice();
        Assert.NotSame(dev, PlantedOf(Tensor.Zeros(DType.Float32, 2), dev.Make(DType.Float32, 2)));
    }

    private sealed class BareBackend : ITensorBackend
    {
        public string Name => "bare:0";
        public Tensor Zeros(DType dtype, int[] shape) => throw new NotSupportedException();
        public Tensor Copy(Tensor src, DType dtype) => throw new NotSupportedException();
        public Tensor CopyToKeep(Tensor src, DType dtype) => throw new NotSupportedException();
        public void CopyInto(Tensor src, Tensor dst) => throw new NotSupportedException();
        public Tensor ToHost(Tensor t) => throw new NotSupportedException();
        public Tensor IndexSelect(Tensor x, int dim, long[] ids) => throw new NotSupportedException();
        public Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape) => throw new NotSupportedException();
    }
}
