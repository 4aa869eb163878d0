using System.Globalization;
using System.Text;
using System.Xml;

namespace Harness.Reports;

/// <summary>
/// junit.xml for CI: &lt;testsuites&gt; with one &lt;testsuite name="harness"&gt;, one &lt;testcase&gt; per scenario
/// (classname = model, name = id, time in seconds) and, for a scenario whose verdict is fail, a &lt;failure&gt; whose
/// message names the first bad module and the reason and whose text lists the failing modules. Characters XML 1.0 cannot
/// hold are dropped; everything else is escaped by <see cref="XmlWriter"/>.
/// </summary>
public static class JUnitWriter
{
    public const string SuiteName = "harness";

    public static void Write(AccuracyReport report, Stream output)
    {
        ArgumentNullException.ThrowIfNull(report);
        var ci = CultureInfo.InvariantCulture;
        var settings = new XmlWriterSettings { Indent = true, Encoding = new UTF8Encoding(false) };
        using var w = XmlWriter.Create(output, settings);
        w.WriteStartDocument();
        w.WriteStartElement("testsuites");
        w.WriteStartElement("testsuite");
        w.WriteAttributeString("name", SuiteName);
        w.WriteAttributeString("tests", report.Scenarios.Count.ToString(ci));
        w.WriteAttributeString("failures", report.FailedCount.ToString(ci));
        w.WriteAttributeString("errors", "0");
        w.WriteAttributeString("skipped", "0");
        w.WriteAttributeString("time", Seconds(report.Scenarios.Sum(s => double.IsFinite(s.ElapsedSeconds) ? s.ElapsedSeconds : 0)));
        w.WriteAttributeString("timestamp", report.GeneratedAt.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss", ci));

        w.WriteStartElement("properties");
        var e = report.Environment;
        foreach (var (name, value) in new[]
        {
            ("engine_version", e.EngineVersion), ("python_version", e.PythonVersion), ("torch_version", e.TorchVersion),
            ("transformers_version", e.TransformersVersion), ("os", e.Os), ("cpu_model", e.CpuModel),
            ("processor_count", e.ProcessorCount.ToString(ci)), ("gemm_kernel", e.GemmKernel),
        })
        {
            w.WriteStartElement("property");
            w.WriteAttributeString("name", name);
            w.WriteAttributeString("value", Clean(value));
            w.WriteEndElement();
        }
        w.WriteEndElement();

        foreach (var s in report.Scenarios)
        {
            w.WriteStartElement("testcase");
            w.WriteAttributeString("classname", Clean(s.Model));
            w.WriteAttributeString("name", Clean(s.Id));
            w.WriteAttributeString("time", Seconds(s.ElapsedSeconds));
            if (!s.Passed)
            {
                w.WriteStartElement("failure");
                w.WriteAttributeString("message", Clean(FailureMessage(s)));
                w.WriteAttributeString("type", s.ExpectFailure ? "UnexpectedPass" : "AccuracyFailure");
                w.WriteString(Clean(FailureText(s)));
                w.WriteEndElement();
            }
            w.WriteEndElement();
        }
        w.WriteEndElement();
        w.WriteEndElement();
        w.WriteEndDocument();
    }

    /// <summary>"first bad module M: reason" (or just the reason when no module is to blame).</summary>
    public static string FailureMessage(ScenarioRecord s) =>
        s.FirstBadModule is null || s.ExpectFailure ? s.Reason : $"first bad module {s.FirstBadModule}: {s.Reason}";

    private static string FailureText(ScenarioRecord s)
    {
        var sb = new StringBuilder();
        sb.Append(s.Reason).Append('\n');
        if (s.EngineError is not null) sb.Append("engine error: ").Append(s.EngineError).Append('\n');
        foreach (var m in s.Modules.Where(m => m.Failed))
            sb.Append(CultureInfo.InvariantCulture,
                $"{m.Label}: {m.Verdict}; rel L2 {Sci(m.RelL2)}, max abs {Sci(m.MaxAbs)}, {m.Mismatches?.ToString(CultureInfo.InvariantCulture) ?? "-"} of {m.Total?.ToString(CultureInfo.InvariantCulture) ?? "-"} mismatched{(m.Note.Length > 0 ? "; " + m.Note : "")}\n");
        if (s.Tokens is { } t) sb.Append("tokens: ").Append(t.Agreement).Append(": ").Append(t.Reason).Append('\n');
        return sb.ToString();
    }

    private static string Sci(double? v) => v is double d ? d.ToString("0.00E+00", CultureInfo.InvariantCulture) : "-";

    private static string Seconds(double s) => (double.IsFinite(s) ? s : 0).ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>The text without characters XML 1.0 cannot contain (control characters other than tab, LF, CR; lone surrogates).</summary>
    internal static string Clean(string text)
    {
        var sb = new StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { sb.Append(c).Append(text[++i]); continue; }
            if (XmlConvert.IsXmlChar(c)) sb.Append(c);
        }
        return sb.ToString();
    }
}
