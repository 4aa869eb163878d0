using Harness.Engine.Tensors;

namespace Harness.Engine.Distributed;

/// <summary>A group of one rank: every collective is the identity (a copy), as torch.distributed with world size 1.</summary>
public sealed class SingleProcessGroup(string name = "single") : IProcessGroup
{
    public int Rank => 0;
    public int WorldSize => 1;
    public string Name { get; } = name;

    public Tensor AllReduce(Tensor t) => t.Clone();
    public Tensor AllGather(Tensor t, int dim = 0) => t.Clone();
    public Tensor ReduceScatter(Tensor t, int dim = 0) => t.Clone();
    public Tensor Broadcast(Tensor t, int root) => root == 0 ? t.Clone()
        : throw new ArgumentOutOfRangeException(nameof(root), $"broadcast root {root} in a group of one rank");
    public void Send(Tensor t, int dst) => throw new InvalidOperationException($"send to rank {dst} in a group of one rank ({Name})");
    public Tensor Recv(int src) => throw new InvalidOperationException($"recv from rank {src} in a group of one rank ({Name})");
    public void Barrier() { }
}
