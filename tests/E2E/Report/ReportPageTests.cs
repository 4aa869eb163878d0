using System.Diagnostics;
using Microsoft.Playwright;

namespace Harness.Tests.E2E.Report;

/// <summary>
/// The nightly report as a person sees it: `harness run --report DIR` writes index.html, and headless Chromium
/// (Debian's chromium, through Microsoft.Playwright) renders the summary, a layer plot and the token view, with a
/// failing scenario shown as failing.
/// </summary>
[Collection(ReportPageCollection.Name)]
public sealed class ReportPageTests(ReportPageFixture fixture)
{
    [SkippableFact]
    public async Task Summary_lists_every_scenario_with_the_failing_one_marked()
    {
        var page = await fixture.OpenAsync();
        var rows = page.Locator("#summary tbody tr");
        Assert.Equal(2, await rows.CountAsync());
        var failing = page.Locator($"#summary tr.fail[data-id='{ReportPageFixture.FailingId}']");
        Assert.Equal(1, await failing.CountAsync());
        Assert.Contains("model.layers.0.post_attention_layernorm", await failing.InnerTextAsync());
        Assert.Equal(1, await page.Locator($"#summary tr.pass[data-id='{ReportPageFixture.PassingId}']").CountAsync());
        Assert.True(await page.Locator($".scenario.failed[data-id='{ReportPageFixture.FailingId}']").IsVisibleAsync());
    }

    [SkippableFact]
    public async Task Each_scenario_has_a_rendered_layer_plot()
    {
        var page = await fixture.OpenAsync();
        var plots = page.Locator("svg.layer-plot");
        Assert.Equal(2, await plots.CountAsync());
        var box = await plots.First.BoundingBoxAsync();
        Assert.NotNull(box);
        Assert.True(box!.Width > 100 && box.Height > 50, $"layer plot renders at {box.Width}x{box.Height}");
        // the failing scenario's plot marks its failing modules
        var failingPlot = page.Locator($".scenario[data-id='{ReportPageFixture.FailingId}'] svg.layer-plot");
        Assert.True(await failingPlot.Locator("title").CountAsync() > 0);
    }

    [SkippableFact]
    public async Task Token_view_shows_the_generation_side_by_side()
    {
        var page = await fixture.OpenAsync();
        var tokens = page.Locator($".scenario[data-id='{ReportPageFixture.FailingId}'] .tokens");
        Assert.True(await tokens.IsVisibleAsync());
        Assert.True(await tokens.Locator(".token").CountAsync() > 0);
    }

    [SkippableFact]
    public async Task Page_loads_nothing_from_outside()
    {
        var page = await fixture.OpenAsync();
        var html = await page.ContentAsync();
        Assert.DoesNotContain("<script src", html);
        Assert.DoesNotContain("<link", html);
        Assert.Empty(fixture.ExternalRequests);
    }
}

[CollectionDefinition(Name)]
public sealed class ReportPageCollection : ICollectionFixture<ReportPageFixture>
{
    public const string Name = "report page";
}

/// <summary>
/// Runs the CLI once to write a report (one scenario broken by an injected fault, one healthy; offline, no Python),
/// finds or installs Chromium (Debian's package; HARNESS_REQUIRE_BROWSER=1 turns a missing browser into a failure),
/// and opens the page.
/// </summary>
public sealed class ReportPageFixture : IAsyncLifetime
{
    public const string FailingId = "llama/tp2-sp/input-ids/fp32/fault=sp-residual-first-slice";
    public const string FailingFilter = "llama/tp2-sp/input-ids/fp32";
    public const string PassingId = "gemma4/moe/tp1/text/fp32/fault=sp-residual-first-slice";
    public const string PassingFilter = "gemma4/moe/tp1/text/fp32";
    private const string Chromium = "/usr/bin/chromium";

    private IPlaywright? _playwright;
    private IBrowser? _browser;
    private string? _skip;

    public string ReportDirectory { get; } = Path.Combine(Path.GetTempPath(), "harness-e2e-report-" + Guid.NewGuid().ToString("N"));
    public List<string> ExternalRequests { get; } = new();

    public async Task InitializeAsync()
    {
        // Two filters add up; the fault breaks the Llama SP scenario and leaves Gemma4's MoE decoder alone.
        var run = CliProcess.Run("run", FailingFilter + ",!fault,!pp", PassingFilter + ",!fault", "--offline", "--fault", "sp-residual-first-slice", "--report", ReportDirectory);
        if (run.ExitCode != 1 || !File.Exists(Path.Combine(ReportDirectory, "index.html")))
            throw new InvalidOperationException($"harness run should fail one scenario and write index.html:\n{run}");
        if (!File.Exists(Chromium) && !TryInstallChromium(out var why))
        {
            if (Environment.GetEnvironmentVariable("HARNESS_REQUIRE_BROWSER") == "1")
                throw new InvalidOperationException($"HARNESS_REQUIRE_BROWSER=1 but {Chromium} is missing and could not be installed: {why}");
            _skip = $"no Chromium at {Chromium} ({why})";
            return;
        }
        _playwright = await Playwright.CreateAsync();
        _browser = await _playwright.Chromium.LaunchAsync(new()
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        });
    }

    public async Task<IPage> OpenAsync()
    {
        Skip.If(_skip is not null, _skip);
        var page = await _browser!.NewPageAsync();
        page.Request += (_, request) =>
        {
            if (!request.Url.StartsWith("file:", StringComparison.Ordinal) && !request.Url.StartsWith("data:", StringComparison.Ordinal))
                lock (ExternalRequests) ExternalRequests.Add(request.Url);
        };
        await page.GotoAsync("file://" + Path.Combine(ReportDirectory, "index.html"));
        return page;
    }

    public async Task DisposeAsync()
    {
        if (_browser is not null) await _browser.DisposeAsync();
        _playwright?.Dispose();
        try { Directory.Delete(ReportDirectory, recursive: true); } catch (IOException) { }
    }

    private static bool TryInstallChromium(out string why)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("apt-get", "install -y -qq chromium")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                Environment = { ["DEBIAN_FRONTEND"] = "noninteractive" },
            })!;
            var err = p.StandardError.ReadToEndAsync();
            p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(600_000)) { p.Kill(); why = "apt-get install chromium timed out"; return false; }
            why = p.ExitCode == 0 ? "" : $"apt-get install chromium exited {p.ExitCode}: {err.Result.Trim()}";
            return p.ExitCode == 0 && File.Exists(Chromium);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            why = e.Message;
            return false;
        }
    }
}
