using System.Diagnostics;
using System.Text;

namespace Harness.Tests.E2E;

/// <summary>Runs the harness CLI as a user does: `dotnet harness.dll ARGS` in its own process, from the repository root.</summary>
public static class CliProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string All => Stdout + Stderr;
        public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
    }

    /// <summary>harness.dll, copied next to this test assembly (the Harness project is referenced).</summary>
    public static string HarnessDll
    {
        get
        {
            var path = Path.Combine(AppContext.BaseDirectory, "harness.dll");
            if (!File.Exists(path)) throw new FileNotFoundException($"harness.dll is not next to the test assembly: {path}", path);
            return path;
        }
    }

    /// <summary>The repository root (the folder with Harness.sln) above the test assembly.</summary>
    public static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Harness.sln"))) return dir.FullName;
            throw new DirectoryNotFoundException($"no Harness.sln above {AppContext.BaseDirectory}");
        }
    }

    public static Result Run(params string[] args) => Run(args, null);

    public static Result Run(string[] args, IReadOnlyDictionary<string, string?>? environment, int timeoutSeconds = 300)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = RepositoryRoot,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(HarnessDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["CI"] = "true";          // plain line output, whatever the test runner's terminal
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        if (environment is not null)
            foreach (var (k, v) in environment)
                if (v is null) psi.Environment.Remove(k);
                else psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start dotnet");
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"harness {string.Join(' ', args)} ran past {timeoutSeconds} s\n{stdout}\n{stderr}");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.ToString(), stderr.ToString());
    }
}
