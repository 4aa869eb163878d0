namespace Harness;

/// <summary>Command-line entry: verbs are added by their own files.</summary>
public static class Cli
{
    public static int Run(string[] args)
    {
        if (args.Length > 0 && args[0] == "bench") return Bench.GemmBenchmark.Run(args[1..]);
        Console.Error.WriteLine("usage: harness <command>; commands: bench");
        return args.Length == 0 ? 1 : 2;
    }
}
