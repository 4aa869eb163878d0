# Test-only fault ops for the worker supervision tests (WorkerSupervisionTests, WorkerStressTests, selftest.py). Not part
# of the shipped worker: the tests start a worker whose source is the real one with this file spliced in after the
# extensions (ReferenceWorker.Source(extra)); each op is one planted failure of the worker process, as an explicit input.

def op_fault_crash(args, tensors):
    """Exits the process at once with args["code"] (a worker killed mid-request)."""
    sys.stderr.flush()
    os._exit(int(args.get("code", 1)))


def op_fault_hang(args, tensors):
    """Sleeps args["seconds"], then replies (a worker stalled past its timeout)."""
    seconds = float(args.get("seconds", 3600))
    time.sleep(seconds)
    return {"slept": seconds}, []


def op_fault_garbage(args, tensors):
    """Writes bytes that are not a frame to the frame channel, then blocks (a corrupted reply stream)."""
    CHANNEL.write_raw(b"this is not a frame\n\x00\xff garbage \xde\xad\xbe\xef")
    while True:
        time.sleep(3600)


def op_fault_alloc(args, tensors):
    """Allocates and touches args["mb"] megabytes, holds them args["seconds"] seconds, then frees them (a worker grown
    past HARNESS_WORKER_MEMORY_MB)."""
    mb = int(args.get("mb", 100))
    seconds = float(args.get("seconds", 10))
    block = torch.ones(mb * 1024 * 1024 // 4, dtype=torch.float32)   # written, so resident
    time.sleep(seconds)
    del block
    return {"mb": mb}, []


OPS["fault_crash"] = op_fault_crash
OPS["fault_hang"] = op_fault_hang
OPS["fault_garbage"] = op_fault_garbage
OPS["fault_alloc"] = op_fault_alloc
