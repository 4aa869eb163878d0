namespace Harness.Engine.Distributed;

/// <summary>Why a collective failed; tests and callers branch on it, the message says the rest.</summary>
public enum CollectiveFailure
{
    /// <summary>Ranks posted different ops, dtypes, shapes, dims or roots.</summary>
    Mismatch,
    /// <summary>A rank did not arrive (or did not send / receive) within the world's timeout, or has finished.</summary>
    Timeout,
    /// <summary>Another rank of the world failed, so this call was released instead of waiting.</summary>
    PeerFailed,
    /// <summary>The call itself is invalid for every rank (dim out of range, size not divisible, bad root or peer).</summary>
    InvalidArgument,
    /// <summary>The group was left unusable by an earlier timeout (its ranks no longer agree on the call sequence).</summary>
    Broken,
}

/// <summary>
/// A collective that did not complete. The message starts with the group's name ("tp[0,1]: ...") and names each
/// rank's call, so that one rank's log is enough to see what the others were doing.
/// </summary>
public sealed class CollectiveException(CollectiveFailure failure, string message, Exception? inner = null)
    : Exception(message, inner)
{
    public CollectiveFailure Failure { get; } = failure;
}
