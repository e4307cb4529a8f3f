"""Which way of running a multi-profile ONNX-parser engine crashes TensorRT 8.6 on the H200?

    trtpy experiments/issue17-profiles/probe.py ENGINE OUT.json [ROUNDS]

Each way runs in its own child process (a segfault kills only the child): its exit code, its last
words and how many inferences it finished are recorded.
- poly-switch: Polygraphy's TrtRunner, `set_profile(i)` whenever a batch needs another profile (what
  trtbuild's TrtRunner did);
- ctx-switch: one execution context, `set_optimization_profile_async(i, stream)` then a stream sync
  (what bench's TrtTimer did);
- ctx-per-profile: one execution context per profile, each bound to its profile once at creation and
  never switched, all sharing one device-memory block (created without device memory);
- ctx-per-profile-own: the same, each context with its own device memory.
"""

import json
import os
import subprocess
import sys

MODES = ("poly-switch", "ctx-switch", "ctx-per-profile", "ctx-per-profile-own")


def shapes_for(engine, name, n_profiles):
    """(profile, batch, seq) cycling over every profile with a few batch sizes, as verify does."""
    out = []
    for p in range(n_profiles):
        lo, _, hi = engine.get_tensor_profile_shape(name, p)
        for b in sorted({lo[0], max(lo[0], hi[0] // 2), hi[0]}):
            out.append((p, b, hi[1]))
    return out


def child(engine_path, mode, rounds):
    import numpy as np
    import tensorrt as trt
    from polygraphy import cuda

    logger = trt.Logger(trt.Logger.ERROR)
    trt.init_libnvinfer_plugins(logger, "")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(open(engine_path, "rb").read())
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    n_profiles = engine.num_optimization_profiles
    work = shapes_for(engine, inputs[0], n_profiles) * rounds
    done = 0

    def feeds(batch, seq):
        ids = np.random.default_rng(batch * seq).integers(5, 200, size=(batch, seq))
        f = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return {n: f[n].astype(trt.nptype(engine.get_tensor_dtype(n))) for n in inputs}

    if mode == "poly-switch":
        from polygraphy.backend.trt import TrtRunner

        context = engine.create_execution_context()
        with TrtRunner(context) as runner:
            current = 0
            for p, b, s in work:
                if p != current:
                    runner.set_profile(p)
                    current = p
                runner.infer(feeds(b, s))
                done += 1
                print("ok", done, p, b, s, flush=True)
        return done

    stream = cuda.Stream()
    if mode == "ctx-switch":
        contexts = [engine.create_execution_context()] * n_profiles
    elif mode == "ctx-per-profile-own":
        contexts = [engine.create_execution_context() for _ in range(n_profiles)]
    else:
        shared = cuda.DeviceArray(shape=(engine.device_memory_size,), dtype=np.uint8)
        contexts = []
        for _ in range(n_profiles):
            c = engine.create_execution_context_without_device_memory()
            c.device_memory = shared.ptr
            contexts.append(c)
    if mode != "ctx-switch":
        for p, c in enumerate(contexts):
            c.set_optimization_profile_async(p, stream.ptr)
        stream.synchronize()
    current = 0
    buffers = {}
    for p, b, s in work:
        c = contexts[p]
        if mode == "ctx-switch" and p != current:
            stream.synchronize()
            c.set_optimization_profile_async(p, stream.ptr)
            stream.synchronize()
        current = p
        host = feeds(b, s)
        for n, a in host.items():
            buf = buffers.setdefault(n, cuda.DeviceArray(shape=a.shape, dtype=a.dtype))
            buf.resize(a.shape)
            buf.copy_from(a, stream)
            c.set_input_shape(n, a.shape)
            c.set_tensor_address(n, buf.ptr)
        for n in outputs:
            shape = tuple(c.get_tensor_shape(n))
            buf = buffers.setdefault(n, cuda.DeviceArray(shape=shape, dtype=trt.nptype(engine.get_tensor_dtype(n))))
            buf.resize(shape)
            c.set_tensor_address(n, buf.ptr)
        assert c.execute_async_v3(stream.ptr)
        out = np.empty(tuple(c.get_tensor_shape(outputs[0])), dtype=trt.nptype(engine.get_tensor_dtype(outputs[0])))
        buffers[outputs[0]].copy_to(out, stream)
        stream.synchronize()
        done += 1
        print("ok", done, p, b, s, float(np.abs(out).max()), flush=True)
    return done


def main():
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    engine, out = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    record = {"engine": engine, "rounds": rounds, "modes": {}}
    for mode in MODES:
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", engine, mode, str(rounds)],
                                  capture_output=True, text=True, timeout=120)
            lines = proc.stdout.strip().splitlines()
            record["modes"][mode] = {"returncode": proc.returncode, "inferences": sum(1 for l in lines if l.startswith("ok")),
                                     "last": lines[-2:], "stderr": proc.stderr.strip().splitlines()[-3:]}
        except subprocess.TimeoutExpired:
            record["modes"][mode] = {"returncode": "timeout"}
        print(mode, json.dumps(record["modes"][mode]), flush=True)
    with open(out, "w") as f:
        json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
