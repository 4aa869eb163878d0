namespace Harness.Reference;

/// <summary>Any failure of the reference side; the message says what was asked and what happened.</summary>
public class ReferenceException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>No usable reference interpreter was found or it failed to start.</summary>
public sealed class ReferenceUnavailableException(string message, Exception? inner = null) : ReferenceException(message, inner);

/// <summary>The worker died, hung past its timeout or broke the framing; it has been killed and restarts on the next call.</summary>
public sealed class ReferenceWorkerFailedException(string message) : ReferenceException(message);

/// <summary>Python raised: the worker is alive, the call failed. Carries the Python type and traceback.</summary>
public sealed class ReferencePythonException(string op, string pythonType, string pythonMessage, string traceback)
    : ReferenceException($"reference op '{op}' raised {pythonType}: {pythonMessage}\n--- Python traceback ---\n{traceback}")
{
    public string Op { get; } = op;
    public string PythonType { get; } = pythonType;
    public string PythonMessage { get; } = pythonMessage;
    public string Traceback { get; } = traceback;
}
