"""`TrtRunner`: a trtbuild engine behind the runners' interface (`infer(feeds) -> logits`), for verify.

The engine session (`EngineSession`) checks, deserializes and fits each batch; Polygraphy's TrtRunner
copies and runs it on the profile the batch fits.
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
        self.runner = _PolyRunner(self.session.context)
        self.runner.activate()
        self.profile = 0

    def infer(self, feeds):
        index, inputs = self.session.fit(feeds)
        if index is not None and index != self.profile:
            self.runner.set_profile(index)
            self.profile = index
        return np.asarray(self.runner.infer(inputs)["logits"]).astype(np.float32)

    def close(self):
        if getattr(self, "runner", None) is not None:
            self.runner.deactivate()
            self.runner = None
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
