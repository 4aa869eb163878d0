using System.Globalization;
using System.Text.Json;

namespace Harness.Engine.Config;

/// <summary>
/// A HF config.json: model type, architectures, the text model's settings (from "text_config" when present, else the
/// root), the optional vision tower's, and the raw JSON with typed getters by dotted path for model-specific extras
/// (<c>GetInt("text_config.sliding_window")</c>; a numeric segment indexes a list: <c>"text_config.layer_types.3"</c>).
/// Errors name the file and the JSON path: "config.json: text_config.hidden_size is missing".
/// </summary>
public sealed class HfConfig
{
    /// <summary>The file path, or the name given to <see cref="Parse"/>.</summary>
    public string SourceName { get; }
    /// <summary>model_type</summary>
    public string ModelType { get; }
    /// <summary>architectures (empty when absent or null)</summary>
    public IReadOnlyList<string> Architectures { get; }
    public TextConfig Text { get; }
    /// <summary>vision_config, when present and not null</summary>
    public VisionConfig? Vision { get; }
    /// <summary>The whole document (a detached clone; valid for the lifetime of this object).</summary>
    public JsonElement Root { get; }

    private HfConfig(string sourceName, JsonElement root)
    {
        SourceName = sourceName;
        Root = root;
        var node = new ConfigNode(root, "", sourceName);
        ModelType = node.RequiredString("model_type");
        Architectures = node.OptionalStringList("architectures") ?? [];
        Text = TextConfig.Read(node.Child("text_config") ?? node, node);
        Vision = node.Child("vision_config") is { } v ? VisionConfig.Read(v) : null;
    }

    public static HfConfig Load(string path)
    {
        // Only a regular file (through links) of at most 16 MiB is read: a FIFO named config.json would block forever, a
        // link to /dev/zero would fill memory, a loop of links would throw without a name (issue 24).
        var full = Path.GetFullPath(path);
        if (IO.InputFiles.KindOf(full) == IO.FileKind.Missing)
            throw new FileNotFoundException($"config file {full} does not exist", path);
        return Parse(IO.InputFiles.ReadCapped(full, IO.InputFiles.ConfigMaxBytes, "config file"), path);
    }

    public static HfConfig Parse(string json, string sourceName) => Parse(System.Text.Encoding.UTF8.GetBytes(json), sourceName);

    public static HfConfig Parse(ReadOnlyMemory<byte> utf8Json, string sourceName)
    {
        JsonElement root;
        try
        {
            // HF's json.dumps may write NaN/Infinity; neither appears in the fields read here, but allow comments and trailing commas from hand edits.
            using var doc = JsonDocument.Parse(utf8Json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new ConfigException(sourceName, "", $"is not valid JSON: {e.Message}", e);
        }
        if (root.ValueKind != JsonValueKind.Object)
            throw new ConfigException(sourceName, "", $"must be a JSON object, but is {ConfigNode.Describe(root)}");
        return new HfConfig(sourceName, root);
    }

    /// <summary>The element at a dotted path, or null when any segment is absent or the value is JSON null.</summary>
    public JsonElement? Find(string path)
    {
        var cur = Root;
        foreach (var seg in path.Split('.'))
        {
            if (cur.ValueKind == JsonValueKind.Object && cur.TryGetProperty(seg, out var next)) cur = next;
            else if (cur.ValueKind == JsonValueKind.Array && int.TryParse(seg, NumberStyles.None, CultureInfo.InvariantCulture, out int i)
                     && i < cur.GetArrayLength()) cur = cur[i];
            else return null;
        }
        return cur.ValueKind == JsonValueKind.Null ? null : cur;
    }

    public bool Has(string path) => Find(path) is not null;

    private (ConfigNode Parent, string Key) Resolve(string path)
    {
        int dot = path.LastIndexOf('.');
        if (dot < 0) return (new ConfigNode(Root, "", SourceName), path);
        string parent = path[..dot];
        var el = Find(parent);
        return (new ConfigNode(el ?? default, parent, SourceName), path[(dot + 1)..]);
    }

    private T Required<T>(string path, T? value, string what) where T : struct =>
        value ?? throw new ConfigException(SourceName, path, Has(path) ? $"is not {what}" : (RawIsNull(path) ? $"is null, expected {what}" : "is missing"));

    private T RequiredRef<T>(string path, T? value, string what) where T : class =>
        value ?? throw new ConfigException(SourceName, path, RawIsNull(path) ? $"is null, expected {what}" : "is missing");

    /// <summary>The key is present and JSON null (HF's None), as opposed to absent.</summary>
    public bool IsNull(string path) => RawIsNull(path);

    private bool RawIsNull(string path)
    {
        var (p, key) = Resolve(path);
        return p.Element.ValueKind == JsonValueKind.Object && p.Element.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Null;
    }

    public int? GetIntOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalInt(k); }
    public long? GetLongOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalLong(k); }
    public double? GetDoubleOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalDouble(k); }
    public string? GetStringOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalString(k); }
    public bool? GetBoolOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalBool(k); }
    public int[]? GetIntListOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalIntOrIntList(k); }
    public double[]? GetDoubleListOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalDoubleList(k); }
    public string[]? GetStringListOrNull(string path) { var (p, k) = Resolve(path); return p.OptionalStringList(k); }

    public int GetInt(string path) => Required(path, GetIntOrNull(path), "an integer");
    public long GetLong(string path) => Required(path, GetLongOrNull(path), "an integer");
    public double GetDouble(string path) => Required(path, GetDoubleOrNull(path), "a number");
    public bool GetBool(string path) => Required(path, GetBoolOrNull(path), "a boolean");
    public string GetString(string path) => RequiredRef(path, GetStringOrNull(path), "a string");
    public int[] GetIntList(string path) => RequiredRef(path, GetIntListOrNull(path), "a list of integers");
    public string[] GetStringList(string path) => RequiredRef(path, GetStringListOrNull(path), "a list of strings");

    public int GetInt(string path, int fallback) => GetIntOrNull(path) ?? fallback;
    public double GetDouble(string path, double fallback) => GetDoubleOrNull(path) ?? fallback;
    public bool GetBool(string path, bool fallback) => GetBoolOrNull(path) ?? fallback;
    public string GetString(string path, string fallback) => GetStringOrNull(path) ?? fallback;

    public override string ToString() => $"HfConfig({SourceName}, {ModelType}, {Text.NumHiddenLayers} layers, hidden {Text.HiddenSize})";
}
