using System.Globalization;
using System.Text.RegularExpressions;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `compare`'s memory prediction, made from the checkpoint's safetensors headers before anything is loaded: parameters x
/// bytes for the engine (at the compare dtype), the reference (HF at the same dtype, loaded straight from safetensors) and
/// the float64 oracle (streamed: the largest decoder layer or tower block plus the small rest, 8 bytes a parameter;
/// whole twin: every parameter). When the sum does not fit the memory there is, compare stops with one line naming what it
/// needs and what would fit (--no-oracle, bf16, fewer layers) instead of dying of an out-of-memory kill. The one memory
/// prediction (issue 24): the prompt check (<see cref="ModelFolder.CheckPromptFits(string, ModelFolder.PromptShape, int, int, DType, bool, long?, bool, bool)"/>,
/// run by every family's compare and by the checkpoint scenarios) makes it with the config's sizes (<see cref="Shape"/>)
/// and compare prints and holds the device to the same figure.
/// </summary>
public sealed record CompareMemory(
    long Parameters, long LargestUnit, long Streamed, long Rest, int Units, int BytesPerParameter, bool OracleWhole, bool Oracle, bool Gpu = false)
{
    /// <summary>
    /// The engine's memory in units of its weights at the compare dtype, measured. On the CPU 1.5x: its weights once, packed
    /// (a mapped checkpoint's pages are given back once packed, fused weights are packed from their parts: 2.5 GB resident
    /// after the prefill of a 1.24 B bf16 Llama of 2.47 GB, 3.0 GB at the peak while the tied lm_head packed), plus the
    /// harness's share beside it (notes/issue-22-hostmem.md; before that change 4x: 9.6 GiB for the same model). On the GPU
    /// 2x of device memory (the uploaded weights and the fused q/k/v and gate/up copies: 4.9 GiB for the same model).
    /// </summary>
    public double EngineFactor => Gpu ? 2.0 : 1.5;

    /// <summary>The interpreter (python, torch) and what the token part does not name: a fixed allowance plus a share of the
    /// weights (the reference's host peak was 3.4 GiB for 2.3 GiB of weights on the CPU).</summary>
    public const long Overhead = 1L << 30;

    /// <summary>
    /// Hidden-wide records a decoder layer leaves per position, on each side (Llama records 5: the two norms, attention, MLP,
    /// the layer; Gemma3n's AltUp keeps 4 streams of a layer's output): the captures compared at the prefill and at every
    /// judged decode step.
    /// </summary>
    public const int RecordsPerUnit = 16;

    /// <summary>A captured element held by the harness: the engine's and the reference's in float32, the oracle's in float64.</summary>
    private int CaptureElementBytes => 4 + 4 + (Oracle ? 8 : 0);

    /// <summary>The token embedding's [vocab, hidden] (from its header; 0 where the checkpoint has no `embed_tokens.weight`).</summary>
    public int Hidden { get; init; }

    /// <inheritdoc cref="Hidden"/>
    public int Vocab { get; init; }

    /// <summary>
    /// Parameters of tables both sides only look rows up in, never read whole: Gemma3n's and Gemma4's per-layer token
    /// embedding (`embed_tokens_per_layer`, 262144 x layers x 256: 4.0 GB of E2B's 5.4 B parameters). The engine maps it and
    /// touches the prompt's rows; so does the reference (a hidden-64 Gemma3n keeping E2B's table peaked under 1 GiB on
    /// each side, notes/issue-22-bigtensors.md). Not counted as either side's resident weights.
    /// </summary>
    public long LookupOnly { get; init; }

    /// <summary>The text decoder's layers (units named ...layers.N outside a vision or audio tower: the ones that see every
    /// token); null: every unit.</summary>
    public int? TextLayers { get; init; }

    /// <summary>The prompt's tokens (an estimate where the ids are made later: --text, pictures).</summary>
    public int PromptTokens { get; init; }

    /// <summary>Greedy tokens decoded (compare --max-new-tokens, or the family's default).</summary>
    public int NewTokens { get; init; }

    /// <summary>Every module judged at every decode step (compare without --no-steps): each step's records are kept.</summary>
    public bool Steps { get; init; } = true;

    /// <summary>
    /// The decoder's sizes from its config (<see cref="ModelFolder.PromptShape"/>: heads, KV heads and head dims, the MLP's
    /// width): with them the token part counts each side's eager attention scores, its KV cache at the real KV width and its
    /// transients; without them (a prediction from the headers alone) the KV caches are bounded hidden-wide and the
    /// transients are left to <see cref="Overhead"/>.
    /// </summary>
    public ModelFolder.PromptShape? Shape { get; init; }

    /// <summary>Prompt and generated positions: what the caches and the attention scores are sized by.</summary>
    public long Positions => (long)PromptTokens + NewTokens;

    /// <summary>
    /// One side's KV cache (the engine's and the reference's, each at the compare dtype): every layer's key and value per
    /// position; without a <see cref="Shape"/>, hidden-wide (bounding the GQA cache from above).
    /// </summary>
    public long KvCacheBytes
    {
        get
        {
            int layers = Shape?.Layers ?? TextLayers ?? Units;
            long width = Shape is { } s ? (long)s.KvHeads * Math.Max(s.HeadDim, s.GlobalHeadDim) : Hidden;
            return 2L * layers * width * BytesPerParameter * Positions;
        }
    }

    /// <summary>
    /// One side's transients of a forward over every position (with a <see cref="Shape"/>; 0 without): HF's eager attention
    /// holds one layer's [1, heads, T, T] float32 scores, the MLP about 8 rows of max(hidden, intermediate) a position, the
    /// logits [T, vocab] in float32.
    /// </summary>
    public long ForwardBytes => Shape is not { } s ? 0
        : (long)s.Heads * Positions * Positions * 4 + 8L * Positions * Math.Max(s.Hidden, s.Intermediate) * BytesPerParameter + Positions * (long)s.Vocab * 4;

    /// <summary>
    /// What the tokens cost: the records of every compared position (the prompt's, and each decode step's when steps are
    /// judged: every layer's records and the logits row, kept on each side until the verdict), the engine's and the
    /// reference's KV caches and forward transients, and the float64 oracle's twice the reference's (float64 is twice float32).
    /// </summary>
    public long TokenBytes
    {
        get
        {
            long recorded = PromptTokens + (Steps ? (long)NewTokens : 0);
            int layers = TextLayers ?? Units;
            long perRecord = ((long)layers * RecordsPerUnit * Hidden + Vocab) * CaptureElementBytes;
            long side = KvCacheBytes + ForwardBytes;
            return recorded * perRecord + 2 * side + (Oracle ? 2 * side : 0);
        }
    }

    /// <summary>What <see cref="TokenBytes"/> is made of, for the refusal line.</summary>
    private string TokenParts => Shape is { } s
        ? $"eager attention scores {s.Heads}x{Positions}x{Positions}, KV caches {s.Layers} layers x {Positions} positions, logits {Positions}x{s.Vocab}, records"
        : $"KV caches {TextLayers ?? Units} layers x {Positions} positions, records";

    /// <summary>A tensor of a decoder layer or tower block: its name has a numeric part ("model.layers.3.mlp...").</summary>
    private static readonly Regex UnitName = new(@"^(.*?\.\d+)\.", RegexOptions.CultureInvariant);

    /// <summary>A text decoder layer's unit: "model.layers.3", "model.language_model.layers.3", not a tower's blocks or layers.</summary>
    private static readonly Regex TextLayer = new(@"^(?!.*(vision|visual|audio)).*\blayers\.\d+$", RegexOptions.CultureInvariant);

    /// <summary>The counts of a checkpoint folder's tensors (headers only; nothing is read).</summary>
    public static CompareMemory Of(string folder, DType dtype, bool oracle, bool whole, bool gpu = false, int promptTokens = 0, int newTokens = 0,
        bool steps = true, ModelFolder.PromptShape? shape = null)
    {
        int hidden = 0, vocab = 0;
        long lookupOnly = 0;
        using var checkpoint = Checkpoint.Open(folder);
        long total = 0, streamed = 0;
        var units = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var name in checkpoint.Names)
        {
            var info = checkpoint.GetInfo(name);
            long n = info.NumEl;
            total += n;
            var m = UnitName.Match(name);
            if (m.Success)
                units[m.Groups[1].Value] = units.GetValueOrDefault(m.Groups[1].Value) + n;
            else if (info.Shape.Length == 2 && (name.Contains("embed", StringComparison.Ordinal) || name.StartsWith("lm_head", StringComparison.Ordinal)))
                streamed += n;                                    // looked up by rows / lm_head in slices: never upcast whole
            if (name.EndsWith("embed_tokens_per_layer.weight", StringComparison.Ordinal)) lookupOnly += n;
            if (info.Shape.Length == 2 && name.EndsWith("embed_tokens.weight", StringComparison.Ordinal) && info.Shape[0] > vocab)
                (vocab, hidden) = ((int)info.Shape[0], (int)info.Shape[1]);   // [vocab, hidden] of the text decoder
        }
        long inUnits = units.Values.Sum();
        int textLayers = units.Keys.Count(k => TextLayer.IsMatch(k));
        return new CompareMemory(total, units.Count == 0 ? 0 : units.Values.Max(), streamed, total - inUnits - streamed, units.Count,
            dtype == DType.BFloat16 ? 2 : 4, whole, oracle, gpu)
        {
            Hidden = hidden, Vocab = vocab, TextLayers = textLayers, LookupOnly = lookupOnly, PromptTokens = promptTokens, NewTokens = newTokens, Steps = steps, Shape = shape,
        };
    }

    public long EngineTotal => (long)((Parameters - LookupOnly) * BytesPerParameter * EngineFactor);
    public long ReferenceBytes => (Parameters - LookupOnly) * BytesPerParameter;

    /// <summary>The float64 oracle: streamed, one unit and the rest (plus one 2^24-element slice of lm_head); whole, every parameter.</summary>
    public long OracleBytes => !Oracle ? 0 : OracleWhole ? Parameters * 8 : (LargestUnit + Rest + Math.Min(Streamed, 1L << 24)) * 8;

    /// <summary>The whole comparison on one memory (engine, reference and oracle in the same place: the CPU run).</summary>
    public long Total => EngineTotal + ReferenceBytes + OracleBytes + TokenBytes + Overhead + (EngineTotal + ReferenceBytes) / 20;

    public static string GiB(long bytes) => (bytes / (double)(1L << 30)).ToString("F1", CultureInfo.InvariantCulture) + " GiB";

    /// <summary>GiB from 1 GiB up, else MiB, else KiB (a tiny model's parts are not all "0.0 GiB").</summary>
    public static string Size(long bytes) =>
        bytes >= 1L << 30 ? GiB(bytes)
        : bytes >= 1L << 20 ? (bytes / (double)(1L << 20)).ToString("F1", CultureInfo.InvariantCulture) + " MiB"
        : (bytes / 1024.0).ToString("F1", CultureInfo.InvariantCulture) + " KiB";

    /// <summary>The memory the host has for us: MemAvailable from /proc/meminfo (null where it cannot be read).</summary>
    public static long? HostAvailable()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                    return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>
    /// Null when <see cref="Total"/> fits <paramref name="available"/>; else the one line to print: the folder, what is
    /// needed, by part, and each change that would fit (or that none does).
    /// </summary>
    public string? Refusal(string folder, long available, string where) =>
        Shortfall(available, where) is { } why ? $"compare: {folder} ({Weights}) {why}" : null;

    /// <summary>"N parameters at fp32".</summary>
    public string Weights => $"{Parameters.ToString("N0", CultureInfo.InvariantCulture)} parameters at {(BytesPerParameter == 2 ? "bf16" : "fp32")}";

    /// <summary>
    /// Null when <see cref="Total"/> fits <paramref name="available"/>; else "needs about X of WHERE memory (by part) and Y is
    /// available; would fit: ..." (the prompt check and compare's refusal say the same).
    /// </summary>
    public string? Shortfall(long available, string where)
    {
        if (Total <= available) return null;
        var fits = new List<string>();
        if (Oracle && OracleWhole && (this with { OracleWhole = false }).Total <= available)
            fits.Add($"the streamed oracle, without --oracle-whole ({Size((this with { OracleWhole = false }).Total)})");
        if (Oracle && (this with { Oracle = false }).Total <= available)
            fits.Add($"--no-oracle ({Size((this with { Oracle = false }).Total)})");
        if (BytesPerParameter == 4 && (this with { BytesPerParameter = 2 }).Total <= available)
            fits.Add($"--dtype bf16 ({Size((this with { BytesPerParameter = 2 }).Total)})");
        if (Steps && NewTokens > 0 && (this with { Steps = false }).Total <= available)
            fits.Add($"--no-steps ({Size((this with { Steps = false }).Total)})");
        if (NewTokens > 1)
            for (int n = NewTokens / 2; n >= 1; n /= 2)
                if ((this with { NewTokens = n }).Total <= available)
                {
                    fits.Add($"--max-new-tokens {n} ({Size((this with { NewTokens = n }).Total)})");
                    break;
                }
        if (PromptTokens > 1)
            for (int p = PromptTokens / 2; p >= 1; p /= 2)
                if ((this with { PromptTokens = p }).Total <= available)
                {
                    fits.Add($"a prompt of at most {p} tokens ({Size((this with { PromptTokens = p }).Total)})");
                    break;
                }
        if (TextLayers is > 1 and var layers)
        {
            // a copy with fewer decoder layers, said as the config field a user changes: the units also count a tower's
            // blocks and Gemma3n's six altup projections (E4B text: 41 units, 35 layers), so "35 of its 41 layers/blocks"
            // asked for 29 decoder layers; each layer removed takes the largest unit's parameters off every side
            for (int keep = layers - 1; keep >= 1; keep--)
            {
                var fewer = this with
                {
                    Parameters = Parameters - (layers - keep) * LargestUnit, Units = Units - (layers - keep), TextLayers = keep,
                    Shape = Shape is { } s ? s with { Layers = Math.Min(s.Layers, keep) } : null,
                };
                if (fewer.Total <= available)
                {
                    fits.Add($"a copy with num_hidden_layers at most {keep} of its {layers} ({Size(fewer.Total)})");
                    break;
                }
            }
        }
        else if (Units > 1)
        {
            // a copy of the checkpoint with fewer layers (num_hidden_layers): each unit removed takes its parameters off every side
            long perUnit = LargestUnit;
            for (int keep = Units - 1; keep >= 1; keep--)
            {
                var fewer = this with
                {
                    Parameters = Parameters - (Units - keep) * perUnit, Units = keep, TextLayers = TextLayers is { } t ? Math.Min(t, keep) : null,
                    Shape = Shape is { } s ? s with { Layers = Math.Min(s.Layers, keep) } : null,
                };
                if (fewer.Total <= available)
                {
                    fits.Add($"a copy with at most {keep} of its {Units} layers/blocks ({Size(fewer.Total)})");
                    break;
                }
            }
        }
        string parts = $"engine {Size(EngineTotal)}, reference {Size(ReferenceBytes)}" +
                       (Oracle ? $", float64 oracle {(OracleWhole ? "(whole twin)" : "(streamed)")} {Size(OracleBytes)}" : "") +
                       $", {PromptTokens} prompt and {NewTokens} new tokens {Size(TokenBytes)} ({TokenParts})" +
                       $", runtime and activations {Size(Total - EngineTotal - ReferenceBytes - OracleBytes - TokenBytes)}";
        return $"needs about {Size(Total)} of {where} memory ({parts}) and {Size(available)} is available; " +
               (fits.Count == 0 ? "nothing smaller fits: use a machine with more memory" : "would fit: " + string.Join("; ", fits));
    }
}
