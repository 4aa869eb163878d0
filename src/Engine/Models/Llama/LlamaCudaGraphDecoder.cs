using Harness.Engine.Cuda;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// Greedy decoding of a one-rank Llama on a GPU with each step replayed from a CUDA graph: one cudaGraphLaunch and one
/// 8-byte read-back per token instead of ~270 kernel launches and their host work.
/// <para>What changes from step to step lives in device memory: the input id and the position (int32: tokens already
/// cached) that the cos/sin rows, the KV-cache append and the attention read (<see cref="CudaDecodeOps"/>); the step ends
/// with the argmax (<c>torch.topk(logits, 1)</c>) written as the next input and the position advanced. Every tensor of a
/// step comes from a <see cref="CudaArena"/>, so a replay's allocations land where the captured ones did.</para>
/// <para>The first step runs eagerly (kernels compiled, the arena sized), the second is captured; a capture that fails
/// leaves <see cref="FallbackReason"/> set and every step eager. The same kernels run either way, so the tokens equal
/// the plain loop's (Forward, then TopK of the last logits).</para>
/// </summary>
public sealed class LlamaCudaGraphDecoder : IDisposable
{
    private readonly LlamaForCausalLM _model;
    private readonly CudaDevice _device;
    private readonly nint _stream;
    private readonly CudaArena _arena;
    private readonly Tensor _id, _pos, _scratch;
    private nint _graph, _exec;

    /// <summary>Why steps run eagerly (the capture failed), or null.</summary>
    public string? FallbackReason { get; private set; }
    /// <summary>Nodes of the captured step (kernels and copies), 0 before the capture.</summary>
    public int GraphNodes { get; private set; }
    /// <summary>Arena bytes one step uses.</summary>
    public long StepBytes { get; private set; }

    public LlamaCudaGraphDecoder(LlamaForCausalLM model, long arenaBytes = 16L << 20)
    {
        _model = model;
        _device = model.Device ?? throw new ArgumentException("graph decoding needs a model whose weights are on a GPU");
        if (model.Context.TpSize != 1 || model.Context.PpSize != 1)
            throw new NotSupportedException($"graph decoding runs one rank (tp 1, pp 1), not tp {model.Context.TpSize} x pp {model.Context.PpSize}");
        _device.MakeCurrent();
        _stream = CudaRuntime.StreamCreate();
        using (_device.UseStream(_stream))
        {
            _id = CudaTensors.Zeros(_device, DType.Int64, 1);
            _pos = CudaTensors.Zeros(_device, DType.Int32, 1);
            _scratch = CudaTensors.Zeros(_device, DType.Int32, 1);
            _arena = new CudaArena(_device, arenaBytes);
        }
    }

    /// <summary>
    /// <paramref name="steps"/> greedy tokens after the model's current position, the first step's input being
    /// <paramref name="first"/> (the prompt's argmax): what the plain loop `logits = Forward([next]); next = argmax` picks.
    /// </summary>
    public long[] Decode(long first, int steps)
    {
        var tokens = new long[steps];
        _device.Synchronize();                                              // the prefill (another stream) is done
        using var flow = _device.UseStream(_stream);
        CudaOps.CopyInto(Tensor.FromArray([first], 1), _id);
        CudaOps.CopyInto(Tensor.FromArray([_model.Position], 1), _pos);
        _model.DeviceStep = (_pos, _scratch);
        try
        {
            int s = 0;
            if (_exec == 0 && FallbackReason is null && steps > 0)
            {
                tokens[s++] = EagerStep();
                if (s < steps) Capture();
            }
            for (; s < steps; s++)
            {
                if (_exec == 0) { tokens[s] = EagerStep(); continue; }
                if (_model.Position + 1 > _model.CacheCapacity)
                    throw new InvalidOperationException($"KV cache of {_model.CacheCapacity} positions cannot take 1 more after {_model.Position}");
                CudaGraphApi.Launch(_exec, _stream);
                _model.Reset(_model.Position + 1);                          // host bookkeeping of what the replay did
                tokens[s] = ReadId();
            }
        }
        finally { _model.DeviceStep = null; }
        return tokens;
    }

    /// <summary>Replays the captured step <paramref name="count"/> times with nothing read back (the GPU time of a step, with events).</summary>
    public double TimeReplaysMs(int count)
    {
        if (_exec == 0) return double.NaN;
        using var flow = _device.UseStream(_stream);
        int position = _model.Position;
        if (position + count > _model.CacheCapacity) count = _model.CacheCapacity - position;
        CudaOps.CopyInto(Tensor.FromArray([position], 1), _pos);
        _device.Synchronize();
        var e0 = CudaRuntime.EventCreate();
        var e1 = CudaRuntime.EventCreate();
        CudaRuntime.EventRecord(e0, _stream);
        for (int i = 0; i < count; i++) CudaGraphApi.Launch(_exec, _stream);
        CudaRuntime.EventRecord(e1, _stream);
        CudaRuntime.EventSynchronize(e1);
        float ms = CudaRuntime.EventElapsedMs(e0, e1);
        CudaRuntime.EventDestroy(e0);
        CudaRuntime.EventDestroy(e1);
        _model.Reset(position + count);
        return count > 0 ? ms / count : double.NaN;
    }

    /// <summary>GPU time per kernel of one step run eagerly with the graph's kernels (events around each launch), at the model's position.</summary>
    public List<(string Name, int Count, double Ms)> ProfileStep()
    {
        using var flow = _device.UseStream(_stream);
        int position = _model.Position;
        CudaOps.CopyInto(Tensor.FromArray([position], 1), _pos);
        _model.DeviceStep = (_pos, _scratch);
        try
        {
            _arena.Reset();
            using var profiler = KernelProfiler.Start();
            using (_arena.Use()) Step();
            return profiler.Report();
        }
        finally
        {
            _model.DeviceStep = null;
            _model.Reset(position);
        }
    }

    private long EagerStep()
    {
        _arena.Reset();
        using (_arena.Use()) Step();
        StepBytes = _arena.Used;
        return ReadId();
    }

    // One decode step: logits of the token in _id at position _pos, argmax into _id, _pos + 1.
    private void Step()
    {
        var logits = _model.Forward(_id, 1)!;                               // [1, vocab]
        var (_, pick) = TopK.Forward(logits.Select(0, 0), 1);               // [1] int64
        CudaDecodeOps.Advance(_pos, _id, pick, 1);
    }

    private void Capture()
    {
        int position = _model.Position;
        GC.Collect();
        GC.WaitForPendingFinalizers();                                      // old tensors freed before, not during, the capture
        _arena.Reset();
        try
        {
            CudaGraphApi.BeginCapture(_stream);
            using (_arena.Use()) Step();
            _graph = CudaGraphApi.EndCapture(_stream);
            _exec = CudaGraphApi.Instantiate(_graph);
            GraphNodes = CudaGraphApi.NodeCount(_graph);
        }
        catch (Exception e)
        {
            CudaGraphApi.AbandonCapture(_stream);
            if (_graph != 0) { CudaGraphApi.Destroy(_graph); _graph = 0; }
            _exec = 0;
            FallbackReason = e.GetType().Name + ": " + e.Message;
        }
        finally { _model.Reset(position); }                                 // the capture ran nothing
    }

    private long ReadId() => _id.ToHost().ToInt64Array()[0];

    public void Dispose()
    {
        if (_exec != 0) CudaGraphApi.DestroyExec(_exec);
        if (_graph != 0) CudaGraphApi.Destroy(_graph);
        _exec = _graph = 0;
        _arena.Dispose();
    }
}
