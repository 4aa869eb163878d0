using Harness.Engine.Config;
using Harness.Engine.Models.Gemma4;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Gemma4;

/// <summary>Gemma4's config as the engine reads it: per-type RoPE, KV-sharing sources, double-wide MLPs, clear errors.</summary>
public class Gemma4TextConfigTests
{
    private static Gemma4TextConfig Parse(string shape) => Gemma4TextConfig.From(HfConfig.Parse(TinyGemma4.Config(shape).ToJsonString(), "config.json"));

    [Fact]
    public void Proportional_rope_rotates_partial_factor_of_the_global_head_dim_and_zero_pads_the_rest()
    {
        var c = Parse("e2b-like");                                    // full: proportional, partial 0.5, theta 20000, factor 2; Dg 32
        var inv = Gemma4ForCausalLM.InvFreq(c, "full_attention").ToDoubleArray();
        Assert.Equal(16, inv.Length);                                  // Dg / 2 frequencies, full width
        for (int i = 0; i < 8; i++) Assert.Equal(1.0 / Math.Pow(20000, 2.0 * i / 32) / 2, inv[i], 6);
        for (int i = 8; i < 16; i++) Assert.Equal(0.0, inv[i]);       // n = int(0.5 * 32 // 2) = 8 rotate, the rest never do
        var sliding = Gemma4ForCausalLM.InvFreq(c, "sliding_attention").ToDoubleArray();
        Assert.Equal(8, sliding.Length);                               // default RoPE over head_dim 16, theta 5000
        Assert.Equal(1.0 / Math.Pow(5000, 2.0 / 16), sliding[1], 6);
    }

    [Fact]
    public void Kv_shared_layers_read_the_last_non_shared_layer_of_their_type_and_double_their_mlp()
    {
        var c = Parse("e2b-like");                                    // sliding, full, sliding, full; last 2 shared
        Assert.False(c.IsKvSharedLayer(1));
        Assert.True(c.IsKvSharedLayer(2));
        Assert.Equal(0, c.KvSourceLayer(2));
        Assert.Equal(1, c.KvSourceLayer(3));
        Assert.Equal(96, c.MlpIntermediate(1));
        Assert.Equal(192, c.MlpIntermediate(3));
        Assert.Equal(16, c.LayerHeadDim(2));
        Assert.Equal(32, c.LayerHeadDim(3));
    }

    [Fact]
    public void K_eq_v_full_layers_use_the_global_kv_heads()
    {
        var c = Parse("moe");
        Assert.True(c.KEqV(1));
        Assert.False(c.KEqV(0));
        Assert.Equal(2, c.LayerKvHeads(1));
        Assert.Equal(1, c.LayerKvHeads(0));
    }

    [Fact]
    public void An_unknown_rope_type_names_the_file_and_path()
    {
        var json = TinyGemma4.Config("moe");
        json["rope_parameters"]!["full_attention"]!["rope_type"] = "yarn";
        var e = Assert.Throws<ConfigException>(() => Gemma4TextConfig.From(HfConfig.Parse(json.ToJsonString(), "config.json")));
        Assert.Contains("rope_parameters.full_attention.rope_type", e.Message);
        Assert.Contains("yarn", e.Message);
    }

    [Fact]
    public void Top_k_above_the_expert_count_is_a_config_error()
    {
        var json = TinyGemma4.Config("moe");
        json["top_k_experts"] = 5;
        var e = Assert.Throws<ConfigException>(() => Gemma4TextConfig.From(HfConfig.Parse(json.ToJsonString(), "config.json")));
        Assert.Contains("top_k_experts", e.Message);
    }

    [Fact]
    public void Faults_map_to_explicit_options_and_others_change_nothing()
    {
        Assert.Equal("gelu", Harness.Engine.Models.FaultMap.Plan(Harness.Engine.Runtime.Faults.GeluTanhAsExact, "gemma4").Gemma4.ExpertsActivation);
        Assert.True(Harness.Engine.Models.FaultMap.Plan(Harness.Engine.Runtime.Faults.GateUpSwapped, "gemma4").Gemma4.ExpertsGateUpSwapped);
        Assert.Equal(Gemma4Options.Default, Harness.Engine.Models.FaultMap.Plan(Harness.Engine.Runtime.Faults.SpResidualFirstSlice, "gemma4").Gemma4);
    }
}
