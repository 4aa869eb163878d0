using System.Globalization;
using System.Text.Json;

namespace Harness.Engine.Config;

/// <summary>
/// A JSON object inside a config with its dotted path, and typed getters whose errors name the file and the path.
/// JSON null counts as absent for optional getters (HF writes "sliding_window": null for "none").
/// </summary>
public readonly struct ConfigNode
{
    public JsonElement Element { get; }
    public string Path { get; }
    public string SourceName { get; }

    public ConfigNode(JsonElement element, string path, string sourceName)
    {
        Element = element;
        Path = path;
        SourceName = sourceName;
    }

    public string PathOf(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    public ConfigException Error(string key, string problem) => new(SourceName, PathOf(key), problem);

    /// <summary>The value, or null when the key is absent or JSON null.</summary>
    public JsonElement? Get(string key)
    {
        ConfigReads.Record(SourceName, PathOf(key));
        if (Element.ValueKind == JsonValueKind.Object && Element.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null) return v;
        if (Element.ValueKind == JsonValueKind.Array && int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int i)
            && i < Element.GetArrayLength() && Element[i].ValueKind != JsonValueKind.Null) return Element[i];
        return null;
    }

    public bool Has(string key) => Get(key) is not null;

    /// <summary>The first of several spellings that is present (e.g. hidden_act / hidden_activation), or null.</summary>
    public string? FirstPresent(params string[] keys) => keys.FirstOrDefault(Has);

    public ConfigNode? Child(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.Object) throw Error(key, $"must be an object, but is {Describe(v.Value)}");
        return new ConfigNode(v.Value, PathOf(key), SourceName);
    }

    public int RequiredInt(string key) => OptionalInt(key) ?? throw Missing(key, "an integer");
    public double RequiredDouble(string key) => OptionalDouble(key) ?? throw Missing(key, "a number");
    public string RequiredString(string key) => OptionalString(key) ?? throw Missing(key, "a string");
    public bool RequiredBool(string key) => OptionalBool(key) ?? throw Missing(key, "a boolean");

    private ConfigException Missing(string key, string what) =>
        Element.ValueKind == JsonValueKind.Object && Element.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Null
            ? Error(key, $"is null, expected {what}")
            : Error(key, "is missing");

    public int? OptionalInt(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        return ToInt(v.Value, key);
    }

    private int ToInt(JsonElement v, string key)
    {
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue)
            return (int)d; // 64.0
        throw Error(key, $"must be an integer, but is {Describe(v)}");
    }

    public long? OptionalLong(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.Number && v.Value.TryGetInt64(out long l)) return l;
        throw Error(key, $"must be an integer, but is {Describe(v.Value)}");
    }

    public double? OptionalDouble(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.Number) return v.Value.GetDouble();
        throw Error(key, $"must be a number, but is {Describe(v.Value)}");
    }

    public string? OptionalString(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.String) return v.Value.GetString();
        throw Error(key, $"must be a string, but is {Describe(v.Value)}");
    }

    public bool? OptionalBool(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        return v.Value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error(key, $"must be true or false, but is {Describe(v.Value)}"),
        };
    }

    /// <summary>An int or a list of ints, as a list (eos_token_id, intermediate_size per layer); null when absent.</summary>
    public int[]? OptionalIntOrIntList(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.Array)
        {
            var list = new int[v.Value.GetArrayLength()];
            int i = 0;
            foreach (var e in v.Value.EnumerateArray())
            {
                list[i] = ToInt(e, $"{key}[{i}]");
                i++;
            }
            return list;
        }
        if (v.Value.ValueKind == JsonValueKind.Number) return [ToInt(v.Value, key)];
        throw Error(key, $"must be an integer or a list of integers, but is {Describe(v.Value)}");
    }

    public int[]? OptionalIntList(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.Array) throw Error(key, $"must be a list of integers, but is {Describe(v.Value)}");
        return OptionalIntOrIntList(key);
    }

    public double[]? OptionalDoubleList(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.Array) throw Error(key, $"must be a list of numbers, but is {Describe(v.Value)}");
        var list = new double[v.Value.GetArrayLength()];
        int i = 0;
        foreach (var e in v.Value.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number) throw Error($"{key}[{i}]", $"must be a number, but is {Describe(e)}");
            list[i] = e.GetDouble();
            i++;
        }
        return list;
    }

    public string[]? OptionalStringList(string key)
    {
        var v = Get(key);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.Array) throw Error(key, $"must be a list of strings, but is {Describe(v.Value)}");
        var list = new string[v.Value.GetArrayLength()];
        int i = 0;
        foreach (var e in v.Value.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw Error($"{key}[{i}]", $"must be a string, but is {Describe(e)}");
            list[i] = e.GetString()!;
            i++;
        }
        return list;
    }

    internal static string Describe(JsonElement v)
    {
        string raw = v.GetRawText();
        if (raw.Length > 60) raw = raw[..57] + "...";
        string kind = v.ValueKind switch
        {
            JsonValueKind.Object => "an object",
            JsonValueKind.Array => "a list",
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            JsonValueKind.True or JsonValueKind.False => "a boolean",
            JsonValueKind.Null => "null",
            _ => v.ValueKind.ToString(),
        };
        return v.ValueKind is JsonValueKind.Object or JsonValueKind.Null ? kind : $"{kind} ({raw})";
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{SourceName}:{(Path.Length == 0 ? "<root>" : Path)}");
}
