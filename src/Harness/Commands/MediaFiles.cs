using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Commands;

/// <summary>
/// `compare --image FILE / --video FILE / --audio FILE.wav` (issue 22 item 5): a user's pictures and sound through the
/// checkpoint's own processor.
/// The files are untrusted input: each must be a regular file (through its links; a FIFO, a device, a folder, a loop or a
/// dangling link is named as such and never opened for reading) under a size cap, read here and sent to the worker as
/// bytes, so the worker never opens a user's path. The worker decodes them (PIL, PyAV, the standard library's wave) and
/// runs AutoProcessor from the model folder: its tokenizer, image/video processor, audio feature extractor and chat
/// template give the ids, pixel values, grids and features both sides get. Anything wrong is one line naming the file, exit 2.
/// </summary>
public static class MediaFiles
{
    /// <summary>The most bytes an image file may have (a 16k x 16k PNG is well under this).</summary>
    public const long ImageMaxBytes = 64L << 20;

    /// <summary>The most bytes a video file may have.</summary>
    public const long VideoMaxBytes = 512L << 20;

    /// <summary>The most bytes a WAV file may have (an hour of 16 kHz 16-bit mono is 115 MB).</summary>
    public const long AudioMaxBytes = 256L << 20;

    /// <summary>An image or video file as read: its path (as the user gave it, made full) and its bytes.</summary>
    public sealed record MediaFile(string Kind, string Path, byte[] Bytes);

    /// <summary>The media a compare was given (empty when none).</summary>
    public sealed record Request(IReadOnlyList<MediaFile> Images, IReadOnlyList<MediaFile> Videos)
    {
        /// <summary>The WAV files (--audio).</summary>
        public IReadOnlyList<MediaFile> Audios { get; init; } = [];

        public bool IsEmpty => Images.Count == 0 && Videos.Count == 0 && Audios.Count == 0;

        private IEnumerable<MediaFile> All => Images.Concat(Videos).Concat(Audios);

        /// <summary>"image photo.png, video clip.mp4, audio speech.wav": for the prompt line and the scenario's description.</summary>
        public string Describe() => string.Join(", ", All.Select(f => $"{f.Kind} {System.IO.Path.GetFileName(f.Path)}"));

        /// <summary>A short tag of the files' contents for the reference cache key (two different images never share a reference).</summary>
        public string Tag()
        {
            using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
            foreach (var f in All)
            {
                hash.AppendData(System.Text.Encoding.UTF8.GetBytes(f.Kind));
                hash.AppendData(f.Bytes);
            }
            return Convert.ToHexStringLower(hash.GetHashAndReset())[..16];
        }
    }

    /// <summary>
    /// Reads the files the options name, checking each (<see cref="InputFiles.ReadCapped"/>): throws an
    /// <see cref="InputException"/> naming the file on anything wrong, before any other work.
    /// </summary>
    public static Request Read(string? image, string? video, string? audio = null)
    {
        var images = image is null ? [] : new[] { ReadOne("image", image, ImageMaxBytes) };
        var videos = video is null ? [] : new[] { ReadOne("video", video, VideoMaxBytes) };
        var audios = audio is null ? [] : new[] { ReadOne("audio", audio, AudioMaxBytes) };
        return new Request(images, videos) { Audios = audios };
    }

    private static MediaFile ReadOne(string kind, string path, long cap)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new InputException($"--{kind} \"{CliInputs.Escape(path)}\"", "an empty path is not a file");
        string full;
        try
        {
            full = System.IO.Path.GetFullPath(path);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new InputException($"--{kind} {CliInputs.Escape(path)}", $"not a usable path: {e.Message}");
        }
        var bytes = InputFiles.ReadCapped(full, cap, $"--{kind} file");
        if (bytes.Length == 0) throw new InputException(full, $"is empty: no {kind} in it");
        return new MediaFile(kind, full, bytes);
    }

    /// <summary>A file's bytes as the wire carries them: int32 [ceil(N/4)], zero-padded (the wire has no uint8).</summary>
    public static Tensor Packed(byte[] bytes)
    {
        var words = new int[(bytes.Length + 3) / 4];
        Buffer.BlockCopy(bytes, 0, words, 0, bytes.Length);
        return Tensor.FromArray(words, words.Length);
    }

    /// <summary>
    /// The prompt through the checkpoint's own processor in the worker (op process_media): every tensor the processor
    /// makes (input_ids [1, T], pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, ...), printed as one
    /// line; null after one line on stderr when the processor or a file is refused (exit 2).
    /// </summary>
    public static IReadOnlyDictionary<string, Tensor>? Process(string dir, string? text, bool chat, Request media, string device = "cpu")
    {
        if (CliSupport.LiveContext("compare", device) is not { Client: { } client }) return null;
        var files = new List<(string Name, Tensor Value)>();
        JsonArray Describe(IReadOnlyList<MediaFile> list, string prefix)
        {
            var array = new JsonArray();
            for (int i = 0; i < list.Count; i++)
            {
                array.Add(new JsonObject { ["label"] = CliInputs.Escape(list[i].Path), ["bytes"] = list[i].Bytes.Length });
                files.Add(($"{prefix}{i.ToString(CultureInfo.InvariantCulture)}", Packed(list[i].Bytes)));
            }
            return array;
        }
        var args = new JsonObject
        {
            ["model_dir"] = client.WorkerPath(client.ShareDirectory(dir)),
            ["text"] = text ?? "",
            ["chat"] = chat,
            ["images"] = Describe(media.Images, "image"),
            ["videos"] = Describe(media.Videos, "video"),
            ["audios"] = Describe(media.Audios, "audio"),
        };
        try
        {
            var reply = client.Invoke("process_media", args, files.ToArray());
            var tensors = reply.Tensors;
            if (!tensors.TryGetValue("input_ids", out var ids))
            {
                CliSupport.UsageError($"compare: the processor in {dir} gave no input_ids");
                return null;
            }
            Console.WriteLine($"prompt:      {ids.NumEl} tokens from {(chat ? "the chat template of " : "")}{(string?)reply.Result["processor"]} in {dir} " +
                              $"with {media.Describe()}: {string.Join(",", ids.ToInt64Array())}");
            return tensors;
        }
        catch (Reference.ReferencePythonException e)
        {
            // MediaError names the file itself; anything else from the processor names the folder
            string what = e.PythonType == "MediaError" ? "" : $"cannot process the input with the processor in {dir}: ";
            CliSupport.UsageError($"compare: {what}{e.PythonType}: {e.PythonMessage.Split('\n')[0]}");
            return null;
        }
    }
}
