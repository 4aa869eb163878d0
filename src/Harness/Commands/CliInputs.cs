using System.CommandLine;
using System.Globalization;
using System.Text;
using Harness.Engine.IO;

namespace Harness.Commands;

/// <summary>
/// What every verb checks the same way before any work starts (issue 24): the folders it will write into, the options
/// two verbs share (--growth-factor), and what it prints (control characters escaped).
/// </summary>
internal static class CliInputs
{
    /// <summary>--growth-factor X: a finite number >= 1 (NaN, 0 and negatives are usage errors, exit 2).</summary>
    public static Option<double> GrowthFactor(string description)
    {
        var growth = new Option<double>("--growth-factor") { Description = description, DefaultValueFactory = _ => 2.0, HelpName = "X" };
        growth.Validators.Add(r =>
        {
            var g = r.GetValueOrDefault<double>();
            if (!double.IsFinite(g) || g < 1) r.AddError($"--growth-factor must be a number >= 1, got {g.ToString(CultureInfo.InvariantCulture)}");
        });
        return growth;
    }

    /// <summary>
    /// A folder the verb will write into (run --report, report --out), checked before any work: not empty, not a file or
    /// device, creatable, and writable (a probe file is made and removed). Returns the full path; a problem is an
    /// <see cref="InputException"/> naming the option and the path (exit 2).
    /// </summary>
    public static string OutputFolder(string? path, string option)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new InputException($"{option} \"{Escape(path ?? "")}\"", "an empty path is not a folder");
        string full;
        try
        {
            full = Path.GetFullPath(path);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new InputException($"{option} {Escape(path)}", $"not a usable path: {e.Message}");
        }
        var kind = InputFiles.KindOf(full);
        if (kind is not (FileKind.Missing or FileKind.Directory))
            throw new InputException($"{option} {full}", $"is {InputFiles.Describe(kind)}, not a folder");
        try
        {
            Directory.CreateDirectory(full);
            var probe = Path.Combine(full, $".harness-write-probe-{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid():N}");
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"{option} {full}", $"cannot write there: {e.Message.Split('\n')[0]}");
        }
        return full;
    }

    /// <summary>
    /// Text as the terminal should show it: C0 and C1 control characters (ESC, BEL, backspace, carriage return, ...) and DEL
    /// written as \xNN (\u00NN for C1), line feeds and tabs kept. Model types, tensor names and folder names come from
    /// files we are handed; a raw ESC would let them drive the terminal.
    /// </summary>
    public static string Escape(string text)
    {
        int i = 0;
        while (i < text.Length && !NeedsEscape(text[i])) i++;
        if (i == text.Length) return text;
        var sb = new StringBuilder(text.Length + 16).Append(text, 0, i);
        for (; i < text.Length; i++)
        {
            char c = text[i];
            if (!NeedsEscape(c)) sb.Append(c);
            else if (c < 0x80) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    private static bool NeedsEscape(char c) => c is not ('\n' or '\t') && (c < 0x20 || c is >= '\u007f' and <= '\u009f');

    /// <summary>A TextWriter that escapes control characters (<see cref="Escape"/>) in everything written through it.</summary>
    public sealed class EscapingWriter(TextWriter inner) : TextWriter
    {
        public override Encoding Encoding => inner.Encoding;
        public override IFormatProvider FormatProvider => inner.FormatProvider;
        [System.Diagnostics.CodeAnalysis.AllowNull]
        public override string NewLine { get => inner.NewLine; set => inner.NewLine = value; }
        public override void Write(char value)
        {
            if (NeedsEscape(value) && value != '\r') inner.Write(Escape(value.ToString()));
            else inner.Write(value);
        }
        public override void Write(string? value) => inner.Write(value is null ? null : EscapeKeepingNewLines(value));
        public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));
        public override void WriteLine(string? value) => inner.WriteLine(value is null ? null : EscapeKeepingNewLines(value));
        public override void Flush() => inner.Flush();

        // "\r\n" (a Windows new line in our own text) stays; a lone "\r" is escaped (it would overwrite the line).
        private static string EscapeKeepingNewLines(string s) => s.Contains('\r', StringComparison.Ordinal)
            ? string.Join("\r\n", s.Split("\r\n").Select(Escape))
            : Escape(s);
    }
}
