using System.Globalization;

namespace Harness.Tests.Correctness.Models;

/// <summary>The resident bytes of a memory-mapped file in this process (EngineHostMemoryTests; linked into the GPU tests'
/// DeviceWeightsHostMemoryTests).</summary>
public static class MappedPagesProbe
{
    /// <summary>The Rss of every mapping of <paramref name="path"/> in this process, in bytes (/proc/self/smaps: this
    /// file's own mappings, so no other test's pages count).</summary>
    public static long Resident(string path)
    {
        long total = 0;
        bool inFile = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-'))   // a mapping's header line
                inFile = line.EndsWith(" " + path, StringComparison.Ordinal);
            else if (inFile && line.StartsWith("Rss:", StringComparison.Ordinal))
                total += long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        return total;
    }
}
