using System.Globalization;

namespace Harness.Runs;

/// <summary>
/// Token-by-token comparison of greedy generations, with vLLM's <c>check_logprobs_close</c> semantics plus two stated
/// additions:
/// <list type="number">
/// <item>Tokens must match step by step. At the first step where they differ, vLLM accepts the divergence when each
/// side's chosen token is in the other side's top-k at that step. We also require a near tie on the reference side: the
/// reference's logprobs of the two chosen tokens are within <c>margin</c> nats of each other (so its top-2 logprobs are
/// too; the top-2 gap is reported as well). After an accepted divergence the sequences legitimately differ and the rest
/// is not compared.</item>
/// <item>On the matched steps (before any divergence), the logprobs of tokens present in both top-k lists must agree
/// within <c>logprobTolerance</c> (vLLM only checks them at a mismatch). The largest difference is always reported.</item>
/// <item>Unlike vLLM's zip, sequences of different lengths with no divergence over the common length fail: greedy
/// decoding of the same prompt with the same limits must stop at the same step (an EOS or stop-condition bug).</item>
/// </list>
/// </summary>
public static class TokenComparison
{
    /// <summary>Near-tie margin in nats: the reference's logprobs of the two chosen tokens may differ by at most this.</summary>
    public const double DefaultMargin = 0.05;

    /// <summary>float32 logprobs of the same logits agree to ~1e-5; 1e-3 leaves room for different reduction orders.</summary>
    public const double DefaultLogprobTolerance = 1e-3;

    public static TokenReport Run(
        TokenSequence reference,
        TokenSequence engine,
        double margin = DefaultMargin,
        double logprobTolerance = DefaultLogprobTolerance,
        Func<long, string>? decode = null)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(engine);
        var ci = CultureInfo.InvariantCulture;
        int common = Math.Min(reference.Length, engine.Length);
        int prefix = 0;
        while (prefix < common && reference.Tokens[prefix] == engine.Tokens[prefix]) prefix++;

        // Matched steps: logprobs of tokens in both top-k lists.
        double maxDiff = 0;
        int? maxStep = null;
        long? maxToken = null;
        int pairs = 0;
        for (int step = 0; step < prefix; step++)
        {
            var seen = new HashSet<long>();
            foreach (var r in reference.TopK[step])
            {
                if (!seen.Add(r.Token) || engine.LogprobOf(step, r.Token) is not double e) continue;
                pairs++;
                double d = Math.Abs(e - r.Logprob);
                if (double.IsNaN(d)) d = double.IsNaN(e) && double.IsNaN(r.Logprob) ? 0 : double.PositiveInfinity;
                if (d > maxDiff || maxStep is null) (maxDiff, maxStep, maxToken) = (d, step, r.Token);
            }
        }

        var failures = new List<string>();
        var notes = new List<string>();
        var report = new TokenReport
        {
            Verdict = TokenVerdict.Identical,
            Reason = "",
            ReferenceLength = reference.Length,
            EngineLength = engine.Length,
            MatchedPrefix = prefix,
            Margin = margin,
            LogprobTolerance = logprobTolerance,
            MaxLogprobDiff = maxDiff,
            MaxLogprobDiffStep = maxStep,
            MaxLogprobDiffToken = maxToken,
            LogprobPairs = pairs,
            Decode = decode,
        };
        bool accepted = false;

        if (prefix < common)
        {
            int step = prefix;
            long rt = reference.Tokens[step], et = engine.Tokens[step];
            int kr = reference.TopK[step].Count, ke = engine.TopK[step].Count;
            var refSorted = reference.SortedTopK(step);
            double? top2 = refSorted.Count >= 2 ? refSorted[0].Logprob - refSorted[1].Logprob : null;
            double? refOfRef = reference.LogprobOf(step, rt), refOfEng = reference.LogprobOf(step, et);
            double? chosenGap = refOfRef is double a && refOfEng is double b ? a - b : null;
            report = report with
            {
                FirstDivergentStep = step,
                ReferenceToken = rt,
                EngineToken = et,
                ReferenceTopK = refSorted,
                EngineTopK = engine.SortedTopK(step),
                ChosenGap = chosenGap,
                ReferenceTop2Gap = top2,
            };
            string tokens = string.Create(ci, $"step {step}: tokens differ (reference {rt}, engine {et})");
            var why = new List<string>();
            if (engine.LogprobOf(step, rt) is null)
                why.Add(string.Create(ci, $"the reference's token {rt} is not in the engine's top-{ke}"));
            if (refOfEng is null)
                why.Add(string.Create(ci, $"the engine's token {et} is not in the reference's top-{kr}"));
            if (refOfRef is null)
                why.Add(string.Create(ci, $"the reference's own token {rt} is not in its top-{kr}"));
            if (chosenGap is double g && !(Math.Abs(g) <= margin))
                why.Add(string.Create(ci,
                    $"not a near tie: the reference's logprobs of the two tokens are {Math.Abs(g):F4} nats apart (top-2 gap {Fmt(top2)}) > margin {margin:G3}"));
            if (why.Count == 0)
            {
                accepted = true;
                notes.Add(string.Create(ci,
                    $"{tokens}, accepted: each chosen token is in the other side's top-k (vLLM check_logprobs_close) and the reference's logprobs " +
                    $"of the two are {Math.Abs(chosenGap!.Value):F4} nats apart (top-2 gap {Fmt(top2)}) <= margin {margin:G3}, a near tie; " +
                    $"the {Math.Max(reference.Length, engine.Length) - step - 1} later steps are not compared"));
            }
            else
            {
                failures.Add($"{tokens}, not accepted: {string.Join("; ", why)}");
            }
        }
        else if (reference.Length != engine.Length)
        {
            failures.Add(string.Create(ci,
                $"the sequences agree over {common} steps but have different lengths (reference {reference.Length}, engine {engine.Length}): " +
                $"greedy decoding of one prompt under the same limits must stop at the same step"));
        }

        if (!(maxDiff <= logprobTolerance))
            failures.Add(string.Create(ci,
                $"matched-step logprobs differ by {maxDiff:E3} (step {maxStep}, token {maxToken}) > tolerance {logprobTolerance:G3}"));
        else if (pairs > 0)
            notes.Add(string.Create(ci, $"matched-step logprobs within {logprobTolerance:G3} (max |diff| {maxDiff:E3} over {pairs} pairs)"));

        if (failures.Count > 0)
            return report with { Verdict = TokenVerdict.Failed, Reason = string.Join("; ", failures) };
        if (accepted)
            return report with { Verdict = TokenVerdict.AcceptedDivergence, Reason = string.Join("; ", notes) };
        notes.Insert(0, string.Create(ci, $"all {common} tokens match"));
        return report with { Verdict = TokenVerdict.Identical, Reason = string.Join("; ", notes) };

        static string Fmt(double? x) => x is double v ? v.ToString("F4", CultureInfo.InvariantCulture) : "n/a";
    }
}
