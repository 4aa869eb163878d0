using System.Text.Json.Nodes;
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

    private static Built Build(ReferenceClient client)
    {
        var dir = client.ScratchDirectory("judge-tiny-llama");
        client.Invoke("judge_build_sp_llama", new JsonObject { ["config"] = Config(), ["seed"] = Seed, ["out_dir"] = client.WorkerPath(dir) });
        var gguf = Path.Combine(client.ScratchDirectory("judge-gguf"), "tiny-llama-f32.gguf");
        client.Invoke("judge_gguf_convert", new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir), ["outfile"] = client.WorkerPath(gguf), ["outtype"] = "f32",
        });
        string Planted(string key, double value, string name)
        {
            var copy = Path.Combine(Path.GetDirectoryName(gguf)!, name);
            File.Copy(gguf, copy, overwrite: true);
            client.HandOver(copy);   // the (sandboxed) worker edits it in place
            client.Invoke("judge_gguf_set_metadata", new JsonObject { ["file"] = client.WorkerPath(copy), ["key"] = key, ["value"] = value });
            return copy;
        }
        return new Built(dir, gguf,
            Planted(RopeBaseKey, RopeTheta / 3, "tiny-llama-f32-rope-base-1e4.gguf"),
            Planted(EpsilonKey, 0.05, "tiny-llama-f32-rms-eps-0.05.gguf"));
    }
}
