"""Two models evaluated on the same examples, compared example by example (McNemar).

Only the examples that exactly one of the two gets right carry the difference: b of them the
baseline only, c the other only. The difference in accuracy (c - b) / n has the paired
standard error sqrt(b + c - (c - b)^2 / n) / n, far below two independent binomial errors
when the models agree on most examples, and McNemar's exact two-sided p-value is the sign
test of c against b + c. The sweep's report and the run comparison use these, so a reading
"AT-AMP beats PGD-AT" rests on the examples themselves, not on overlapping error bars.
"""
import collections
import math
import os

import numpy as np
from scipy import stats

from atamp_tf import rundir

PairedDifference = collections.namedtuple(
    "PairedDifference", "n baseline other difference only_baseline only_other se p_value")


def mcnemar_p(only_baseline, only_other):
    """Exact two-sided McNemar p-value: the sign test of one count against their sum."""
    discordant = only_baseline + only_other
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(only_other, discordant, 0.5).pvalue)


def paired_difference(baseline_correct, other_correct):
    """PairedDifference of two per-example correctness masks over the same examples."""
    a, b = np.asarray(baseline_correct, bool), np.asarray(other_correct, bool)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"paired_difference: two masks over the same examples expected, got "
                         f"shapes {a.shape} and {b.shape}")
    n = a.size
    only_baseline, only_other = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    shift = only_other - only_baseline
    se = math.sqrt(max(only_baseline + only_other - shift ** 2 / n, 0.0)) / n
    return PairedDifference(n, float(a.mean()), float(b.mean()), shift / n, only_baseline,
                            only_other, se, mcnemar_p(only_baseline, only_other))


def read_per_example(eval_dir, flag, require_masks=True):
    """(report, {attack: mask}) of one evaluation directory (report.json + per_example.npz);
    without require_masks an evaluation without per-example results gives empty masks."""
    report_path = os.path.join(eval_dir, "report.json")
    if not os.path.isfile(report_path):
        raise ValueError(f"--{flag}: {eval_dir} has no report.json (run python -m "
                         "atamp_tf.evaluate with --output_dir there)")
    report = rundir.read_json(report_path)
    masks_path = os.path.join(eval_dir, (report.get("per_example") or {}).get(
        "file", "per_example.npz"))
    if not os.path.isfile(masks_path):
        if not require_masks:
            return report, {}
        raise ValueError(f"--{flag}: {eval_dir} has no per-example results ({masks_path}); "
                         "a paired comparison needs them")
    with np.load(masks_path) as arrays:
        masks = {name[len("correct_"):]: arrays[name] for name in arrays.files
                 if name.startswith("correct_")}
    return report, masks


def check_same_examples(baseline_report, other_report, flag):
    """Raises ValueError unless the two evaluations ran on the same examples and threat model."""
    keys = ("dataset", "split", "examples", "num_examples", "threat_model")
    missing = [k for k in keys if baseline_report.get(k) is None or other_report.get(k) is None]
    if missing:
        raise ValueError(f"--{flag}: an evaluation report lacks {', '.join(missing)}: cannot "
                         "tell whether the two ran on the same examples")
    differ = [k for k in keys if baseline_report.get(k) != other_report.get(k)]
    if differ:
        raise ValueError(f"--{flag}: the evaluations differ in {', '.join(differ)}; a paired "
                         "comparison needs the same examples under the same threat model")


def compared_columns(pairs, columns):
    """The columns (attacks) that at least one (baseline, other) pair of (report, masks) has
    per-example results of on both sides: the columns of a paired table."""
    return [c for c in columns if any(c in base[1] and c in other[1] for base, other in pairs)]


def paired_rows(baseline, other, attacks):
    """{attack: PairedDifference} for the attacks both (report, masks) pairs measured."""
    return {a: paired_difference(baseline[1][a], other[1][a]) for a in attacks
            if a in baseline[1] and a in other[1]}


def difference_cells(baseline, other, columns, flag):
    """One paired table row's cells: format_difference per column of the (report, masks)
    pairs, '-' where either lacks it; ValueError unless both ran on the same examples."""
    check_same_examples(baseline[0], other[0], flag)
    differences = paired_rows(baseline, other, columns)
    return [format_difference(differences[c]) if c in differences else "-" for c in columns]


def format_difference(d):
    """'+0.65 ± 0.21 (p 0.002)': percentage points, one paired standard error, McNemar p."""
    p = f"{d.p_value:.3f}" if d.p_value >= 0.001 else f"{d.p_value:.0e}"
    return f"{100 * d.difference:+.2f} ± {100 * d.se:.2f} (p {p})"
