using Harness.Engine.Tensors;

namespace Harness.Engine.IO;

/// <summary>
/// One header entry: dtype, shape and the byte range [Begin, End) relative to the start of the data buffer
/// (the byte after the header).
/// </summary>
public sealed record TensorInfo(string Name, DType DType, int[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
    public long NumEl => Tensors.Shape.NumEl(Shape);

    public override string ToString() =>
        $"{Name}: {SafetensorsDType.Name(DType)} {Tensors.Shape.Format(Shape)} bytes [{Begin}, {End})";
}
