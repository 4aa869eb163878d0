using Xunit.Abstractions;
using System.Text.Json.Nodes;

namespace Harness.Tests.Correctness.Robustness.Fuzz;

/// <summary>
/// config.json fuzzing, for every model type a folder can hold (the recorded models): fields removed, retyped (a string
/// for an int, a list for a scalar, null), out of range (0 heads, negative sizes), head counts that do not divide,
/// unknown rope types, unknown model_types, truncated JSON. The engine loads each mutant as `compare` does and runs a
/// forward at TP 1 or 2: each ends in a pass or an error naming config.json (or the weights against it).
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class ConfigFuzzTests(ITestOutputHelper output)
{
    private static readonly string[] IntFields =
        ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings"];

    [Fact]
    public void Every_config_mutant_ends_in_a_pass_or_an_error_naming_config_json()
    {
        var bases = FuzzInputs.ModelFolders;
        Assert.NotEmpty(bases);
        var work = FuzzInputs.TempDirectory("config");
        try
        {
            var folders = bases.Select((b, i) => { var d = Path.Combine(work, $"m{i}"); FuzzInputs.Reset(b, d); return d; }).ToList();
            var originals = bases.Select(b => File.ReadAllText(Path.Combine(b, "config.json"))).ToList();
            int tp = 1;
            var campaign = new FuzzCampaign("config.json", output);
            campaign.Run(seed: 12, rng =>
            {
                int which = rng.Next(folders.Count);
                var path = Path.Combine(folders[which], "config.json");
                tp = rng.Next(3) == 0 ? 2 : 1;
                var (kind, description, text) = Mutate(originals[which], rng);
                File.WriteAllText(path, text);
                return new FuzzCampaign.Mutant(kind, $"{Path.GetFileName(bases[which])}, tp {tp}: {description}", path);
            }, m => FuzzInputs.LoadAndRun(Path.GetDirectoryName(m.File)!, tp));
            Assert.True(campaign.Passed > 0 && campaign.Named > 0, campaign.Summary);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static (string Kind, string Description, string Text) Mutate(string original, Random rng)
    {
        var root = JsonNode.Parse(original)!.AsObject();
        var nodes = FuzzInputs.Nodes(root);
        switch (rng.Next(9))
        {
            case 0:
            {
                var at = nodes[rng.Next(nodes.Count)];
                FuzzInputs.Remove(at);
                return ("remove", $"{FuzzInputs.Describe(at)} removed", root.ToJsonString());
            }
            case 1:
            {
                var at = nodes[rng.Next(nodes.Count)];
                var value = FuzzInputs.Retypes[rng.Next(FuzzInputs.Retypes.Length)];
                FuzzInputs.Set(at, JsonNode.Parse(value));
                return ("retype", $"{FuzzInputs.Describe(at)} = {value}", root.ToJsonString());
            }
            case 2:
            {
                var field = IntFields[rng.Next(IntFields.Length)];
                var value = new long[] { 0, -1, -64, 1, 2, 3, 5, 7, 2147483647, 1L << 20, 1L << 40 }[rng.Next(11)];
                root[field] = value;
                return ("out-of-range", $"{field} = {value}", root.ToJsonString());
            }
            case 3:
            {
                var (field, value) = rng.Next(3) switch
                {
                    0 => ("num_attention_heads", new[] { 3, 5, 6, 8 }[rng.Next(4)]),
                    1 => ("num_key_value_heads", new[] { 3, 4, 8 }[rng.Next(3)]),
                    _ => ("head_dim", new[] { 15, 8, 32 }[rng.Next(3)]),
                };
                root[field] = value;
                return ("heads", $"{field} = {value}", root.ToJsonString());
            }
            case 4:
            {
                string description;
                switch (rng.Next(4))
                {
                    case 0:
                        var t = new[] { "yarn", "dynamic", "bogus", "", "longrope", "mrope", "LINEAR" }[rng.Next(7)];
                        root["rope_parameters"]!["rope_type"] = t;
                        description = $"rope_parameters.rope_type = '{t}'";
                        break;
                    case 1:
                        root.Remove("rope_parameters");
                        root["rope_scaling"] = new JsonObject { ["type"] = "unknown-scaling", ["factor"] = 2.0 };
                        description = "legacy rope_scaling of an unknown type";
                        break;
                    case 2:
                        var f = new[] { "0", "-1", "\"x\"", "null", "1e308" }[rng.Next(5)];
                        root["rope_parameters"]!["factor"] = JsonNode.Parse(f);
                        root["rope_parameters"]!["rope_type"] = rng.Next(2) == 0 ? "linear" : "llama3";
                        description = $"rope_parameters {root["rope_parameters"]!["rope_type"]} with factor {f}";
                        break;
                    default:
                        var theta = new[] { "0", "-10000", "\"10000\"", "1e400" }[rng.Next(4)];
                        root["rope_parameters"]!["rope_theta"] = theta == "1e400" ? double.MaxValue : JsonNode.Parse(theta);
                        description = $"rope_theta = {theta}";
                        break;
                }
                return ("rope", description, root.ToJsonString());
            }
            case 5:
            {
                var t = new[] { "mistral", "gemma3n", "qwen2_vl", "gemma4", "", "LLAMA", "llama2", "bert" }[rng.Next(8)];
                root["model_type"] = t;
                return ("model_type", $"model_type = '{t}'", root.ToJsonString());
            }
            case 6:
            {
                int cut = rng.Next(original.Length);
                return ("truncate", $"cut at byte {cut} of {original.Length}", original[..cut]);
            }
            case 7:
            {
                var (field, value) = rng.Next(6) switch
                {
                    0 => ("tie_word_embeddings", (JsonNode)true),
                    1 => ("attention_bias", (JsonNode)true),
                    2 => ("mlp_bias", (JsonNode)true),
                    3 => ("hidden_act", (JsonNode)new[] { "gelu", "relu", "bogus", "gelu_pytorch_tanh" }[rng.Next(4)]),
                    4 => ("rms_norm_eps", (JsonNode)new[] { 0.0, -1e-6, 1e300, 0.5 }[rng.Next(4)]),
                    _ => ("num_hidden_layers", (JsonNode)new[] { 2, 3, 5, 8 }[rng.Next(4)]),
                };
                root[field] = value;
                return ("flip", $"{field} = {value.ToJsonString()}", root.ToJsonString());
            }
            default:
            {
                var bytes = System.Text.Encoding.UTF8.GetBytes(original);
                int at = rng.Next(bytes.Length);
                bytes[at] = (byte)rng.Next(32, 127);
                return ("byte", $"byte {at} -> '{(char)bytes[at]}'", System.Text.Encoding.UTF8.GetString(bytes));
            }
        }
    }
}
