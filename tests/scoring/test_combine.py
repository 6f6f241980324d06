"""Eq. 11-12 on hand-made effects."""

import numpy as np

from hydrahead.scoring.combine import capability_scores, combine, minmax
from hydrahead.scoring.probes import Probe


def probe(capability, kind):
    return Probe((1, 2), (1, 3), (2,), (3,), 2, (1, 2), capability, f"{capability}/{kind}")


def test_kappa_max_minmax_and_average():
    probes = [probe("single_key", "number"), probe("single_key", "number"), probe("single_key", "word"),
              probe("multi_key", "number")]
    # 1 layer x 3 heads; per probe
    recv = np.array([[[0.5, 0.0, 0.02]], [[0.3, 0.0, 0.0]], [[0.0, 0.2, 0.02]], [[0.1, 0.1, 0.9]]])
    send = np.array([[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.4, 0.0]], [[0.0, 0.0, 0.0]]])
    caps = capability_scores({"receiver": recv, "sender": send}, probes)
    single = caps["single_key"]
    # sub-probe means: number -> recv [0.4, 0, 0.01], word -> recv [0, 0.2, 0.02], send [0, 0.4, 0]
    np.testing.assert_allclose(single["receiver"], [[0.2, 0.1, 0.015]])
    np.testing.assert_allclose(single["sender"], [[0.0, 0.2, 0.0]])
    np.testing.assert_allclose(single["kappa"], [[0.5, 0.5, 0.5]])  # 0.01 does not pass the 0.01 threshold
    np.testing.assert_allclose(single["score"], [[0.1, 0.1, 0.0075]])
    np.testing.assert_allclose(caps["multi_key"]["score"], [[0.1, 0.1, 0.9]])
    expected = (minmax(np.array([[0.1, 0.1, 0.0075]])) + minmax(np.array([[0.1, 0.1, 0.9]]))) / 2
    np.testing.assert_allclose(combine(caps), expected)
    np.testing.assert_allclose(combine(caps), [[0.5, 0.5, 0.5]])


def test_unusable_probes_are_left_out():
    probes = [probe("single_key", "number"), probe("single_key", "word")]
    recv = np.array([[[0.5, 0.1]], [[np.nan, np.nan]]])
    caps = capability_scores({"receiver": recv}, probes)
    np.testing.assert_allclose(caps["single_key"]["kappa"], [[1.0, 1.0]])  # only the usable sub-probe counts
    np.testing.assert_allclose(combine(caps), [[1.0, 0.0]])
    np.testing.assert_array_equal(minmax(np.ones((2, 2))), np.zeros((2, 2)))


def test_zero_rounds_is_the_receiver_term_alone():
    """Both causal methods' "receiver only" (`max_rounds=0`, attribution's `senders=False`): Eq. 11 without a
    sender term, so a negative mean receiver effect is kept (a zero sender term would clip it to 0) and no
    sender components appear; the senders callback is never called."""
    from hydrahead.scoring.patching import sender_rounds

    probes = [probe("single_key", "number"), probe("single_key", "word")]
    recv = np.array([[[0.5, 0.05, 0.2]], [[0.3, -0.65, 0.1]]])  # head 1: mean -0.3, above 0.01 in one sub-probe of 2
    send = np.zeros_like(recv)

    def never(i, receivers):
        raise AssertionError("no sender round should run")

    caps, meta = sender_rounds(probes, [0, 1], recv, send, never, receiver_fraction=0.4, max_rounds=0,
                               threshold=0.01, progress=False)
    assert set(caps["single_key"]) == {"score", "kappa", "receiver"}
    np.testing.assert_allclose(caps["single_key"]["score"], [[0.4, -0.15, 0.15]])
    np.testing.assert_allclose(combine(caps), [[1.0, 0.0, 0.3 / 0.55]])
    assert meta["rounds"] == 0 and meta["receiver_sets"] == [[[0, 0]]] and meta["converged"] is None
