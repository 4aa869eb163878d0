namespace Harness.Reports;

/// <summary>The page's inline stylesheet: system fonts only, nothing fetched.</summary>
internal static class HtmlStyle
{
    public const string Css = """
        body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
        h1 { margin: 0 0 .3em; } h2 { margin-top: 1.6em; }
        header dl { display: flex; flex-wrap: wrap; gap: .3em 1.5em; margin: .5em 0; }
        header dt { font-weight: 600; display: inline; } header dt::after { content: ": "; } header dd { display: inline; margin: 0; }
        table { border-collapse: collapse; margin: .5em 0; }
        th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }
        th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
        code, .mono, table.modules, .tokens table { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; }
        .pass .verdict, .overall.pass, .badge.pass { color: #1a7f37; font-weight: 600; }
        .fail .verdict, .overall.fail, .badge.fail { color: #cf222e; font-weight: 600; }
        #summary tr.fail, table.modules tr.fail, #baseline tr.regression { background: #ffebe9; }
        #summary tr.pass { background: #f0fff4; }
        table.modules tr.extra { color: #777; }
        .scenario { border-top: 3px solid #ccc; margin-top: 2em; padding-top: .5em; }
        .scenario.failed { border-top-color: #cf222e; } .scenario.passed { border-top-color: #1a7f37; }
        .reason { font-weight: 500; }
        svg.layer-plot { display: block; max-width: 100%; height: auto; margin: .5em 0; }
        .token.match td { color: #555; }
        .token.divergent td { background: #ffd8d3; font-weight: 700; }
        .token.after td { color: #999; font-style: italic; }
        .chosen { font-weight: 700; text-decoration: underline; }
        table.step-grid td.fail { background: #ffd8d3; font-weight: 700; } table.step-grid td.pass { background: #f0fff4; }
        table.step-grid { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; }
        #baseline .added li { color: #0969da; } #baseline .removed li { color: #777; }
        """;
}
