# Test-only op for ModelDebuggerJudgeTests: transformers' own model debugger run on HF itself, to make the dump that
# `harness judge --dump` reads (a user runs the debugger on their own engine). Not part of the shipped worker: the test
# starts a worker with this file spliced in after the extensions (TestWorkerSource.With).

def op_hf_model_debugger_dump(args, tensors):
    """transformers' model debugger (model_addition_debugger_context, use_repr=False) on an HF folder's forward of
    input_ids, writing its call tree and per-module safetensors into out_dir. args: model_dir, out_dir, input_ids (a
    list), config (fields overriding config.json's: a model that differs from the checkpoint, the tests' planted bug),
    do_prune_layers (default true, the debugger's own default), max_new_tokens (given: generate() that many greedy tokens
    under the debugger instead of one forward)."""
    config = transformers.AutoConfig.from_pretrained(args["model_dir"])
    for k, v in (args.get("config") or {}).items():
        setattr(config, k, v)
    model = transformers.AutoModelForCausalLM.from_pretrained(args["model_dir"], config=config, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    ids = torch.tensor([[int(i) for i in args["input_ids"]]])
    steps = args.get("max_new_tokens")
    with transformers.model_addition_debugger_context(model, debug_path=args["out_dir"], use_repr=False,
                                                      do_prune_layers=bool(args.get("do_prune_layers", True))):
        if steps:                                          # generate(): the debugger wraps each of its forwards
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=int(steps),
                           min_new_tokens=int(steps), do_sample=False, pad_token_id=0)
        else:
            model(input_ids=ids)
    return {"files": len(os.listdir(args["out_dir"]))}, []


OPS["hf_model_debugger_dump"] = op_hf_model_debugger_dump
