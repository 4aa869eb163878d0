namespace Harness;

/// <summary>Command-line entry: verbs are added by their own files.</summary>
public static class Cli
{
    public static int Run(string[] args)
    {
        Console.Error.WriteLine("usage: harness <command>; commands: bench");
        return args.Length == 0 ? 1 : 2;
    }
}
