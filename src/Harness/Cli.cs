namespace Harness;

/// <summary>Command-line entry: one verb per file; an unknown verb lists the known ones.</summary>
public static class Cli
{
    private static readonly (string Name, string Help, Func<string[], int> Run)[] Verbs =
    [
        ("bench", "fp32 GEMM GFLOP/s, normal and batch-invariant, beside torch.matmul measured in the same run", Bench.GemmBenchmark.Run),
        ("check-kernels", "every GEMM micro-kernel this CPU runs vs a float64 reference, plus batch invariance", Bench.KernelSelfCheck.Run),
        ("fixtures", "fixtures record [filter]: record the reference outputs of the catalog with the live reference",
            a => a.Length >= 1 && a[0] == "record" ? Commands.FixturesCommand.Record(a.Length > 1 ? a[1] : null, null) : 2),
    ];

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            Usage(Console.Error);
            return args.Length == 0 ? 1 : 0;
        }
        foreach (var verb in Verbs)
            if (verb.Name == args[0]) return verb.Run(args[1..]);
        Console.Error.WriteLine($"harness: unknown command '{args[0]}'");
        Usage(Console.Error);
        return 2;
    }

    private static void Usage(TextWriter w)
    {
        w.WriteLine("usage: harness <command> [options]");
        foreach (var (name, help, _) in Verbs) w.WriteLine($"  {name,-14} {help}");
    }
}
