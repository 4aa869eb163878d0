namespace Harness.Reference;

/// <summary>The Python reference bridge (HF transformers in a supervised worker) arrives with issue 3.</summary>
public static class ReferenceInfo
{
    public const string PythonVariable = "HARNESS_PYTHON";
}
