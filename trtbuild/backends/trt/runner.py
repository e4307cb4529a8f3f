"""`TrtRunner`: a trtbuild engine behind the runners' interface (`infer(feeds) -> logits`), for verify.

The engine session (`EngineSession`) checks, deserializes and fits each batch; Polygraphy's TrtRunner
copies and runs it on the part and profile the batch fits.
"""

import numpy as np

from trtbuild.backends.trt.engine import EngineSession


class TrtRunner:
    def __init__(self, path, check=True):
        self.session = EngineSession(path, check=check)  # first: without TensorRT this is exit 3
        from polygraphy.backend.trt import TrtRunner as _PolyRunner

        self.path = path
        self.entry = self.session.entry
        self.input_names = self.session.inputs
        self.device = self.session.device
        self.runners = {}
        for part in self.session.parts:
            runner = _PolyRunner(part.context)
            runner.activate()
            self.runners[id(part)] = runner

    def infer(self, feeds):
        part, index, inputs = self.session.fit(feeds)
        runner = self.runners[id(part)]
        if index != part.current:
            runner.set_profile(index)
            part.current = index
        return np.asarray(runner.infer(inputs)["logits"]).astype(np.float32)

    def close(self):
        for runner in self.runners.values():
            runner.deactivate()
        self.runners = {}
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
