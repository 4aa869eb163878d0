#!/usr/bin/env python3
"""Random-weight checkpoints at the published dimensions of released models, for `harness compare` at real size.

    make-published-dims.py NAME OUT_DIR [--dtype bf16|fp32] [--device cpu|cuda] [--layers N] [--seed S] [--small]

NAME: llama-3.2-1b, llama-3.1-8b, qwen2-vl-2b, qwen2-vl-7b, gemma3n-e2b-text, gemma3n-e4b-text, gemma4-e2b-text,
gemma4-26b-a4b-text, and the multimodal gemma3n-e4b and gemma4-e2b, written WITH their processor (tokenizer, audio feature
extractor, image processor: PROCESSORS) for `harness compare --model DIR --image FILE.png` / `--audio FILE.wav` (`list`
prints them); gemma3n-e4b carries timm's MobileNetV5 vision tower at its released config (the reference needs timm).
Every value below is the released config.json's, with where it was read; only the weights are random (HF's own init, then
every parameter whose elements are all equal, norms and biases, moved by seeded N(0, 0.1) noise, as the harness's tiny
models are, so a port that ignores a scale cannot pass). --layers N keeps the first N layers (the memory prediction's
"fewer layers"; KV sharing is cut so that every attention type keeps a layer of its own to share from). Needs torch and
transformers (the reference interpreter: HARNESS_PYTHON).

--small (checking a script on a CPU machine, NOT published dimensions): SMALL's narrower widths for the models that have an
entry there, keeping what the scripts' layouts and prompts rely on (head counts that split over their TP, the vocabulary
with its special ids, the image geometry, the MoE's routing; Gemma3n's image processor resizes to 256 x 256, which keeps
the 256 image tokens: SMALL_PROCESSORS); use it with --layers.

Gemma4: the smallest dense model (E2B) and the MoE (26B-A4B), text decoders (Gemma4ForCausalLM, model_type gemma4_text:
what the engine's checkpoint compare runs). 26B-A4B is 25.2B parameters, 50 GB in bf16: one 80 GB card holds one side,
not the engine and the reference together; on one card run it with --layers 16 (about 28 GB a side), or keep the
reference on the host.
"""

import argparse
import json
import os
import sys

# Llama-3.2-1B: meta-llama/Llama-3.2-1B config.json (as quoted in kevinstephano/thunder_model_blocks hf_llama/llama_config.py,
# "_commit_hash": "4e20de362430cd3b72f300e6b0f18e50e7166e08").
LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False,
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "vocab_size": 128256,
}

# Llama-3.1-8B: meta-llama/Llama-3.1-8B config.json (hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 kv heads,
# rope llama3 factor 8; the same keys as 3.2-1B's above, untied embeddings).
LLAMA_3_1_8B = dict(LLAMA_3_2_1B, **{
    "head_dim": 128, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
})

# Qwen2-VL-7B: Qwen/Qwen2-VL-7B-Instruct config.json; the module tree printed in acproject/duorou docs/new_feat.md and
# zhenhua32/Qwen2-VL READ.md (embed 152064 x 3584, 28 layers, q 3584, k/v 512 = 4 kv heads x 128, MLP 18944; vision:
# Conv3d(3, 1280, (2, 14, 14)), 32 blocks of 1280 with 16 heads, mlp 5120, merger 5120 -> 3584).
QWEN2_VL_7B = {
    "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", "hidden_act": "silu",
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                      "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
}

# Qwen2-VL-2B: Qwen/Qwen2-VL-2B-Instruct config.json (hidden 1536, intermediate 8960, 28 layers, 12 heads, 2 kv heads,
# vocab 151936, tied embeddings; the same vision tower, merged to 1536).
QWEN2_VL_2B = dict(QWEN2_VL_7B, **{
    "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12, "num_key_value_heads": 2,
    "vocab_size": 151936, "tie_word_embeddings": True,
    "vision_config": dict(QWEN2_VL_7B["vision_config"], hidden_size=1536),
})

# Gemma3n E4B text decoder: google/gemma-3n-E4B-it config.json text_config, which transformers' Gemma3nTextConfig()
# defaults reproduce (the notes in shared/notes/hf-gemma3n-gemma4-qwen2vl.md, section 1.1): hidden 2048, 35 layers,
# 8 heads / 2 kv heads, head_dim 256, intermediate 16384, vocab 262400 (262144 per-layer), per-layer input 256,
# AltUp 4, laurel rank 64, 15 KV-shared layers, sliding window 512, softcap 30, sparsity 0.95 on the first 10 layers.
GEMMA3N_E4B_TEXT = {
    "architectures": ["Gemma3nForCausalLM"], "model_type": "gemma3n_text", "hidden_size": 2048,
    "num_hidden_layers": 35, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256,
    "intermediate_size": 16384, "vocab_size": 262400, "vocab_size_per_layer_input": 262144,
    "hidden_size_per_layer_input": 256, "altup_num_inputs": 4, "laurel_rank": 64, "num_kv_shared_layers": 15,
    "sliding_window": 512, "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-06,
    "activation_sparsity_pattern": [0.95] * 10 + [0.0] * 25,
    "layer_types": ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(35)],
    "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768,
    "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
}

# Gemma3n E2B text decoder: google/gemma-3n-E2B-it config.json text_config: 30 layers, intermediate 8192, 10 KV-shared
# layers, otherwise E4B's (30 decoder layers as maceip/gemma3n-executorch e2b/README_HF.md states).
GEMMA3N_E2B_TEXT = dict(GEMMA3N_E4B_TEXT, **{
    "num_hidden_layers": 30, "intermediate_size": 8192, "num_kv_shared_layers": 10,
    "activation_sparsity_pattern": [0.95] * 10 + [0.0] * 20,
    "layer_types": ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(30)],
})

# Gemma4 E2B text decoder: google/gemma-4-E2B-it config.json text_config (the file is on the hub, e.g. copied whole in
# huggingface.co/EvilScript/taboo-cloud-gemma-4-E2B-it commit eda739b "Copy config.json from google/gemma-4-E2B-it"; the
# search corpus keeps only its first lines). The values, as quoted whole in three independent ports' tests (search tool,
# code corpus, stored files 54091846013: a Swift port's e2bConfigJSON; 54660026632: a Rust port's
# real_gemma4_e2b_text_config, "Real layer pattern from the checkpoint"; 53141176458: test_detect_gemma4_e2b, "Real E2B
# config"), which agree: hidden 1536, 35 layers, intermediate 6144 (double-wide on the 20 KV-shared layers), 8 heads /
# 1 kv head, head_dim 256, global_head_dim 512, vocab 262144 (and per-layer 262144), per-layer input 256, sliding window
# 512, max positions 131072, softcap 30, rope: sliding default theta 1e4, full proportional theta 1e6 with partial factor
# 0.25; layer_types 4 sliding then 1 full, 7 times. hidden_activation gelu_pytorch_tanh (62149741222: a converter's
# validate_text_config for the checkpoint), bos 2 / eos 1 (huggingface.co/mlboydaisuke/gemma-4-E2B-coreml model_config.json).
GEMMA4_E2B_TEXT = {
    "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_size": 1536, "num_hidden_layers": 35,
    "intermediate_size": 6144, "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "global_head_dim": 512,
    "rms_norm_eps": 1e-06, "vocab_size": 262144, "vocab_size_per_layer_input": 262144, "hidden_size_per_layer_input": 256,
    "num_kv_shared_layers": 20, "sliding_window": 512, "max_position_embeddings": 131072, "final_logit_softcapping": 30.0,
    "attention_bias": False, "attention_k_eq_v": False, "use_double_wide_mlp": True, "enable_moe_block": False,
    "tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh",
    "rope_parameters": {"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
                        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    "layer_types": (["sliding_attention"] * 4 + ["full_attention"]) * 7,
    "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
}

# Gemma4 26B-A4B (the MoE) text decoder: google/gemma-4-26B-A4B-it config.json text_config, as quoted in two ports'
# tests (search tool, code corpus, stored files 66640043689: a Rust port's SAMPLE, architectures
# Gemma4ForConditionalGeneration, eos [1, 106]; 58004776520: a Go MLX port's TestParseTextConfig26B) and a third's
# GEMMA4_26B_CONFIG (52178922134): hidden 2816, 30 layers, dense MLP 2112 beside 128 experts of 704 (top 8), 16 heads,
# 8 kv heads on sliding layers and 2 on full ones (attention_k_eq_v: V is K there), head_dim 256, global_head_dim 512,
# vocab 262144, sliding window 1024, max positions 262144 (two of the three; the Go test has 131072), softcap 30, no
# per-layer inputs, no KV sharing, no double-wide MLP, E2B's rope parameters; layer_types 5 sliding then 1 full, 5 times.
GEMMA4_26B_A4B_TEXT = {
    "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_size": 2816, "num_hidden_layers": 30,
    "intermediate_size": 2112, "num_attention_heads": 16, "num_key_value_heads": 8, "num_global_key_value_heads": 2,
    "head_dim": 256, "global_head_dim": 512, "rms_norm_eps": 1e-06, "vocab_size": 262144, "hidden_size_per_layer_input": 0,
    "num_kv_shared_layers": 0, "sliding_window": 1024, "max_position_embeddings": 262144, "final_logit_softcapping": 30.0,
    "attention_bias": False, "attention_k_eq_v": True, "use_double_wide_mlp": False, "enable_moe_block": True,
    "num_experts": 128, "top_k_experts": 8, "moe_intermediate_size": 704, "tie_word_embeddings": True,
    "hidden_activation": "gelu_pytorch_tanh",
    "rope_parameters": {"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
                        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 5,
    "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
}

def _nested_text(cfg, model_type):
    """A text decoder's dict as the text_config of a multimodal checkpoint (no architectures; the sub-config's type)."""
    return dict({k: v for k, v in cfg.items() if k != "architectures"}, model_type=model_type)


# Gemma3n E4B whole (Gemma3nForConditionalGeneration: text decoder, vision and audio towers, both multimodal embedders;
# issue 22 seed (d)): transformers 5.12.1's Gemma3nConfig() defaults, which are google/gemma-3n-E4B-it's config.json (the
# Gemma3nConfig docstring names it; the text part is GEMMA3N_E4B_TEXT above): the USM audio tower (hidden 1536, 12
# conformer layers of 8 heads, chunk 12, left context 13, logit cap 50, SSCP channels 128/32 over 128 mel bins), the
# vision embedder's width 2048 (MobileNetV5-300M's output) with 128 hard tokens from 262144, the audio embedder's 128
# from 262272, 188 audio and 256 image soft tokens, and the special ids (boi 255999, eoi 262144, image 262145, boa
# 256000, eoa 262272, audio 262273).
# The VISION TOWER is timm's MobileNetV5 (HF: TimmWrapperModel -> timm.create_model(architecture, pretrained=False,
# **model_args); timm 1.0.29 vendored in ci/vendor for the reference's chroot, in the GPU machine's venv), built whole:
# 294,126,912 parameters, written as model.vision_tower.timm_model.* so that `compare --image FILE` runs both towers.
# GEMMA3N_E4B_VISION is the released vision_config as kept by a config module generated from a released Gemma 3n
# config.json (search tool, code corpus, stored file 30729147425, its keys in the file's alphabetical order; its text
# defaults are E2B's, 30 layers with 10 KV-shared, and both sizes ship the one MobileNetV5-300M):
# Gemma3nVisionConfig(architecture="mobilenetv5_300m_enc", do_pooling=True, hidden_size=2048, initializer_range=0.02,
# label_names=["LABEL_0", "LABEL_1"], num_classes=2, rms_norm_eps=1e-06, vocab_offset=262144, vocab_size=128), and no
# model_args (null): the released tower is timm's mobilenetv5_300m_enc at timm's own defaults (channel_multiplier 1.0,
# msfa_output_resolution 16: 768 / 48 = 16 x 16 = 256 soft tokens). transformers 5.12.1's Gemma3nVisionConfig() agrees but
# for do_pooling (False); neither side reads do_pooling, num_classes or label_names (get_image_features passes
# do_pooling=False, the wrapper builds the encoder without a classifier), but a released folder has them.
GEMMA3N_E4B_VISION = {"model_type": "gemma3n_vision", "architecture": "mobilenetv5_300m_enc", "do_pooling": True,
                      "hidden_size": 2048, "initializer_range": 0.02, "label_names": ["LABEL_0", "LABEL_1"], "model_args": None,
                      "num_classes": 2, "rms_norm_eps": 1e-06, "vocab_offset": 262144, "vocab_size": 128}
GEMMA3N_E4B = {
    "architectures": ["Gemma3nForConditionalGeneration"], "model_type": "gemma3n",
    "text_config": _nested_text(GEMMA3N_E4B_TEXT, "gemma3n_text"),
    "vision_config": GEMMA3N_E4B_VISION,
    "audio_config": {"model_type": "gemma3n_audio", "vocab_size": 128, "vocab_offset": 262272, "input_feat_size": 128,
                     "hidden_size": 1536, "rms_norm_eps": 1e-06, "gradient_clipping": 10000000000.0,
                     "conf_attention_chunk_size": 12, "conf_attention_context_left": 13, "conf_attention_context_right": 0,
                     "conf_attention_logit_cap": 50.0, "conf_num_attention_heads": 8, "conf_num_hidden_layers": 12,
                     "conf_conv_kernel_size": 5, "conf_reduction_factor": 4, "conf_residual_weight": 0.5,
                     "sscp_conv_channel_size": [128, 32], "sscp_conv_group_norm_eps": 0.001,
                     "sscp_conv_kernel_size": [[3, 3], [3, 3]], "sscp_conv_stride_size": [[2, 2], [2, 2]]},
    "audio_soft_tokens_per_image": 188, "vision_soft_tokens_per_image": 256,
    "boi_token_id": 255999, "eoi_token_id": 262144, "image_token_id": 262145,
    "boa_token_id": 256000, "eoa_token_id": 262272, "audio_token_id": 262273,
    "initializer_range": 0.02, "tie_word_embeddings": True,
}

# Gemma4 E2B whole (Gemma4ForConditionalGeneration: text decoder, vision and audio towers, both embedders; issue 22 seed
# (e)): the text part is GEMMA4_E2B_TEXT above; the towers are transformers 5.12.1's Gemma4VisionConfig() and
# Gemma4AudioConfig() defaults, which agree with google/gemma-4-E2B-it's config.json as quoted in ports' tests (search
# tool, code corpus: ollama's releasedGemma4AudioConfig "audio_config" - hidden 1024, 12 layers, 8 heads, channels
# 128/32, chunk 12, left 13, right 0, logit cap 50, output_proj_dims 1536, use_clipped_linears true; a Rust port's
# E2B metadata test - vision hidden 768, 16 layers, 12 heads, intermediate 3072, patch 16, 280 soft tokens; position
# table 10240): vision 2-D RoPE theta 100, pooling 3, no clipped linears, no standardize. The special ids are
# Gemma4Config()'s (boi 255999, eoi 258882, image 258880, audio 258881, video 258884, boa 256000, eoa 258883).
GEMMA4_E2B = {
    "architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
    "text_config": _nested_text(GEMMA4_E2B_TEXT, "gemma4_text"),
    "vision_config": {"model_type": "gemma4_vision", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 16,
                      "num_attention_heads": 12, "num_key_value_heads": 12, "head_dim": 64,
                      "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-06, "max_position_embeddings": 131072,
                      "attention_bias": False, "rope_parameters": {"rope_type": "default", "rope_theta": 100.0},
                      "pooling_kernel_size": 3, "patch_size": 16, "position_embedding_size": 10240,
                      "use_clipped_linears": False, "standardize": False},
    "audio_config": {"model_type": "gemma4_audio", "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 8,
                     "hidden_act": "silu", "subsampling_conv_channels": [128, 32], "conv_kernel_size": 5,
                     "residual_weight": 0.5, "attention_chunk_size": 12, "attention_context_left": 13,
                     "attention_context_right": 0, "attention_logit_cap": 50.0,
                     "attention_invalid_logits_value": -1000000000.0, "use_clipped_linears": True, "rms_norm_eps": 1e-06,
                     "gradient_clipping": 10000000000.0, "output_proj_dims": 1536},
    "boi_token_id": 255999, "eoi_token_id": 258882, "image_token_id": 258880, "video_token_id": 258884,
    "boa_token_id": 256000, "eoa_token_index": 258883, "audio_token_id": 258881,
    "initializer_range": 0.02, "tie_word_embeddings": True,
}

MODELS = {
    "llama-3.2-1b": LLAMA_3_2_1B, "llama-3.1-8b": LLAMA_3_1_8B,
    "qwen2-vl-2b": QWEN2_VL_2B, "qwen2-vl-7b": QWEN2_VL_7B,
    "gemma3n-e2b-text": GEMMA3N_E2B_TEXT, "gemma3n-e4b-text": GEMMA3N_E4B_TEXT,
    "gemma4-e2b-text": GEMMA4_E2B_TEXT, "gemma4-26b-a4b-text": GEMMA4_26B_A4B_TEXT,
    "gemma3n-e4b": GEMMA3N_E4B, "gemma4-e2b": GEMMA4_E2B,
}

# The processor saved beside a multimodal checkpoint's weights, as a released folder has one, so that `harness compare
# --model DIR --audio FILE.wav` / `--image FILE` go through the checkpoint's own processor (AutoProcessor from the
# folder). Built by save_processor of src/Reference/python/ext/media.py (the one that writes the tiny models' processors):
# - the TOKENIZER is a word-level one: the released SentencePiece model (262144 pieces) is a data file, not a config, and a
#   random checkpoint has no use for its merges; its special tokens carry the published ids (bos 2, eos 1, pad 0 and the
#   config's image/audio/boi/eoi/boa/eoa ids) and PROMPT_WORDS take ids from 10, so --text "transcribe this sound" gives
#   real ids and the placeholders expand as the released processor expands them;
# - the feature extractor, the image processor and the processor's own fields are the released ones: transformers 5.12.1's
#   defaults for these classes (Gemma3nAudioFeatureExtractor: 16 kHz, 128 mel bins, 125-7600 Hz, preemphasis 0.97, mel floor
#   1e-5; Gemma4AudioFeatureExtractor: 16 kHz, 128 bins, 0-8000 Hz, mel floor 1e-3; Gemma4ImageProcessor: patch 16, pooling 3,
#   280 soft tokens; Gemma3nProcessor: 188 audio / 256 image tokens; Gemma4Processor: 280 image tokens, 40 ms an audio
#   token), except Gemma3n's image processor, which is the released one, not the class's defaults (below);
# - Gemma3n's image processor: the released preprocessor_config.json's SiglipImageProcessorFast (transformers 5's
#   SiglipImageProcessor, the torchvision backend) with size 768 x 768 (MobileNetV5's input: 256 soft tokens at its
#   stride 48), resample 2 (bilinear; the class's default is bicubic), do_rescale with 1/255, do_normalize false (the
#   class's default is true; image_mean / image_std 0.5 are kept but unused): the tower takes pixels in [0, 1], as timm's
#   own pretrained config for the Gemma 3n tower says (timm 1.0.29 mobilenetv5.py, 'mobilenetv5_300m.gemma3n':
#   mean (0, 0, 0), std (1, 1, 1)). The values as a port's test writes the released file (search tool, code corpus,
#   stored file 57350881973: "do_normalize": false, "do_rescale": true, "image_mean" [0.5, 0.5, 0.5], "image_processor_type"
#   "SiglipImageProcessorFast", "image_std" [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 0.00392156862745098,
#   "size" 768 x 768), and Gemma3nProcessor's image_seq_length 256;
# - the chat template is the tiny models' (bos, then the user's media placeholders and text): --chat works, without the
#   released template's turn markers (not in the word-level vocabulary).
PROMPT_WORDS = ["describe", "transcribe", "this", "picture", "sound", "hello", "world", "what", "is", "in", "the"]
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}{IMAGE}{% elif c['type'] == 'audio' %}{AUDIO}"
                 "{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}")
PROCESSORS = {
    "gemma3n-e4b": {
        "family": "gemma3n",
        "tokens": {"image_token": ("<image_soft_token>", "image_token_id"), "audio_token": ("<audio_soft_token>", "audio_token_id"),
                   "boi_token": ("<start_of_image>", "boi_token_id"), "eoi_token": ("<end_of_image>", "eoi_token_id"),
                   "boa_token": ("<start_of_audio>", "boa_token_id"), "eoa_token": ("<end_of_audio>", "eoa_token_id")},
        "processor": {"size": {"height": 768, "width": 768}, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
                      "do_normalize": False, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
        "feature_extractor": {},
        "processor_fields": {"audio_seq_length": 188, "image_seq_length": 256},
    },
    "gemma4-e2b": {
        "family": "gemma4",
        "tokens": {"image_token": ("<|image|>", "image_token_id"), "audio_token": ("<|audio|>", "audio_token_id"),
                   "video_token": ("<|video|>", "video_token_id"),
                   "boi_token": ("<|image>", "boi_token_id"), "eoi_token": ("<image|>", "eoi_token_id"),
                   "boa_token": ("<|audio>", "boa_token_id"), "eoa_token": ("<audio|>", "eoa_token_index")},
        "processor": {},
        "feature_extractor": {},
        "processor_fields": {"image_seq_length": 280, "audio_seq_length": 750},
    },
}


# --small: narrower widths for checking ci/gpu-seed-bugs.sh on a CPU (not published dims). Every head count keeps its split
# over the script's TP (Qwen2-VL-7B 28/4 heads, 4 kv heads, 16 vision heads at TP=4; Llama 32/8 at TP=2; Gemma4 16/8/2),
# the vocabularies keep their special ids, mrope_section sums to head_dim / 2, the MoE keeps top-k of several experts.
SMALL = {
    "qwen2-vl-7b": {"hidden_size": 448, "intermediate_size": 160, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
                    "vision_config": dict(QWEN2_VL_7B["vision_config"], depth=1, embed_dim=128, hidden_size=448)},
    "llama-3.1-8b": {"hidden_size": 256, "head_dim": 8, "intermediate_size": 352},
    "gemma4-26b-a4b-text": {"hidden_size": 128, "head_dim": 16, "global_head_dim": 32, "intermediate_size": 96,
                            "num_experts": 16, "top_k_experts": 4, "moe_intermediate_size": 40},
    # the multimodal ones keep every tower width, head split, the vocabularies and the special ids, and the processor:
    # the text decoder narrows to hidden 256 (the tied 262400 x 2048 table and its float64 logits are what a CPU cannot
    # hold beside the rest), each transformer tower keeps 2 of its layers; Gemma3n's MobileNetV5 stays whole (its 84
    # blocks are fixed by the architecture name) at its published width, and its image shrinks instead (SMALL_PROCESSORS)
    "gemma3n-e4b": {"text_config": {"hidden_size": 256, "intermediate_size": 512}, "audio_config": {"conf_num_hidden_layers": 2}},
    "gemma4-e2b": {"text_config": {"hidden_size": 256, "intermediate_size": 512},
                   "vision_config": {"num_hidden_layers": 2}, "audio_config": {"num_hidden_layers": 2}},
}

# --small's processor settings (SMALL's image side): Gemma3n's image processor resizes to 256 x 256 instead of 768 x 768,
# one of the three input resolutions Gemma 3n was released for ("256x256, 512x512, or 768x768 resolution and encoded to
# 256 tokens each", the model card's inputs): the tower's stage-2 map is then 16 x 16 = msfa_output_resolution, so the
# prompt keeps its 256 image soft tokens (and torch's messages their row counts) while the tower keeps its published
# architecture and width. Measured on the 2-core CPU machine (timm 1.0.29, forward_features of the published tower, one
# image): at 768 x 768 255 s in float32 and 81 s in bf16 (channel_multiplier 0.0125, the narrowest the tiny tower uses, is
# no cure: 81 s / 61 s / 152 s in float64, as the attention blocks' widths are fixed); at 256 x 256 8.5 s / 2.3 s / 14.8 s.
SMALL_PROCESSORS = {
    "gemma3n-e4b": {"processor": {"size": {"height": 256, "width": 256}}},
}


def merged(cfg, over):
    """cfg with over's values, nested dicts merged key by key (a copy; neither is changed)."""
    out = json.loads(json.dumps(cfg))
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else json.loads(json.dumps(v))
    return out


def keep_layers(cfg, n):
    """The first n layers of the text decoder (of text_config in a multimodal checkpoint; its towers keep theirs)."""
    cfg = json.loads(json.dumps(cfg))
    if "text_config" in cfg:
        cfg["text_config"] = keep_layers(cfg["text_config"], n)
        return cfg
    cfg["num_hidden_layers"] = n
    every_type = sorted(set(cfg.get("layer_types") or []))
    for key in ("layer_types", "activation_sparsity_pattern"):
        if key in cfg:
            cfg[key] = cfg[key][:n]
    if len(every_type) == 2 and n >= 2 and len(set(cfg["layer_types"])) == 1:
        # the first n layers are all of one type (Gemma3n's first full attention layer is its fifth): the last kept layer
        # takes the other, as HF itself makes Gemma4's last layer full attention, so that both types' rope_parameters
        # (read per type only when both are used) and code paths stay
        cfg["layer_types"][-1] = next(t for t in every_type if t != cfg["layer_types"][0])
    if cfg.get("num_kv_shared_layers"):
        # a KV-shared layer reads the last non-shared layer of its own type: every type the kept layers use must have
        # one before the shared ones start (HF forces Gemma4's last layer to full attention)
        types = list(cfg.get("layer_types") or [])
        if cfg["model_type"].startswith("gemma4") and types:
            types[-1] = "full_attention"
        first = max((types.index(t) for t in set(types)), default=0) + 1
        cfg["num_kv_shared_layers"] = max(0, min(cfg["num_kv_shared_layers"], n - first))
    return cfg


def condition(model):
    """Scales q_norm and k_norm weights by head_dim^-0.25 in every attention that has them and no 1/sqrt(head_dim) scaling of
    its own (Gemma3n, Gemma4: `self.scaling = 1.0`), so that a random checkpoint is as well-conditioned in bf16 as a trained one.

    WHY: q_norm/k_norm make q and k unit-RMS per head, so with scaling 1.0 and weights ~1 each logit q.k has a standard
    deviation of sqrt(head_dim) (16 for head_dim 256, 22.6 for 512): the softmax is near-argmax (mean max probability 0.91
    measured on gemma4-e2b-text), a bf16 rounding of q or k moves weight between keys, and the error compounds over the depth:
    bf16 against float64 grew from 2.4% at layer 0 to 22% at layer 4 (75% at layer 34 on the GPU), which makes every
    per-module verdict vacuous. A trained model learns these norm weights so that q.k is O(1); head_dim^-0.25 on each side
    gives logits of standard deviation ~1 (max probability ~0.2), and the same model then stays at 0.9% -> 1.4% (notes/
    issue-22-conditioning.md). Only weights change; the published config values stay as they are, and the engine still
    reads a norm weight far from 1 (a port that ignores it fails). Scales the MoE router's projection likewise (below).
    Models without q_norm or a router (Llama, Qwen2-VL) are untouched: their checkpoints are byte-identical."""
    import torch
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "scaling", None) == 1.0 and hasattr(module, "q_norm"):
                for norm in (module.q_norm, getattr(module, "k_norm", None)):  # KV-shared layers have no k_norm of their own
                    if norm is not None:
                        norm.weight.mul_(norm.weight.shape[-1] ** -0.25)
            if hasattr(module, "per_expert_scale") and hasattr(module, "proj"):
                # Gemma4's MoE router: scores = proj(rmsnorm(x) * scale * hidden^-0.5) have a standard deviation of
                # proj's init std (0.02), so the softmax is uniform to 2% and, rounded to bf16 (spacing 2^-12 at 1/16),
                # the top-k picks among ties: bf16 and float64 route to different experts from layer 0 on (with the q/k
                # scaling above, --small, 30 layers: 19% error at layer 0, 58% at model.norm). A trained router
                # separates its experts by a few units: proj x 4 / initializer_range gives scores of standard deviation
                # ~4, and the boundary expert whose choice a rounding can flip carries a small weight (bf16 vs float64
                # at model.norm, same model: score std 1 15%, std 4 7.1%, std 8 10.8%; the top-k weights stay mixed,
                # so every chosen expert still counts).
                module.proj.weight.mul_(4 / model.config.initializer_range)


def build_random(cfg, dtype_name, device, seed, conditioned=True):
    """The model of a config dict (model_type and architectures in it) with seeded random weights (see write_random);
    conditioned=False leaves out condition() (the ill-conditioned checkpoints written before, for comparison)."""
    import torch
    import transformers
    cfg = dict(cfg)
    model_type = cfg.pop("model_type")
    arch = cfg.pop("architectures")[0]
    if model_type == "gemma3n":
        # the reference's own Gemma3n config reader (JSON's integer 0.0s back to floats); the vision tower is timm's, built
        # by HF's TimmWrapperModel as the reference builds it from the folder (timm 1.0.29: ci/vendor)
        config = worker_ext("gemma3n.py")["_gemma3n_config"](cfg)
    else:
        config = transformers.AutoConfig.for_model(model_type, **cfg)
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        model = getattr(transformers, arch)._from_config(config, dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(seed ^ 0x5EED)
    with torch.no_grad():
        for _, t in sorted(list(model.named_parameters()), key=lambda kv: kv[0]):
            if t.numel() > 1 and t.is_floating_point() and bool((t == t.reshape(-1)[0]).all()):
                t.add_(torch.randn(t.shape, generator=gen, device=t.device, dtype=torch.float32).to(t.dtype) * 0.1)
    if conditioned:
        condition(model)
    model.config.dtype = dtype
    return model


def worker_ext(name):
    """The namespace of one of the reference worker's extension files (src/Reference/python/ext/NAME, or a copy beside this
    script, as ci/gpu-seed-bugs.sh and the GPU bundle place them): the worker's own code, not a second copy of it. Its
    functions see torch, transformers and os as they do in the worker."""
    import torch
    import transformers
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, name), os.path.join(here, "..", "src", "Reference", "python", "ext", name)):
        if os.path.isfile(path):
            ns = {"torch": torch, "transformers": transformers, "os": os, "OPS": {}, "__file__": path}
            exec(compile(open(path).read(), path, "exec"), ns)
            return ns
    sys.exit(f"make-published-dims.py: no {name} beside {here} or in ../src/Reference/python/ext (copy it beside the script)")


def save_processor(name, cfg, out_dir, small=False):
    """The processor of PROCESSORS[name] beside the weights: media.py's save_processor with the published settings (small:
    with SMALL_PROCESSORS' changes) and a word-level tokenizer whose special tokens carry the config's ids."""
    spec = merged(PROCESSORS[name], SMALL_PROCESSORS.get(name, {})) if small else PROCESSORS[name]
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    vocab.update({w: 10 + i for i, w in enumerate(PROMPT_WORDS)})
    special = {"unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
    for role, (token, key) in spec["tokens"].items():
        vocab[token] = cfg[key]
        special[role] = token
    template = CHAT_TEMPLATE.replace("{IMAGE}", spec["tokens"]["image_token"][0]).replace("{AUDIO}", spec["tokens"]["audio_token"][0])
    worker_ext("media.py")["op_save_processor"]({
        "family": spec["family"], "out_dir": out_dir, "vocab": vocab, "special": special, "processor": spec["processor"],
        "feature_extractor": spec["feature_extractor"], "processor_fields": spec["processor_fields"], "chat_template": template,
    }, {})


def write_random(cfg, name, out_dir, dtype_name, device, seed, small=False):
    """Builds the model of a config dict (model_type and architectures in it) with random weights (every constant-initialised
    parameter, norm weights 1 and biases 0, perturbed by seeded noise; q/k norms and MoE router scaled by condition()) and saves it
    to out_dir with the processor of PROCESSORS[name] where it has one, files readable by others."""
    arch = cfg["architectures"][0]
    model = build_random(cfg, dtype_name, device, seed)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    if name in PROCESSORS:
        save_processor(name, cfg, out_dir, small)
    for f in os.listdir(out_dir):
        # safetensors writes its file 0600: the harness's sandboxed worker (user nobody) could not read it, and says
        # "No such file or directory"
        os.chmod(os.path.join(out_dir, f), 0o644)
    n = sum(t.numel() for t in model.parameters())
    print(f"{name}: {arch}, {n:,} parameters, {dtype_name}, written to {out_dir}" + (" with its processor" if name in PROCESSORS else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(MODELS) + ["list"])
    p.add_argument("out_dir", nargs="?")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="SMALL's narrower widths (checking scripts on a CPU; not published dims)")
    a = p.parse_args()
    if a.name == "list":
        for name, cfg in MODELS.items():
            text = cfg.get("text_config", cfg)
            towers = [k[:-len("_config")] for k in ("vision_config", "audio_config") if k in cfg]
            print(f"{name}: {cfg['architectures'][0]}, hidden {text['hidden_size']}, {text['num_hidden_layers']} layers"
                  + (f", {' and '.join(towers)} tower{'s' if len(towers) > 1 else ''}" if towers else "")
                  + (", processor" if name in PROCESSORS else ""))
        return 0
    if not a.out_dir:
        p.error("OUT_DIR is required")
    cfg = dict(MODELS[a.name])
    if a.layers is not None and a.layers < (2 if cfg["model_type"].startswith("gemma4") else 1):
        # one Gemma4 layer is full attention only, and HF then reads the per-type rope_parameters as one set (rope_theta null)
        p.error(f"--layers {a.layers}: {a.name} needs at least 2 (a sliding and a full attention layer)" if a.layers > 0 else "--layers must be positive")
    if a.small:
        if a.name not in SMALL:
            p.error(f"--small: no small widths for {a.name} (have: {', '.join(sorted(SMALL))})")
        cfg = merged(cfg, SMALL[a.name])
    if a.layers:
        cfg = keep_layers(cfg, a.layers)
    write_random(cfg, a.name, a.out_dir, a.dtype, a.device, a.seed, a.small)
    if a.small:
        print(f"({a.name} at --small widths, not published dimensions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
