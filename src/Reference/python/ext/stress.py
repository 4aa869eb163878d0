# Stress ops for the supervision tests (issue 12): a worker that grows past HARNESS_WORKER_MEMORY_MB.

def op_debug_alloc(args, tensors):
    """Allocates and touches args["mb"] megabytes, holds them args["seconds"] seconds, then frees them."""
    mb = int(args.get("mb", 100))
    seconds = float(args.get("seconds", 10))
    block = torch.ones(mb * 1024 * 1024 // 4, dtype=torch.float32)   # written, so resident
    time.sleep(seconds)
    del block
    return {"mb": mb}, []


OPS["debug_alloc"] = op_debug_alloc
