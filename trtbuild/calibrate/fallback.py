"""The accuracy gate after calibration: the one module that uses both `trtbuild.calibrate` and `trtbuild.verify`.

`calibrate_and_check` is what `trtbuild calibrate` runs: calibrate (model.qdq.onnx + scales.json; equalization,
alpha and the fallback nodes are chosen there on held-out *calibration* texts), then, with a labelled eval set,
verify the Q/DQ model against FP32 in ONNX Runtime (report in WORKDIR/reports/verify-qdq.*). The eval set only
judges: nothing it shows feeds back into the calibration.
"""

import time

from trtbuild._util import noop
from trtbuild.calibrate import calibrate
from trtbuild.verify import verify_candidate
from trtbuild.verify.evalset import prepare_eval
from trtbuild.workdir import locked


def calibrate_and_check(config, evaluate_qdq=True, auto_fallback=None, progress=noop, show_bar=True, **options):
    """`calibrate(config, **options)`, then the verify gate on the Q/DQ model; returns the CalibrateResult with its
    accuracy and verify records (its exit code is 4 when the gate fails). With data.eval set, a check that cannot
    run is an error, not a skip."""
    with locked(config.workdir, create=False):
        start = time.perf_counter()
        result = calibrate(config, auto_fallback=auto_fallback, progress=progress, show_bar=show_bar, **options)
        if not evaluate_qdq or not config.data.eval:
            return result
        evalset = prepare_eval(config, progress=progress, show_bar=show_bar)
        progress("verifying the Q/DQ model against FP32 in ONNX Runtime on {} eval texts".format(len(evalset)))
        report = verify_candidate(config, "qdq", evalset=evalset, progress=progress, show_bar=show_bar)
        progress("  " + report.summary())
        result.accuracy = _accuracy_table(report)
        result.verify = report.to_dict()
        result.seconds = round(time.perf_counter() - start, 2)
        return result


def _accuracy_table(report):
    """{"fp32"|"qdq": {"accuracy", "macro_f1", "per_source": {eval set: accuracy}, "texts"}} from a VerifyReport."""
    out = {}
    for side, key in (("fp32", "baseline"), ("qdq", "candidate")):
        out[side] = {"accuracy": round(report.overall[key]["accuracy"], 4),
                     "macro_f1": round(report.overall[key]["macro_f1"], 4), "texts": report.texts,
                     "per_source": {name[4:]: round(m[key]["accuracy"], 4) for name, m in report.slices.items()
                                    if name.startswith("set:")}}
    return out
