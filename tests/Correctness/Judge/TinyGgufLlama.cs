using System.Text.Json.Nodes;
using Harness.Judge;
using Harness.Reference;
using Harness.Tests.Correctness.Live;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// The tiny HF Llama the judge tests serve through llama.cpp: built by the reference worker (op judge_build_sp_llama:
/// seeded weights with perturbed norms, a SentencePiece BPE tokenizer trained there, deterministic), converted to an
/// f32 GGUF by the packaged convert_hf_to_gguf.py, and copies with one planted bug each (gguf-set-metadata). Built once
/// per test run (about a minute on 2 cores: the converter imports torch).
///
/// Every field llama.cpp reads is off HF's LlamaConfig default: hidden 96, intermediate 200, 2 layers, 4 heads with 2 kv
/// heads (GQA), head_dim 32 (not 96/4), vocab 384 (the tokenizer's), rms_norm_eps 3e-5, rope_theta 3e4, 512 positions,
/// tied embeddings, bos 2 and eos 3. hidden_act stays SiLU: llama.cpp's llama architecture hard-codes it (the converter
/// writes no activation), so a GGUF cannot say otherwise.
/// </summary>
public static class TinyGgufLlama
{
    public const ulong Seed = 2026;
    public const double RmsNormEps = 3e-5, RopeTheta = 30000;

    /// <summary>The planted bugs: GGUF metadata keys and the wrong values written there.</summary>
    public const string RopeBaseKey = "llama.rope.freq_base", EpsilonKey = "llama.attention.layer_norm_rms_epsilon";

    public static JsonObject Config() => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["hidden_size"] = 96,
        ["intermediate_size"] = 200,
        ["num_hidden_layers"] = 2,
        ["num_attention_heads"] = 4,
        ["num_key_value_heads"] = 2,
        ["head_dim"] = 32,
        ["vocab_size"] = 384,
        ["max_position_embeddings"] = 512,
        ["rms_norm_eps"] = RmsNormEps,
        ["initializer_range"] = 0.125,
        ["tie_word_embeddings"] = true,
        ["hidden_act"] = "silu",
        ["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = RopeTheta },
        ["bos_token_id"] = 2,
        ["eos_token_id"] = 3,
    };

    public sealed record Built(string ModelDirectory, string Gguf, string GgufWrongRopeBase, string GgufWrongEpsilon);

    private static readonly Lazy<Built> Shared = new(() => Build(LiveReference.Client()), LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The model and its GGUFs (built on first use; skips or fails as the live tier does without an interpreter).</summary>
    public static Built Get()
    {
        LiveReference.Client();
        return Shared.Value;
    }

    private static readonly Lazy<ReferenceWorker> SharedServerWorker = new(LlamaServer.NewWorker, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The worker the judge tests start llama-server on, one after another (the collection runs them in turn): one
    /// worker start for all of them instead of one a server (about 20 s each under this machine's load). Each server is
    /// still stopped by its own Dispose; the worker goes with the test process.</summary>
    public static ReferenceWorker ServerWorker => SharedServerWorker.Value;

    /// <summary>A lossy GGUF of the same model (the converter's --outtype) and copies with one planted bug each.</summary>
    public sealed record Lossy(string OutType, string Gguf, string GgufWrongEpsilon, string GgufWrongRopeBase);

    /// <summary>The RoPE base the lossy GGUFs' planted copies carry: 100 for 3e4, a wrong engine the quantization's own
    /// error cannot hide (at 1e4 the f32 GGUF's o_proj is 3.2e-2 off, below q8_0's own ~1.4e-2 times C = 3).</summary>
    public const double LossyWrongRopeBase = 100;

    private static readonly Lazy<IReadOnlyDictionary<string, Lossy>> SharedLossy =
        new(() => BuildLossy(LiveReference.Client()), LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The model's GGUF converted with --outtype <paramref name="outType"/> ("bf16" or "q8_0"), both built on first use.</summary>
    public static Lossy Quantized(string outType)
    {
        Get();
        return SharedLossy.Value[outType];
    }

    private static IReadOnlyDictionary<string, Lossy> BuildLossy(ReferenceClient client)
    {
        var built = Shared.Value;
        var dir = client.ScratchDirectory("judge-gguf-lossy");
        string[] types = ["bf16", "q8_0"];
        client.Invoke("judge_gguf_convert", new JsonObject
        {
            ["model_dir"] = client.WorkerPath(built.ModelDirectory),
            ["outputs"] = new JsonArray(types.Select(t => (JsonNode)new JsonObject
            {
                ["outfile"] = client.WorkerPath(Path.Combine(dir, $"tiny-llama-{t}.gguf")), ["outtype"] = t,
            }).ToArray()),
        });
        return types.ToDictionary(t => t, t =>
        {
            var gguf = Path.Combine(dir, $"tiny-llama-{t}.gguf");
            return new Lossy(t, gguf,
                Planted(client, gguf, EpsilonKey, 0.05, $"tiny-llama-{t}-rms-eps-0.05.gguf"),
                Planted(client, gguf, RopeBaseKey, LossyWrongRopeBase, $"tiny-llama-{t}-rope-base-100.gguf"));
        });
    }

    /// <summary>A copy of <paramref name="gguf"/> beside it with one metadata value rewritten (gguf-set-metadata).</summary>
    private static string Planted(ReferenceClient client, string gguf, string key, double value, string name)
    {
        var copy = Path.Combine(Path.GetDirectoryName(gguf)!, name);
        File.Copy(gguf, copy, overwrite: true);
        client.HandOver(copy);   // the (sandboxed) worker edits it in place
        client.Invoke("judge_gguf_set_metadata", new JsonObject { ["file"] = client.WorkerPath(copy), ["key"] = key, ["value"] = value });
        return copy;
    }

    private static Built Build(ReferenceClient client)
    {
        var dir = client.ScratchDirectory("judge-tiny-llama");
        client.Invoke("judge_build_sp_llama", new JsonObject { ["config"] = Config(), ["seed"] = Seed, ["out_dir"] = client.WorkerPath(dir) });
        var gguf = Path.Combine(client.ScratchDirectory("judge-gguf"), "tiny-llama-f32.gguf");
        client.Invoke("judge_gguf_convert", new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir), ["outfile"] = client.WorkerPath(gguf), ["outtype"] = "f32",
        });
        return new Built(dir, gguf,
            Planted(client, gguf, RopeBaseKey, RopeTheta / 3, "tiny-llama-f32-rope-base-1e4.gguf"),
            Planted(client, gguf, EpsilonKey, 0.05, "tiny-llama-f32-rms-eps-0.05.gguf"));
    }
}
