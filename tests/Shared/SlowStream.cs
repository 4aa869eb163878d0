namespace Harness.Tests.Shared;

/// <summary>
/// The tests' slow writes: writes in 4 KiB pieces, flushed, with a sleep after each, so that a test can kill a writer
/// mid-write or make two writers overlap. Passed to AtomicFile as its <c>through</c> input (the shipped CLI has no such
/// option: issue 20, test hooks out of production code). Linked into the Correctness and E2E test assemblies.
/// </summary>
public sealed class SlowStream(Stream inner, int sleepMs) : Stream
{
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => inner.Length;
    public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        while (buffer.Length > 0)
        {
            int n = Math.Min(4096, buffer.Length);
            inner.Write(buffer[..n]);
            inner.Flush();
            buffer = buffer[n..];
            Thread.Sleep(sleepMs);
        }
    }

    /// <summary>The <c>through</c> input of AtomicFile / ReportWriter: every write slowed by <paramref name="sleepMs"/> ms per 4 KiB.</summary>
    public static Func<Stream, Stream> Through(int sleepMs) => s => new SlowStream(s, sleepMs);
}
