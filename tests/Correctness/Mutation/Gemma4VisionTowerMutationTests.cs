using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4.Vision;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma4's vision tower (src/Engine/Models/Gemma4/Vision/Gemma4VisionConfig.cs, Gemma4VisionModel.cs) on the recorded tiny
/// tower checkpoint (fixtures/models/gemma4-towers-e2b-like-fp32): what the offline catalog's two valid images and
/// Gemma4TowerConfigMutationTests cannot show (the refusals and their messages, where a failure is named, a patch with one
/// -1 coordinate, the pooling_kernel_size 1 path, an all-padding image), each a Stryker.NET mutant that survived them
/// (notes/issue-21-mutg4towers.md), written as the bug report it guards.
/// </summary>
public class Gemma4VisionTowerMutationTests
{
    private const string P = Gemma4VisionModel.DefaultPrefix;

    private static string ModelDir => Path.Combine(Fixtures.DefaultDirectory(), "models", TinyGemma4Towers.ModelName + "-fp32");
    private static string ModelConfig => Path.Combine(ModelDir, "config.json");

    /// <summary>The recorded model's vision_config object, to edit.</summary>
    private static JsonObject VisionConfig() =>
        JsonNode.Parse(File.ReadAllText(ModelConfig))!["vision_config"]!.DeepClone().AsObject();

    private static T WithConfigFile<T>(JsonNode json, Func<string, T> load)
    {
        var path = Path.Combine(Path.GetTempPath(), $"g4-vision-mut-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json.ToJsonString());
        try { return load(path); }
        finally { File.Delete(path); }
    }

    private static Gemma4VisionConfig Load(JsonObject vision) =>
        WithConfigFile(new JsonObject { ["model_type"] = "gemma4", ["vision_config"] = vision }, Gemma4VisionConfig.Load);

    private static ConfigException LoadFails(JsonObject vision) =>
        WithConfigFile(new JsonObject { ["model_type"] = "gemma4", ["vision_config"] = vision },
            path => Assert.Throws<ConfigException>(() => Gemma4VisionConfig.Load(path)));

    private sealed class Recorder : IActivationSink
    {
        public Dictionary<string, Tensor> Values { get; } = [];
        public bool Wants(string module) => true;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Values[module] = value.Contiguous();
    }

    /// <summary>The tower on the recorded checkpoint with the given config (the recorded one by default).</summary>
    private static T WithModel<T>(Func<Gemma4VisionModel, T> use, Gemma4VisionConfig? config = null, IActivationSink? sink = null)
    {
        using var checkpoint = Checkpoint.Open(ModelDir);
        return use(new Gemma4VisionModel(new CheckpointWeights(checkpoint), config ?? Gemma4VisionConfig.Load(ModelConfig), sink));
    }

    /// <summary>One image of a w x h patch grid (row-major positions (x, y)), seeded pixels [1, w*h + pad, 48], pad patches at (-1, -1).</summary>
    private static (Tensor Pixels, Tensor Positions) Grid(int w, int h, int pad = 0, ulong seed = 62)
    {
        int n = w * h + pad;
        var pos = new long[n * 2];
        for (int i = 0; i < n; i++)
        {
            pos[2 * i] = i < w * h ? i % w : -1;
            pos[2 * i + 1] = i < w * h ? i / w : -1;
        }
        return (Tensor.Uniform(DType.Float32, seed, 0, 1, 1, n, TinyGemma4Towers.PatchValues), Tensor.FromArray(pos, 1, n, 2));
    }

    // ---- Gemma4VisionConfig ----

    [Fact]
    public void A_standalone_vision_tower_config_with_model_type_gemma4_vision_is_read_from_its_root()
    {
        var vision = VisionConfig();
        vision["model_type"] = "gemma4_vision";
        var c = WithConfigFile(vision, Gemma4VisionConfig.Load);
        Assert.Equal(Gemma4VisionConfig.Load(ModelConfig), c);
    }

    [Fact]
    public void A_model_without_vision_config_says_it_has_no_vision_tower()
    {
        var e = WithConfigFile(new JsonObject { ["model_type"] = "gemma4" }, path => Assert.Throws<ConfigException>(() => Gemma4VisionConfig.Load(path)));
        Assert.Equal("vision_config", e.JsonPath);
        Assert.Contains("is missing: the model has no vision tower", e.Message);
    }

    [Fact]
    public void A_missing_field_of_the_nested_vision_config_is_named_by_its_path_from_the_document_root()
    {
        var vision = VisionConfig();
        vision.Remove("hidden_size");
        Assert.Equal("vision_config.hidden_size", LoadFails(vision).JsonPath);
    }

    [Fact]
    public void Missing_rope_parameters_are_named_as_missing()
    {
        var vision = VisionConfig();
        vision.Remove("rope_parameters");
        var e = LoadFails(vision);
        Assert.Equal("vision_config.rope_parameters", e.JsonPath);
        Assert.Contains("is missing", e.Message);
    }

    [Fact]
    public void A_rope_parameters_without_rope_type_is_named_at_rope_type()
    {
        var vision = VisionConfig();
        vision["rope_parameters"]!.AsObject().Remove("rope_type");
        Assert.Equal("vision_config.rope_parameters.rope_type", LoadFails(vision).JsonPath);
    }

    [Theory]
    [InlineData("linear")]
    [InlineData("")]
    public void A_rope_type_other_than_default_or_axial_is_refused_naming_it(string type)
    {
        var vision = VisionConfig();
        vision["rope_parameters"]!["rope_type"] = type;
        var e = LoadFails(vision);
        Assert.Equal("vision_config.rope_parameters.rope_type", e.JsonPath);
        Assert.Contains($"is '{type}'; the Gemma4 vision tower's 2-D RoPE is 'default' (transformers 5.12) or 'axial' (5.17)", e.Message);
    }

    [Fact]
    public void Transformers_5_17s_axial_rope_type_reads_as_5_12s_default()
    {
        var vision = VisionConfig();
        vision["rope_parameters"]!["rope_type"] = "axial";
        Assert.Equal(Gemma4VisionConfig.Load(ModelConfig), Load(vision));
    }

    [Fact]
    public void Kv_heads_that_do_not_divide_the_heads_are_refused_naming_both()
    {
        var vision = VisionConfig();
        vision["num_key_value_heads"] = 3;   // 2 heads
        var e = LoadFails(vision);
        Assert.Equal("vision_config.num_key_value_heads", e.JsonPath);
        Assert.Contains("3 does not divide num_attention_heads 2", e.Message);
    }

    [Fact]
    public void A_head_dim_not_a_multiple_of_4_is_refused_two_rotary_halves_of_even_size()
    {
        var vision = VisionConfig();
        vision["head_dim"] = 18;
        var e = LoadFails(vision);
        Assert.Equal("vision_config.head_dim", e.JsonPath);
        Assert.Contains("18 must be a multiple of 4 (two rotary halves of even size)", e.Message);
    }

    // ---- the checkpoint against the config ----

    private static string ShapeError(Action<JsonObject> edit)
    {
        var vision = VisionConfig();
        edit(vision);
        var config = Load(vision);
        return Assert.ThrowsAny<ArgumentException>(() => WithModel(m => m, config)).Message;
    }

    [Fact]
    public void A_patch_size_the_checkpoint_does_not_have_names_input_proj_and_the_config_fields()
    {
        Assert.Equal($"{P}.patch_embedder.input_proj.weight is [32, 48] but the config (vision_config.hidden_size, 3 * patch_size^2) implies [32, 75]",
            ShapeError(v => v["patch_size"] = 5));
    }

    [Fact]
    public void A_position_embedding_size_the_checkpoint_does_not_have_names_the_table_and_the_config_fields()
    {
        Assert.Equal($"{P}.patch_embedder.position_embedding_table is [2, 24, 32] but the config (vision_config.position_embedding_size, hidden_size) implies [2, 25, 32]",
            ShapeError(v => v["position_embedding_size"] = 25));
    }

    [Fact]
    public void An_intermediate_size_the_checkpoint_does_not_have_names_gate_proj()
    {
        Assert.Equal($"{P}.encoder.layers.0.mlp.gate_proj.linear.weight has 48 outputs but vision_config.intermediate_size is 50",
            ShapeError(v => v["intermediate_size"] = 50));
    }

    // ---- Forward's inputs ----

    [Fact]
    public void Pixel_values_without_a_batch_axis_are_refused_naming_the_tower_and_the_shape()
    {
        var (px, pos) = Grid(6, 6);
        var e = Assert.Throws<ArgumentException>(() => WithModel(m => m.Forward(px.Select(0, 0), pos)));
        Assert.Equal($"{P}: pixel_values must be [batch, patches, 3*patch_size^2], got [36, 48]", e.Message);
    }

    [Fact]
    public void Pixel_values_of_another_patch_size_are_refused_naming_patch_size()
    {
        var (px, pos) = Grid(6, 6);
        var e = Assert.Throws<ArgumentException>(() => WithModel(m => m.Forward(px.Narrow(2, 0, 47).Contiguous(), pos)));
        Assert.Equal($"{P}: pixel_values [1, 36, 47] must hold 3 * patch_size^2 = 48 values per patch (vision_config.patch_size 4)", e.Message);
    }

    public static TheoryData<int[], string> BadPositions() => new()
    {
        { [36, 2], "[36, 2]" },            // no batch axis (rank 2)
        { [1, 36], "[1, 36]" },            // rank 2 with the batch right
        { [2, 36, 2], "[2, 36, 2]" },      // another batch
        { [1, 35, 2], "[1, 35, 2]" },      // another patch count
        { [1, 36, 3], "[1, 36, 3]" },      // three coordinates
    };

    [Theory]
    [MemberData(nameof(BadPositions))]
    public void Position_ids_of_another_shape_are_refused_naming_both_shapes(int[] shape, string shown)
    {
        var (px, _) = Grid(6, 6);
        var positions = Tensor.Zeros(DType.Int64, shape);
        var e = Assert.Throws<ArgumentException>(() => WithModel(m => m.Forward(px, positions)));
        Assert.Equal($"{P}: pixel_position_ids {shown} must be [1, 36, 2] for pixel_values [1, 36, 48]", e.Message);
    }

    [Theory]
    [InlineData(-1L, 0L)]
    [InlineData(0L, -1L)]
    public void A_patch_with_one_coordinate_minus_1_is_not_padding_its_pixels_reach_the_soft_tokens(long x, long y)
    {
        // HF: padding = (pixel_position_ids == -1).all(-1): a patch is padding only when both coordinates are -1
        var (px, pos) = Grid(6, 6);
        var p = pos.ToInt64Array();
        p[0] = x; p[1] = y;                                                          // patch 0 at (x, y) instead of (0, 0)
        var positions = Tensor.FromArray(p, 1, 36, 2);
        var other = px.Clone();
        other.Set(0.9, 0, 0, 0);                                                    // another value in patch 0 only
        var a = WithModel(m => m.Forward(px, positions)).SoftTokens.ToFloatArray();
        var b = WithModel(m => m.Forward(other, positions)).SoftTokens.ToFloatArray();
        Assert.NotEqual(a, b);
    }

    // ---- where a failure is named ----

    [Fact]
    public void A_position_beyond_the_position_table_fails_in_the_patch_embedder()
    {
        var (px, pos) = Grid(6, 6);
        var p = pos.ToInt64Array();
        p[2 * 35] = 24;                                                             // x = 24, the table has 24 rows
        var e = Assert.Throws<ModuleFailedException>(() => WithModel(m => m.Forward(px, Tensor.FromArray(p, 1, 36, 2))));
        Assert.Equal($"{P}.patch_embedder", e.Module);
    }

    [Fact]
    public void A_patch_beyond_the_pooled_grid_is_refused_in_the_pooler_naming_it_and_its_token()
    {
        // a 6x6 grid pools to 9 tokens (x/2 + 3 * (y/2)); patch 35 moved from (5, 5) to (0, 7) falls in token 0 + 3 * 3 = 9
        var (px, pos) = Grid(6, 6);
        var p = pos.ToInt64Array();
        p[2 * 35] = 0; p[2 * 35 + 1] = 7;
        var e = Assert.Throws<ModuleFailedException>(() => WithModel(m => m.Forward(px, Tensor.FromArray(p, 1, 36, 2))));
        Assert.Equal($"{P}.pooler", e.Module);
        Assert.Equal($"{P}.pooler: patch (0, 7) of image 0 falls in pooled token 9, beyond the 9 pooled tokens", e.InnerException!.Message);
    }

    [Fact]
    public void A_patch_count_that_is_not_a_multiple_of_the_pooling_window_is_refused_in_the_pooler()
    {
        // 37 patches pool to 37 / 4 = 9 tokens, k = floor(sqrt(37 / 9)) = 2, and 2^2 x 9 = 36, not 37
        var (px, pos) = Grid(6, 6, pad: 1);
        var e = Assert.Throws<ModuleFailedException>(() => WithModel(m => m.Forward(px, pos)));
        Assert.Equal($"{P}.pooler", e.Module);
        Assert.Equal("Cannot pool [1, 37, 32] to 9: k=2^2 times length=9 must be 37.", e.InnerException!.Message);
    }

    [Fact]
    public void Each_image_contributes_its_own_count_of_soft_tokens()
    {
        // catalog images: a 6x6 grid pools to 3x3 = 9 tokens, a 4x4 grid (and 20 padding patches) to 2x2 = 4; Gemma4Model
        // places each image's tokens at its own placeholders by these counts
        var (pixels, positions) = TinyGemma4Towers.VisionInputs(DType.Float32);
        var output = WithModel(m => m.Forward(pixels, positions));
        Assert.Equal([9, 4], output.TokensPerImage);
        Assert.Equal([13, 32], output.SoftTokens.Shape);
    }

    // ---- pooling_kernel_size 1: no pooling ----

    private static Gemma4VisionConfig Unpooled() => Gemma4VisionConfig.Load(ModelConfig) with { PoolingKernelSize = 1 };

    [Fact]
    public void With_pooling_kernel_size_1_every_real_patch_is_a_soft_token_scaled_by_sqrt_hidden()
    {
        // HF: output_length == N, so the pooler skips _avg_pool_by_positions: pooled = where(padding, 0, h) * sqrt(hidden)
        // and the soft tokens are the non-padding rows, standardized. Catalog image 1: a 4x4 grid and 20 padding patches.
        var (pixels, positions) = TinyGemma4Towers.VisionInputs(DType.Float32);    // [2, 36, 48], [2, 36, 2]
        var sink = new Recorder();
        var output = WithModel(m => m.Forward(pixels, positions), Unpooled(), sink);
        Assert.Equal([36, 16], output.TokensPerImage);
        Assert.Equal([52, 32], output.SoftTokens.Shape);

        var h = sink.Values[$"{P}.encoder.layers.1"];                                 // [2, 36, 32]
        var pooled = sink.Values[$"{P}.pooler"];                                      // [2, 36, 32] float32
        var pos = positions.ToInt64Array();
        var hv = h.ToFloatArray();
        var pv = pooled.ToFloatArray();
        float root = MathF.Sqrt(32);
        for (int i = 0; i < 2 * 36; i++)
        {
            bool pad = pos[2 * i] == -1 && pos[2 * i + 1] == -1;
            for (int d = 0; d < 32; d++)
                Assert.Equal(pad ? 0f : hv[i * 32 + d] * root, pv[i * 32 + d], 1e-4f);
        }
    }

    [Fact]
    public void With_pooling_kernel_size_1_an_all_padding_image_has_no_soft_tokens_rather_than_failing()
    {
        var (px, pos) = Grid(0, 0, pad: 4);                                           // [1, 4, 48], every patch (-1, -1)
        var output = WithModel(m => m.Forward(px, pos), Unpooled());
        Assert.Equal([0], output.TokensPerImage);
        Assert.Equal([0, 32], output.SoftTokens.Shape);
    }
}
