using System.Text.Json;
using Harness.Engine.Tensors;

namespace Harness.Engine.IO;

/// <summary>
/// The weights of a HF model folder: <c>model.safetensors</c>, or <c>model.safetensors.index.json</c> whose
/// "weight_map" maps tensor names to shard files (the single file wins when both exist, as in transformers).
/// Shards are opened (validated and mapped) on first use. Tensors follow <see cref="SafetensorsFile"/>'s lifetime
/// rule: they stay valid after the checkpoint is disposed.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly Dictionary<string, string> _weightMap;   // tensor -> shard file name (single file: every tensor -> model.safetensors)
    private readonly Dictionary<string, SafetensorsFile> _open = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private bool _disposed;

    public string Folder { get; }

    /// <summary>The index file when sharded, else null.</summary>
    public string? IndexPath { get; }

    public bool IsSharded => IndexPath is not null;

    /// <summary>Tensor names, sorted.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>Shard file names (one for a single-file checkpoint), sorted.</summary>
    public IReadOnlyList<string> ShardFiles { get; }

    private Checkpoint(string folder, string? indexPath, Dictionary<string, string> weightMap, SafetensorsFile? single)
    {
        Folder = folder;
        IndexPath = indexPath;
        _weightMap = weightMap;
        Names = weightMap.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        ShardFiles = weightMap.Values.Distinct().OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (single is not null) _open[SingleFileName] = single;
    }

    public static Checkpoint Open(string folder)
    {
        string full = Path.GetFullPath(folder);
        if (!Directory.Exists(full))
            throw new DirectoryNotFoundException($"checkpoint folder {full} does not exist");
        string single = Path.Combine(full, SingleFileName);
        string index = Path.Combine(full, IndexFileName);
        if (File.Exists(single))
        {
            var file = SafetensorsFile.Open(single);
            var map = file.Names.ToDictionary(n => n, _ => SingleFileName, StringComparer.Ordinal);
            return new Checkpoint(full, null, map, file);
        }
        if (File.Exists(index))
            return new Checkpoint(full, index, ReadIndex(full, index), null);

        var present = Directory.EnumerateFileSystemEntries(full).Select(Path.GetFileName).OrderBy(n => n, StringComparer.Ordinal).ToList();
        string listing = present.Count == 0 ? "the folder is empty" :
            "it holds: " + string.Join(", ", present.Take(20)) + (present.Count > 20 ? $", ... ({present.Count} entries)" : "");
        throw new FileNotFoundException(
            $"checkpoint folder {full} has neither {SingleFileName} nor {IndexFileName}; {listing}", single);
    }

    private static Dictionary<string, string> ReadIndex(string folder, string indexPath)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(InputFiles.ReadCapped(indexPath, InputFiles.ConfigMaxBytes, "checkpoint index"));   // a regular file below the cap (issue 24)
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(indexPath, null, $"index is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object ||
                !doc.RootElement.TryGetProperty("weight_map", out var wm))
                throw new SafetensorsFormatException(indexPath, null, "index has no \"weight_map\" object");
            if (wm.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(indexPath, null, $"\"weight_map\" must be an object of tensor name -> shard file, but is {wm.ValueKind}");
            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            var checkedShards = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new SafetensorsFormatException(indexPath, p.Name, $"\"weight_map\" value must be a shard file name, but is {p.Value.GetRawText()}");
                string shard = p.Value.GetString()!;
                if (!map.TryAdd(p.Name, shard))
                    throw new SafetensorsFormatException(indexPath, p.Name, "listed twice in \"weight_map\"");
                if (checkedShards.Add(shard))
                {
                    if (shard.Length == 0 || Path.IsPathRooted(shard) || shard.Contains('/') || shard.Contains('\\') || shard == ".." || shard == ".")
                        throw new SafetensorsFormatException(indexPath, p.Name, $"shard '{shard}' is not a plain file name in the checkpoint folder");
                    if (!File.Exists(Path.Combine(folder, shard)))
                        throw new SafetensorsFormatException(indexPath, p.Name,
                            $"index references shard '{shard}', which is missing from {folder}");
                }
            }
            return map;
        }
    }

    public bool Contains(string name) => _weightMap.ContainsKey(name);

    /// <summary>The shard file name holding a tensor.</summary>
    public string ShardOf(string name) => _weightMap.TryGetValue(name, out var s) ? s : throw NotFound(name);

    public TensorInfo GetInfo(string name) => Locate(name).GetInfo(name);

    /// <summary>A zero-copy view (see <see cref="SafetensorsFile"/> for its lifetime).</summary>
    public Tensor GetTensor(string name) => Locate(name).GetTensor(name);

    /// <summary>Rows [start, start + length) of dim 0, a zero-copy view of only those bytes (see <see cref="SafetensorsFile.GetRows"/>).</summary>
    public Tensor GetRows(string name, int start, int length) => Locate(name).GetRows(name, start, length);

    /// <summary>A managed copy, independent of the mapping.</summary>
    public Tensor ReadTensor(string name) => Locate(name).ReadTensor(name);

    private SafetensorsFile Locate(string name)
    {
        if (!_weightMap.TryGetValue(name, out var shard)) throw NotFound(name);
        var file = Shard(shard);
        if (!file.Contains(name))
            throw new SafetensorsFormatException(IndexPath ?? file.Path, name,
                $"the index puts this tensor in shard '{shard}', but that shard does not hold it (nearest there: " +
                string.Join(", ", NearNames.Find(name, file.Names, 3).Select(n => $"'{n}'")) + ")");
        return file;
    }

    /// <summary>Opens a shard (once) by file name.</summary>
    public SafetensorsFile Shard(string shardFile)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_open.TryGetValue(shardFile, out var f)) return f;
            if (!ShardFiles.Contains(shardFile))
                throw new ArgumentException($"{IndexPath ?? Folder}: no shard named '{shardFile}' (shards: {string.Join(", ", ShardFiles)})", nameof(shardFile));
            f = SafetensorsFile.Open(Path.Combine(Folder, shardFile));
            _open[shardFile] = f;
            return f;
        }
    }

    /// <summary>Number of shards opened so far (shards open lazily).</summary>
    public int OpenShardCount
    {
        get { lock (_lock) return _open.Count; }
    }

    private TensorNotFoundException NotFound(string name) =>
        new(IndexPath ?? Path.Combine(Folder, SingleFileName), name, NearNames.Find(name, _weightMap.Keys), _weightMap.Count,
            IsSharded ? "in the index's weight_map" : null);

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var f in _open.Values) f.Dispose();
            _open.Clear();
        }
    }
}
