using System.Text.RegularExpressions;
using Harness.Reports;

namespace Harness.Tests.Correctness.Reports;

/// <summary>index.html: self-contained, one plot per scenario, failing scenario marked, token divergence highlighted.</summary>
public class HtmlReportWriterTests
{
    private static string Page(out AccuracyReport report, AccuracyReport? baseline = null)
    {
        using var dir = new SyntheticScenarios.TempDir();
        report = SyntheticScenarios.Report(SyntheticScenarios.Record(fail: false), SyntheticScenarios.Record(fail: true, fault: "<x>"));
        ReportWriter.WriteAll(report, dir.Path, baseline);
        return File.ReadAllText(dir.File(ReportWriter.HtmlFile));
    }

    [Fact]
    public void Page_is_self_contained()
    {
        var html = Page(out _);
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.DoesNotContain("http://", html);
        Assert.DoesNotContain("https://", html);
        Assert.DoesNotContain("<script", html);
        Assert.DoesNotContain("<link", html);
        Assert.DoesNotContain("@import", html);
        Assert.DoesNotContain("url(", html);
        Assert.Contains("<style>", html);
    }

    [Fact]
    public void Summary_and_one_layer_plot_per_scenario_with_tooltips_and_the_tolerance_line()
    {
        var html = Page(out var report);
        Assert.Contains("<table id=\"summary\">", html);
        Assert.Contains("2 scenarios: 1 passed, 1 failed", html);
        Assert.Equal(report.Scenarios.Count, Regex.Count(html, "<svg class=\"layer-plot\""));
        Assert.Contains("<title>3: model.norm</title>", html);
        Assert.Contains("<g class=\"tolerance\"><title>tolerance float32: rtol 1.3E-06</title>", html);
        Assert.Contains("log10 relative L2 error", html);
        Assert.Equal(2, Regex.Count(html, "<polyline class=\"series\" data-rank=\"[01]\"") / report.Scenarios.Count);
        // The failing record is a red point in the failing scenario's plot only.
        Assert.Equal(1, Regex.Count(html, "<circle class=\"point fail\""));
        Assert.Contains("<title>model.layers.1.mlp (rank 1, dim 1 [4, 8) of 8): rel L2", html);
    }

    [Fact]
    public void Failing_scenario_is_marked_and_escaped()
    {
        var html = Page(out var report);
        var failing = report.Scenarios[1];
        Assert.Equal("llama/tp2/input-ids/fp32/fault=<x>", failing.Id);
        Assert.Contains("<section class=\"scenario failed\" id=\"scenario-1\" data-id=\"llama/tp2/input-ids/fp32/fault=&lt;x&gt;\">", html);
        Assert.Contains("<section class=\"scenario passed\" id=\"scenario-0\" data-id=\"llama/tp2/input-ids/fp32\">", html);
        Assert.Contains("<tr class=\"fail\" data-id=\"llama/tp2/input-ids/fp32/fault=&lt;x&gt;\">", html);
        Assert.DoesNotContain("<x>", html);
        Assert.Contains("<tr class=\"fail\" data-module=\"model.layers.1.mlp\" data-rank=\"1\">", html);
    }

    [Fact]
    public void Token_alignment_highlights_the_divergent_step_with_both_top_k_lists()
    {
        var html = Page(out _);
        Assert.Equal(2, Regex.Count(html, "<div class=\"tokens\">"));
        Assert.Equal(1, Regex.Count(html, "class=\"token divergent\""));
        Assert.Contains("<tr class=\"token divergent\" data-step=\"3\"><td class=\"num\">3</td><td>13</td><td>42</td></tr>", html);
        Assert.Contains("<tr class=\"token match\" data-step=\"2\"><td class=\"num\">2</td><td>12</td><td>12</td></tr>", html);
        Assert.Contains("<tr class=\"token after\" data-step=\"4\"><td class=\"num\">4</td><td>14</td><td>99</td></tr>", html);
        Assert.Contains("<table class=\"topk\" data-step=\"3\">", html);
        Assert.Contains("<td class=\"chosen\">13</td><td class=\"num\">-0.1000</td><td class=\"chosen\">42</td><td class=\"num\">-0.2000</td>", html);
    }

    [Fact]
    public void Baseline_section_only_with_a_baseline()
    {
        Assert.DoesNotContain("id=\"baseline\"", Page(out _));
        var baseline = SyntheticScenarios.Report(SyntheticScenarios.Record(fail: false), SyntheticScenarios.Record(fail: false, fault: "<x>"));
        var html = Page(out _, baseline);
        Assert.Contains("<section id=\"baseline\">", html);
        Assert.Contains("<tr class=\"regression\" data-id=\"llama/tp2/input-ids/fp32/fault=&lt;x&gt;\">", html);
        Assert.Contains("verdict went from pass to fail", html);
    }
}
