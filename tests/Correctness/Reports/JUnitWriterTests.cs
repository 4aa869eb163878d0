using System.Xml.Linq;
using Harness.Reports;

namespace Harness.Tests.Correctness.Reports;

/// <summary>junit.xml: one suite, one case per scenario, a failure naming the first bad module, escaped text.</summary>
public class JUnitWriterTests
{
    [Fact]
    public void Junit_xml_parses_with_the_right_counts_and_failure_message()
    {
        using var dir = new SyntheticScenarios.TempDir();
        var report = SyntheticScenarios.Report(SyntheticScenarios.Record(fail: false), SyntheticScenarios.Record(fail: true, fault: "a<b&\"c\""),
            SyntheticScenarios.Record(fail: true, expectFailure: true, fault: "caught"));
        ReportWriter.WriteAll(report, dir.Path);

        var doc = XDocument.Load(dir.File(ReportWriter.JUnitFile));
        var suite = Assert.Single(doc.Root!.Elements("testsuite"));
        Assert.Equal("harness", (string?)suite.Attribute("name"));
        Assert.Equal("3", (string?)suite.Attribute("tests"));
        Assert.Equal("1", (string?)suite.Attribute("failures"));
        var cases = suite.Elements("testcase").ToList();
        Assert.Equal(3, cases.Count);
        Assert.All(cases, c => Assert.Equal("tiny-llama", (string?)c.Attribute("classname")));
        Assert.Equal("1.25", (string?)cases[0].Attribute("time"));
        Assert.Null(cases[0].Element("failure"));
        Assert.Null(cases[2].Element("failure")); // failed as expected: a pass

        var failed = cases[1];
        Assert.Equal("llama/tp2/input-ids/fp32/fault=a<b&\"c\"", (string?)failed.Attribute("name"));
        var failure = failed.Element("failure")!;
        var message = (string?)failure.Attribute("message");
        Assert.StartsWith("first bad module model.layers.1.mlp: ", message);
        Assert.Contains("rank 1", message);
        Assert.Contains("tokens: 3/5 failed", failure.Value);
        Assert.Equal("1.2.3+abc", suite.Element("properties")!.Elements("property")
            .Single(p => (string?)p.Attribute("name") == "engine_version").Attribute("value")!.Value);
    }

    [Fact]
    public void Control_characters_are_dropped_not_written_as_invalid_xml()
    {
        var s = SyntheticScenarios.Record(fail: true) with { Reason = "bad\u0001value \uD800 end" };
        using var stream = new MemoryStream();
        JUnitWriter.Write(SyntheticScenarios.Report(s), stream);
        stream.Position = 0;
        var failure = XDocument.Load(stream).Descendants("failure").Single();
        Assert.EndsWith("badvalue  end", (string?)failure.Attribute("message"));
    }
}
