using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// One sequence of a <see cref="Gemma4ForCausalLM"/> as the one decode loop's <see cref="IDecoder"/>, and on a GPU as a
/// <see cref="IGraphDecodable"/> (<see cref="CudaGraphDecoder"/>). The caches are kept from sequence to sequence and
/// reallocated only to grow (so a captured graph's cache addresses hold).
/// </summary>
public sealed class Gemma4TextDecoder(Gemma4ForCausalLM model) : IGraphDecodable
{
    private Gemma4Sequence? _sequence;
    private DeviceStep? _deviceStep;

    public Gemma4ForCausalLM Model => model;
    public ParallelContext Context => model.Context;
    public StepSink Sink => model.Sink;

    /// <summary>The sequence being decoded (after <see cref="StartSequence"/>).</summary>
    public Gemma4Sequence Sequence => _sequence ?? throw new InvalidOperationException("StartSequence first");

    /// <summary>A new sequence with room for <paramref name="positions"/> positions (max_position_embeddings checked).</summary>
    public void StartSequence(int positions)
    {
        if (_sequence is null || _sequence.Capacity < positions)
        {
            _sequence = model.NewSequence(positions);
            _sequence.SetDevicePosition(_deviceStep?.Position);
        }
        else
        {
            DecodeLoop.CheckPositions(positions, () => model.Config.MaxPositionEmbeddings);
            _sequence.Rewind(0);
        }
        model.EnsureRopeTables(_sequence.Capacity);
    }

    /// <summary>The prompt's forward (ids [T]): logits of the last <paramref name="logitsToKeep"/> rows (0: all).</summary>
    public Tensor Prefill(Tensor ids, int logitsToKeep = 1) => model.Forward([Sequence], [ids], null, logitsToKeep)[0];

    /// <summary>One decode step (<see cref="IDecoder.Step"/>): logits [1, vocab].</summary>
    public Tensor? Step(long token) => model.Forward(Sequence, Tensor.FromArray([token], 1));

    public Cuda.CudaDevice? Device => model.Device;
    public int Position => Sequence.Position;
    public int CacheCapacity => Sequence.Capacity;
    public void Rewind(int position) => Sequence.Rewind(position);
    public string? GraphUnsupported => model.GraphUnsupported;

    public DeviceStep? DeviceStep
    {
        get => _deviceStep;
        set
        {
            _deviceStep = value;
            _sequence?.SetDevicePosition(value?.Position);
        }
    }

    public Tensor DeviceForward(Tensor id) =>
        model.DeviceForward(Sequence, id, _deviceStep ?? throw new InvalidOperationException("DeviceForward needs a DeviceStep"));

    /// <summary>Greedy decoding of a prompt [T] through <see cref="DecodeLoop"/> (this decoder, or a graph decoder over it).</summary>
    public static Generation Generate(IDecoder decoder, Gemma4TextDecoder text, Tensor prompt, DecodeRequest request) =>
        DecodeLoop.Run(decoder, prompt.NumEl, () => text.Prefill(prompt, request.PrefillLogitsToKeep), request);
}
