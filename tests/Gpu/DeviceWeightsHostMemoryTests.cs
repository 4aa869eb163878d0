using Harness.Engine.Cuda;
using Harness.Engine.IO;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Harness.Tests.Correctness.Models;

namespace Harness.Tests.Gpu;

/// <summary>
/// Issue 22's 8B goal on one card: Llama-3.1-8B's dimensions (TP=1, 128 ids, +32, every module at every step) passed on an
/// H100 with the engine's host memory at 19.6 GiB for 15 GiB of bf16 weights that all lived on the device: every weight
/// was read from the memory-mapped checkpoint for its upload and its pages stayed resident, the whole checkpoint a second
/// time in the process (the reference's 15.9 GiB beside it: 35.5 GiB against the 32). Here a 64 MiB weight goes
/// to the device through <see cref="DeviceWeights"/> and the file's pages it was read from must be given back.
/// </summary>
[Trait("Category", "GPU")]
public sealed class DeviceWeightsHostMemoryTests : IDisposable
{
    private const int Rows = 8192, Cols = 4096;   // [8192, 4096] bf16: 64 MiB
    private readonly string _dir = Directory.CreateTempSubdirectory("harness-device-weights-").FullName;

    public DeviceWeightsHostMemoryTests()
    {
        var weights = new Dictionary<string, Tensor>
        {
            ["model.layers.0.mlp.down_proj.weight"] = Tensor.Randn(DType.BFloat16, 7, Rows, Cols),
            ["model.embed_tokens.weight"] = Tensor.Randn(DType.BFloat16, 8, Rows, Cols),
        };
        SafetensorsWriter.Save(FilePath, weights);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string FilePath => Path.Combine(_dir, Checkpoint.SingleFileName);

    /// <summary>Uploads one whole weight and one rank's rows of the table through <paramref name="upload"/>; returns the
    /// checkpoint's resident bytes afterwards and the bytes uploaded.</summary>
    private (long Resident, long Uploaded) UploadBoth(Func<IWeightSource, CudaDevice, IWeightSource> upload)
    {
        var device = GpuTests.RequireGpu();
        using var checkpoint = Checkpoint.Open(_dir);
        var weights = upload(new CheckpointWeights(checkpoint), device);
        var w = weights.Get("model.layers.0.mlp.down_proj.weight");                 // [8192, 4096] on the device
        var rows = weights.GetRows("model.embed_tokens.weight", Rows / 2, Rows / 2);  // [4096, 4096]: rank 1's half
        Assert.True(w.IsCuda && rows.IsCuda);
        device.Synchronize();
        long resident = MappedPagesProbe.Resident(FilePath);
        // the copies arrived whole: their last elements equal the file's (read again from it after the measurement)
        Assert.Equal(checkpoint.GetTensor("model.layers.0.mlp.down_proj.weight").At(Rows - 1, Cols - 1), w.ToHost().At(Rows - 1, Cols - 1));
        Assert.Equal(checkpoint.GetTensor("model.embed_tokens.weight").At(Rows - 1, Cols - 1), rows.ToHost().At(Rows / 2 - 1, Cols - 1));
        return (resident, (long)Rows * Cols * 2 * 3 / 2);
    }

    // the pages left are those a tensor shares with its neighbour (the safetensors header's page and one at the boundary)
    private static void AssertGivenBack((long Resident, long Uploaded) m) =>
        Assert.True(m.Resident <= m.Uploaded / 100,
            $"the checkpoint's pages stay resident after their weights went to the device: {m.Resident} bytes for {m.Uploaded} uploaded");

    [Fact]
    public void A_weight_on_the_device_leaves_no_copy_of_its_checkpoint_pages_on_the_host()
    {
        AssertGivenBack(UploadBoth((inner, device) => new DeviceWeights(inner, device)));
        AssertGivenBack(UploadBoth((inner, device) => new DeviceWeights(inner, device, keep: false)));
    }

    [Fact]
    public void An_upload_that_keeps_the_mapped_pages_is_caught()
    {
        // the bug as it was: inner.Get(name).ToDevice(device), the pages read for the copy left resident
        var m = UploadBoth((inner, device) => new KeepsPages(inner, device));
        Assert.True(m.Resident >= m.Uploaded * 9 / 10, $"{m.Resident} resident bytes for {m.Uploaded} uploaded");
        Assert.Throws<Xunit.Sdk.TrueException>(() => AssertGivenBack(m));
    }

    private sealed class KeepsPages(IWeightSource inner, CudaDevice device) : IWeightSource
    {
        public bool Contains(string name) => inner.Contains(name);
        public Tensor Get(string name) => inner.Get(name).ToDevice(device);
        public Tensor GetRows(string name, int start, int length) => inner.GetRows(name, start, length).ToDevice(device);
    }
}
