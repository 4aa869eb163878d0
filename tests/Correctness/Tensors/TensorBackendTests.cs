using System.Reflection;
using System.Reflection.Emit;
using System.Text.RegularExpressions;
using Harness.Engine.Cuda;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Tensors;

/// <summary>
/// No Tensor -> CUDA loop (issue "One model core", item 4): <c>Tensor.Copy</c> called <c>CudaOps.Copy/CopyInto</c> and
/// <c>CudaModelOps.IndexSelect/Gather</c>, and the CUDA drivers call back into tensors, so the two layers formed a loop.
/// Now a tensor asks its storage for its device's <see cref="ITensorBackend"/>; the Tensors layer names no CUDA type, in
/// its source and in its compiled IL, and every device-dependent tensor primitive goes through the backend.
/// </summary>
public class TensorBackendTests
{
    private static readonly Assembly Engine = typeof(Tensor).Assembly;

    private static bool IsCudaType(Type? t) =>
        t is not null && (t.Namespace?.StartsWith("Harness.Engine.Cuda", StringComparison.Ordinal) == true
                          || (t.IsGenericType && t.GetGenericArguments().Any(IsCudaType))
                          || (t.HasElementType && IsCudaType(t.GetElementType())));

    // ---- the source: no file under src/Engine/Tensors names a type of the Cuda namespaces ----

    internal static Regex CudaNames()
    {
        var names = Engine.GetTypes().Where(t => IsCudaType(t) && !t.IsNested && !t.Name.Contains('<'))
            .Select(t => t.Name.Split('`')[0]).Distinct().ToList();
        Assert.Contains("CudaOps", names);
        Assert.Contains("DeviceMemory", names);
        return new Regex(@"Harness\.Engine\.Cuda|\bCuda\.|\b(" + string.Join("|", names.Select(Regex.Escape)) + @")\b");
    }

    internal static List<string> SourceHits(Regex names, IEnumerable<(string File, string Text)> files) =>
        [.. files.SelectMany(f => f.Text.Split('\n').Select((line, i) => (f.File, Line: i + 1, Text: line)))
            .Where(l => names.IsMatch(l.Text))
            .Select(l => $"{l.File}:{l.Line}: {l.Text.Trim()}")];

    [Fact]
    public void No_file_of_the_tensor_layer_names_a_cuda_type()
    {
        var root = Directory.GetParent(Fixtures.DefaultDirectory())!.FullName;
        var dir = Path.Combine(root, "src", "Engine", "Tensors");
        var files = Directory.EnumerateFiles(dir, "*.cs").Select(f => (Path.GetRelativePath(root, f), File.ReadAllText(f))).ToList();
        Assert.True(files.Count >= 8, $"{dir}: {files.Count} files");
        var hits = SourceHits(CudaNames(), files);
        Assert.True(hits.Count == 0, "CUDA types named in src/Engine/Tensors:\n" + string.Join("\n", hits));
    }

    [Fact]
    public void The_source_check_fails_on_the_old_tensor_copy()
    {   // the lines this issue removed from Tensor.Copy.cs / Tensor.Device.cs, planted back
        var planted = new[]
        {
            ("Tensor.Copy.cs", "        if (IsCuda) return Cuda.CudaOps.Copy(this, DType);"),
            ("Tensor.Copy.cs", "        if (IsCuda) return Cuda.CudaModelOps.Gather(this, d, ids, index.ShapeArray);"),
            ("Tensor.Device.cs", "using Harness.Engine.Cuda;"),
            ("Storage.cs", "    public DeviceMemory? Device { get; }"),
        };
        var names = CudaNames();
        foreach (var p in planted) Assert.Single(SourceHits(names, [p]));
        Assert.Empty(SourceHits(names, [("Tensor.Device.cs", "    public bool IsCuda => Storage.IsDevice;")]));
    }

    // ---- the IL: no signature or method body of a Tensors type refers to a Cuda type or member ----

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static).Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>Every reference to a Cuda type a type makes: field, property and method signatures, and the operands of the
    /// IL of its methods (calls, field loads, newobj, casts, ldtoken), its nested types and lambdas included; with
    /// <paramref name="flagged"/>, every IL operand it says yes to as well (a call of <c>Tensor.IsCuda</c>).</summary>
    internal static List<string> CudaReferences(Type type, Func<MemberInfo, bool>? flagged = null)
    {
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var hits = new List<string>();
        void Check(Type? t, string where) { if (IsCudaType(t)) hits.Add($"{type.Name}.{where}: {t}"); }
        Check(type.BaseType, "base");
        foreach (var i in type.GetInterfaces()) Check(i, "interface");
        foreach (var f in type.GetFields(all)) Check(f.FieldType, f.Name);
        foreach (var p in type.GetProperties(all)) Check(p.PropertyType, p.Name);
        foreach (var m in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
        {
            if (m is MethodInfo mi) Check(mi.ReturnType, m.Name);
            foreach (var p in m.GetParameters()) Check(p.ParameterType, $"{m.Name}({p.Name})");
            var il = m.GetMethodBody()?.GetILAsByteArray();
            if (il is null) continue;
            for (int i = 0; i < il.Length;)
            {
                short v = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
                var op = OpCodesByValue[v];
                i += op.Size;
                int operand = op.OperandType switch
                {
                    OperandType.InlineNone => 0,
                    OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                    OperandType.InlineVar => 2,
                    OperandType.InlineI8 or OperandType.InlineR => 8,
                    OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                    _ => 4,
                };
                if (op.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)
                {
                    int token = BitConverter.ToInt32(il, i);
                    var member = m.Module.ResolveMember(token, type.IsGenericType ? type.GetGenericArguments() : null,
                        m.IsGenericMethod ? m.GetGenericArguments() : null);
                    var target = member as Type ?? member?.DeclaringType;
                    if (IsCudaType(target) || (member is not null && flagged?.Invoke(member) == true))
                        hits.Add($"{type.Name}.{m.Name}: {op.Name} {target}::{member?.Name}");
                    if (member is MethodInfo called) Check(called.ReturnType, $"{m.Name} -> {called.Name}");
                }
                i += operand;
            }
        }
        foreach (var nested in type.GetNestedTypes(all)) hits.AddRange(CudaReferences(nested, flagged));
        return hits;
    }

    [Fact]
    public void No_type_of_the_tensor_layer_refers_to_a_cuda_type_in_its_il()
    {
        var types = Engine.GetTypes().Where(t => t.Namespace == "Harness.Engine.Tensors" && !t.IsNested).ToList();
        Assert.Contains(typeof(Tensor), types);
        Assert.Contains(typeof(Storage), types);
        var hits = types.SelectMany(t => CudaReferences(t)).ToList();
        Assert.True(hits.Count == 0, "CUDA references in Harness.Engine.Tensors:\n" + string.Join("\n", hits));
    }

    // What Tensor.Clone, Storage and Tensor.ZerosLike did before: a call into a CUDA driver, a CUDA-typed member, a CUDA
    // type passed on.
    private sealed class PlantedClone
    {
        public DeviceMemory? Memory { get; set; }
        public static Tensor Clone(Tensor t) => t.IsCuda ? CudaOps.Copy(t, t.DType) : t;
        public static Tensor Zeros(Tensor like) => like.IsCuda ? CudaTensors.Zeros(like.CudaDevice, DType.Float32, 1) : like;
    }

    [Fact]
    public void The_il_check_fails_on_a_tensor_method_that_calls_cuda_ops()
    {
        var hits = CudaReferences(typeof(PlantedClone));
        Assert.Contains(hits, h => h.Contains("CudaOps::Copy", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.Contains("CudaTensors::Zeros", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.Contains("Memory: Harness.Engine.Cuda.DeviceMemory", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.Contains("get_CudaDevice", StringComparison.Ordinal));
    }

    // ---- every device-dependent primitive goes through the storage's backend ----

    private sealed class RecordingBackend : ITensorBackend
    {
        public readonly List<string> Calls = [];
        public string Name => "fake:0";
        public Tensor Zeros(DType dtype, int[] shape) { Calls.Add("Zeros"); return OnDevice(Tensor.Zeros(dtype, shape)); }
        public Tensor Copy(Tensor src, DType dtype) { Calls.Add($"Copy {dtype.TorchName()}"); return OnDevice(Held(src).To(dtype).Contiguous()); }
        public Tensor CopyToKeep(Tensor src, DType dtype) { Calls.Add("CopyToKeep"); return Copy(src, dtype); }
        public void CopyInto(Tensor src, Tensor dst) { Calls.Add("CopyInto"); (dst.IsCuda ? Held(dst) : dst).CopyFrom(src.IsCuda ? Held(src) : src); }
        public Tensor ToHost(Tensor t) { Calls.Add("ToHost"); return Held(t).Contiguous(); }
        public Tensor IndexSelect(Tensor x, int dim, long[] ids) { Calls.Add($"IndexSelect {string.Join(",", ids)}"); return OnDevice(HostBackend.Instance.IndexSelect(Held(x), dim, ids)); }
        public Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape) { Calls.Add($"Gather {string.Join(",", index)}"); return OnDevice(HostBackend.Instance.Gather(Held(x), dim, index, indexShape)); }

        // The "device" keeps a host tensor beside each device storage it made (a view's offset and strides mirrored).
        private readonly Dictionary<IDeviceMemory, Tensor> _held = new(ReferenceEqualityComparer.Instance);
        public Tensor OnDevice(Tensor host)
        {
            var mem = new FakeMemory(this, host.ElementCount * host.DType.Size());
            _held[mem] = host;
            return Tensor.FromStorage(new Storage(mem), host.DType, host.ShapeArray);
        }
        private Tensor Held(Tensor t) => new(_held[t.Storage.Device!].Storage, t.DType, t.ShapeArray, t.StridesArray, t.Offset);
    }

    private sealed class FakeMemory(ITensorBackend backend, long bytes) : IDeviceMemory
    {
        public long Bytes => bytes;
        public ITensorBackend Backend => backend;
        public void Dispose() { }
    }

    [Fact]
    public void A_device_tensor_copies_casts_gathers_and_downloads_through_its_storage_backend()
    {
        var fake = new RecordingBackend();
        var host = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        var dev = fake.OnDevice(host);
        Assert.True(dev.IsCuda);
        Assert.Same(fake, dev.Backend);
        Assert.Equal("fake:0", dev.DeviceName);
        Assert.Same(HostBackend.Instance, host.Backend);

        Assert.Equal(host.ToFloatArray(), dev.ToHost().ToFloatArray());
        Assert.Equal(new float[] { 1, 4, 2, 5, 3, 6 }, dev.T().Contiguous().ToFloatArray());        // Clone of a view
        Assert.Equal(host.To(DType.BFloat16).ToBFloat16Bits(), dev.To(DType.BFloat16).ToHost().ToBFloat16Bits());
        Assert.Equal(new float[] { 3, 1, 6, 4 }, dev.IndexSelect(1, Tensor.FromArray(new long[] { -1, 0 }, 2)).ToFloatArray());
        Assert.Equal(new float[] { 2, 1, 6, 4 }, dev.Gather(1, Tensor.FromArray(new long[] { 1, -3, 2, 0 }, 2, 2)).ToFloatArray());
        var zeros = Tensor.ZerosLike(dev, DType.Float32, 2);
        Assert.Same(fake, zeros.Backend);
        var back = Tensor.Zeros(DType.Float32, 2, 3);
        back.CopyFrom(dev);                                                                         // device -> host
        Assert.Equal(host.ToFloatArray(), back.ToFloatArray());

        Assert.Equal(
            ["ToHost", "Copy float32", "ToHost", "Copy bfloat16", "ToHost", "IndexSelect 2,0", "ToHost", "Gather 1,0,2,0", "ToHost", "Zeros", "CopyInto"],
            fake.Calls);
    }

    [Fact]
    public void Index_errors_are_raised_before_any_backend_runs()
    {
        var fake = new RecordingBackend();
        var dev = fake.OnDevice(Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3));
        var e = Assert.Throws<IndexOutOfRangeException>(() => dev.IndexSelect(1, Tensor.FromArray(new long[] { 0, 3 }, 2)));
        Assert.Equal("index out of range in self: index 3 for dimension 1 of size 3", e.Message);
        e = Assert.Throws<IndexOutOfRangeException>(() => dev.Gather(1, Tensor.FromArray(new long[] { -4 }, 1, 1)));
        Assert.Equal("index -4 is out of bounds for dimension 1 with size 3", e.Message);
        Assert.Empty(fake.Calls);
    }
}
