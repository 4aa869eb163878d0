using Harness.Engine.Capture;
using Harness.Engine.Cuda;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models;

/// <summary>
/// What a graph decode step reads from device memory instead of the host: the int32 position (tokens already cached) that
/// the cos/sin rows, the KV-cache appends and the attention read, and a scratch int the unchecked embedding writes to.
/// </summary>
public sealed record DeviceStep(Tensor Position, Tensor Scratch);

/// <summary>
/// A one-rank text decoder on a GPU whose decode step can run from device state (<see cref="DeviceStep"/>), so that
/// <see cref="CudaGraphDecoder"/> captures it once and replays it at every position. Every family's text decoder
/// implements it (Llama, Gemma3n, Gemma4 text, Qwen2-VL text); the step is the same kernels as the plain
/// <see cref="IDecoder.Step"/>, with positions and ids read on the device.
/// </summary>
public interface IGraphDecodable : IDecoder
{
    /// <summary>The device of the weights, or null on the host (no graph).</summary>
    CudaDevice? Device { get; }

    /// <summary>Tokens processed so far (the next token's position).</summary>
    int Position { get; }

    /// <summary>Positions the KV caches hold. A model reallocates its caches only to grow them, so an unchanged capacity
    /// means a captured graph's cache addresses still hold.</summary>
    int CacheCapacity { get; }

    /// <summary>Rewinds (or advances) the host's bookkeeping to <paramref name="position"/>: every cache's length and the
    /// position, as after a replay that ran on the device.</summary>
    void Rewind(int position);

    /// <summary>Null when every step can run from device state, else why not (named in the decoder's exception).</summary>
    string? GraphUnsupported { get; }

    /// <summary>While set, steps read their position from the device (the caches append and attend at it).</summary>
    DeviceStep? DeviceStep { get; set; }

    /// <summary>One decode step of the token whose id lives in device memory ([1] int64) at the device position:
    /// logits [1, vocab], with no read-back and no upload (capturable).</summary>
    Tensor DeviceForward(Tensor id);
}

/// <summary>
/// Greedy decoding of a one-rank text decoder on a GPU (<see cref="IGraphDecodable"/>: every family) with each step
/// replayed from a CUDA graph: one cudaGraphLaunch per token instead of hundreds of kernel launches and their host work.
/// <para>What changes from step to step lives in device memory: the input id and the position (<see cref="DeviceStep"/>);
/// the step ends with the argmax (<c>torch.topk(logits, 1)</c>) written as the next input and the position advanced. Every
/// tensor of a step comes from a <see cref="CudaArena"/>, so a replay's allocations land where the captured ones did.</para>
/// <para>The first step runs eagerly (kernels compiled, the arena sized), the second is captured; a capture that fails
/// leaves <see cref="FallbackReason"/> set and every step eager (still from device state). The same kernels run either
/// way, so the tokens equal the plain loop's.</para>
/// <para>Two ways to drive it: <see cref="Decode"/> (the argmax fed back on the device, one 8-byte read per token: the
/// bench), and as the <see cref="IDecoder"/> of the one <see cref="DecodeLoop"/> (each <see cref="Step"/> takes the
/// token from the host, so teacher forcing and the top-k log-probabilities work as in the plain loop; the logits of a
/// replay are a view of the arena, valid until the next step).</para>
/// </summary>
public sealed class CudaGraphDecoder : IDecoder, IDisposable
{
    private readonly IGraphDecodable _model;
    private readonly CudaDevice _device;
    private readonly nint _stream;
    private CudaArena _arena;
    private readonly Tensor _id, _pos, _scratch;
    private nint _graph, _exec;
    private Tensor? _logits;                 // the captured step's logits (arena memory every replay writes)
    private int _capturedCapacity;
    private bool _warm;                      // one eager step has run (kernels compiled, arena sized)

    /// <summary>Why steps run eagerly (the capture failed), or null.</summary>
    public string? FallbackReason { get; private set; }
    /// <summary>Nodes of the captured step (kernels and copies), 0 before the capture.</summary>
    public int GraphNodes { get; private set; }
    /// <summary>Arena bytes one step uses.</summary>
    public long StepBytes { get; private set; }
    /// <summary>Steps replayed from the graph since construction.</summary>
    public int Replays { get; private set; }

    /// <param name="arenaBytes">The step's device memory (every tensor of one step; Gemma3n's 262k-vocab logits and
    /// soft cap included).</param>
    public CudaGraphDecoder(IGraphDecodable model, long arenaBytes = 64L << 20)
    {
        _model = model;
        if (model.Context.TpSize != 1 || model.Context.PpSize != 1)
            throw new NotSupportedException($"graph decoding runs one rank (tp 1, pp 1), not tp {model.Context.TpSize} x pp {model.Context.PpSize}");
        if (model.GraphUnsupported is { } why) throw new NotSupportedException($"graph decoding: {why}");
        if (model.Sink.Inner is not NoCapture)
            throw new NotSupportedException("graph decoding records no activations (a replay runs no host code): build the model without a sink");
        _device = model.Device ?? throw new ArgumentException("graph decoding needs a model whose weights are on a GPU");
        _device.MakeCurrent();
        _stream = _device.CreateStream();                                      // retired by Dispose
        using (_device.UseStream(_stream))
        {
            _id = CudaTensors.Zeros(_device, DType.Int64, 1);
            _pos = CudaTensors.Zeros(_device, DType.Int32, 1);
            _scratch = CudaTensors.Zeros(_device, DType.Int32, 1);
            _arena = new CudaArena(_device, arenaBytes);
        }
    }

    /// <summary>The model's layout (<see cref="IDecoder.Context"/>).</summary>
    public ParallelContext Context => _model.Context;

    /// <summary>The model's sink (<see cref="IDecoder.Sink"/>; it records nothing).</summary>
    public StepSink Sink => _model.Sink;

    /// <summary>The model's <see cref="IDecoder.StartSequence"/>; caches that grew drop the captured graph (their addresses moved).</summary>
    public void StartSequence(int positions)
    {
        _model.StartSequence(positions);
        if (_exec != 0 && _model.CacheCapacity != _capturedCapacity) Drop();
    }

    /// <summary>
    /// One decode step of the one <see cref="DecodeLoop"/>: <paramref name="token"/> at the model's position, replayed from
    /// the graph (the first step eager, the second captured). Logits [1, vocab], a view of the step's arena.
    /// </summary>
    public Tensor? Step(long token)
    {
        _device.Synchronize();                                              // the prefill or the last pick (default stream) is done
        using var flow = _device.UseStream(_stream);
        CudaOps.CopyInto(Tensor.FromArray([token], 1), _id);
        int position = _model.Position;
        CudaOps.CopyInto(Tensor.FromArray([position], 1), _pos);
        _model.DeviceStep = new DeviceStep(_pos, _scratch);
        try
        {
            if (_exec == 0 && (FallbackReason is not null || !_warm)) return EagerStep(readId: false).Logits;
            if (_exec == 0) Capture();
            if (_exec == 0) return EagerStep(readId: false).Logits;
            Replay();
            CudaRuntime.StreamSynchronize(_stream);                         // the pick reads the logits on the default stream
            return _logits;
        }
        finally { _model.DeviceStep = null; }
    }

    /// <summary>
    /// <paramref name="steps"/> greedy tokens after the model's current position, the first step's input being
    /// <paramref name="first"/> (the prompt's argmax): what the plain loop `logits = Step(next); next = argmax` picks.
    /// </summary>
    public long[] Decode(long first, int steps)
    {
        var tokens = new long[steps];
        _device.Synchronize();                                              // the prefill (another stream) is done
        using var flow = _device.UseStream(_stream);
        CudaOps.CopyInto(Tensor.FromArray([first], 1), _id);
        CudaOps.CopyInto(Tensor.FromArray([_model.Position], 1), _pos);
        _model.DeviceStep = new DeviceStep(_pos, _scratch);
        try
        {
            for (int s = 0; s < steps; s++)
            {
                if (_exec == 0 && FallbackReason is null && _warm) Capture();
                if (_exec == 0) { tokens[s] = EagerStep(readId: true).Id; continue; }
                Replay();
                tokens[s] = ReadId();
            }
        }
        finally { _model.DeviceStep = null; }
        return tokens;
    }

    private void Replay()
    {
        if (_model.Position + 1 > _model.CacheCapacity)
            throw new InvalidOperationException($"KV cache of {_model.CacheCapacity} positions cannot take 1 more after {_model.Position}");
        CudaGraphApi.Launch(_exec, _stream);
        _model.Rewind(_model.Position + 1);                                 // host bookkeeping of what the replay did
        Replays++;
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
        _model.Rewind(position + count);
        return count > 0 ? ms / count : double.NaN;
    }

    /// <summary>GPU time per kernel of one step run eagerly with the graph's kernels (events around each launch), at the model's position.</summary>
    public List<(string Name, int Count, double Ms)> ProfileStep()
    {
        using var flow = _device.UseStream(_stream);
        int position = _model.Position;
        CudaOps.CopyInto(Tensor.FromArray([position], 1), _pos);
        _model.DeviceStep = new DeviceStep(_pos, _scratch);
        try
        {
            _arena.Reset();
            using var profiler = KernelProfiler.Start();
            using (_arena.Use()) Run();
            return profiler.Report();
        }
        finally
        {
            _model.DeviceStep = null;
            _model.Rewind(position);
        }
    }

    // One step run eagerly in the arena (before a capture: this sizes it). A step that needs more than the arena holds
    // (Qwen2-VL's biased q/k/v linears convert their weights to float32 every step: 12 MiB a layer at 1.5B) runs again
    // in an arena twice the size it reached; nothing of the failed try stays: the position is rewound, and the device
    // id and position are only written at the step's end.
    private (Tensor Logits, long Id) EagerStep(bool readId)
    {
        int position = _model.Position;
        Tensor logits;
        for (;;)
        {
            _arena.Reset();
            try
            {
                using (_arena.Use()) logits = Run();
                break;
            }
            catch (Exception e) when (Exhausted(e) is { } need && _exec == 0)
            {
                _model.Rewind(position);
                _device.Synchronize();                                      // the failed try's kernels are done with the old block
                long bytes = Math.Max(2 * need, 2 * _arena.Capacity);
                _arena.Dispose();
                _arena = new CudaArena(_device, bytes);
            }
        }
        StepBytes = _arena.Used;
        _warm = true;
        if (!readId) CudaRuntime.StreamSynchronize(_stream);
        return (logits, readId ? ReadId() : 0);
    }

    // One decode step: logits of the token in _id at position _pos, argmax into _id, _pos + 1.
    private Tensor Run()
    {
        var logits = _model.DeviceForward(_id);                             // [1, vocab]
        var (_, pick) = TopK.Forward(logits.Select(0, 0), 1);               // [1] int64
        CudaDecodeOps.Advance(_pos, _id, pick, 1);
        return logits;
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
            using (_arena.Use()) _logits = Run();
            _graph = CudaGraphApi.EndCapture(_stream);
            _exec = CudaGraphApi.Instantiate(_graph);
            GraphNodes = CudaGraphApi.NodeCount(_graph);
            _capturedCapacity = _model.CacheCapacity;
        }
        catch (Exception e)
        {
            CudaGraphApi.AbandonCapture(_stream);
            if (_graph != 0) { CudaGraphApi.Destroy(_graph); _graph = 0; }
            _exec = 0;
            _logits = null;
            FallbackReason = e.GetType().Name + ": " + e.Message;
        }
        finally { _model.Rewind(position); }                                // the capture ran nothing
    }

    // The arena's shortfall when the step failed for it (the model wraps it in its module's exception), else null.
    private static long? Exhausted(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is CudaArena.ExhaustedException x) return x.Needed;
        return null;
    }

    private void Drop()
    {
        _warm = false;                                                      // the next step runs eagerly first (re-sizes the arena)
        if (_exec != 0) CudaGraphApi.DestroyExec(_exec);
        if (_graph != 0) CudaGraphApi.Destroy(_graph);
        _exec = _graph = 0;
        _logits = null;
    }

    private long ReadId() => _id.ToHost().ToInt64Array()[0];

    public void Dispose()
    {
        Drop();
        _arena.Dispose();
        if (!_retired) _device.RetireStream(_stream);
        _retired = true;
    }

    private bool _retired;
}
