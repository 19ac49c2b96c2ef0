"""The stratified area and accuracy estimators against published worked examples
(Olofsson et al. 2014; Stehman 2014) and a small case computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.accuracy.area_estimates import (
    MATRIX_AXES,
    OVERALL,
    Design,
    class_order,
    estimate,
)

# Olofsson et al. (2014), RSE 148:42-57, worked example (section 5, Table 8): sample counts,
# rows map class = stratum, columns reference class; mapped area in 30 m pixels (0.09 ha).
OLOFSSON_CLASSES = ["Deforestation", "Forest gain", "Stable forest", "Stable non-forest"]
OLOFSSON_COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
OLOFSSON_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
HA_PER_PIXEL = 0.09


def expand(counts: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per sample unit, from a count matrix whose rows are strata = map classes."""
    rows = [(classes[i], classes[i], classes[j])
            for i in range(len(classes)) for j in range(len(classes))
            for _ in range(int(counts[i, j]))]
    return pd.DataFrame(rows, columns=["stratum", "map_class", "reference_class"])


@pytest.fixture(scope="module")
def olofsson():
    sample = expand(OLOFSSON_COUNTS, OLOFSSON_CLASSES)
    strata = pd.DataFrame({"stratum": OLOFSSON_CLASSES, "size": OLOFSSON_PIXELS * HA_PER_PIXEL})
    return estimate(sample, strata)


def test_olofsson_published_numbers(olofsson) -> None:
    """The numbers the paper prints, to the digits it prints them."""
    area = olofsson.area.set_index("class")
    acc = olofsson.accuracy.set_index("class")
    deforestation = area.loc["Deforestation"]
    assert round(deforestation["area"]) == 21_158  # ha
    assert round(1.96 * deforestation["se"]) == 6_158  # ha, 95% CI half-width
    assert deforestation["ci95_low"] == pytest.approx(21_158 - 6_158, abs=1)
    assert deforestation["ci95_high"] == pytest.approx(21_158 + 6_158, abs=1)
    assert round(acc.loc["Deforestation", "users"], 2) == 0.88
    assert round(1.96 * acc.loc["Deforestation", "users_se"], 2) == 0.07
    assert round(acc.loc["Deforestation", "producers"], 2) == 0.75
    assert round(1.96 * acc.loc["Deforestation", "producers_se"], 2) == 0.21
    assert round(acc.loc[OVERALL, "users"], 2) == 0.95
    assert round(1.96 * acc.loc[OVERALL, "users_se"], 2) == 0.02
    assert acc.loc[OVERALL, "producers"] == acc.loc[OVERALL, "users"]


def test_olofsson_closed_forms(olofsson) -> None:
    """Strata = map classes: the ratio and total estimators equal Olofsson's formulas for
    every class (eq. 2-5, 7, 9-11), computed here from the count matrix alone."""
    n = OLOFSSON_COUNTS.astype(float)
    n_i = n.sum(axis=1)
    w = OLOFSSON_PIXELS / OLOFSSON_PIXELS.sum()
    total_ha = OLOFSSON_PIXELS.sum() * HA_PER_PIXEL
    p = w[:, None] * n / n_i[:, None]  # error matrix in area proportions (eq. 4)
    p_k = p.sum(axis=0)
    se_p_k = np.sqrt((w[:, None] ** 2 * (n / n_i[:, None]) * (1 - n / n_i[:, None])
                      / (n_i[:, None] - 1)).sum(axis=0))  # eq. 10
    users = np.diag(n) / n_i
    users_se = np.sqrt(users * (1 - users) / (n_i - 1))  # eq. 6
    producers = np.diag(p) / p_k
    overall = np.trace(p)
    overall_se = math.sqrt(np.sum(w**2 * users * (1 - users) / (n_i - 1)))  # eq. 5
    # Producer's accuracy, eq. 7: N_j. mapped units of class j, N_.j estimated reference ones.
    n_map = OLOFSSON_PIXELS.astype(float)
    n_ref = (n_map[:, None] * n / n_i[:, None]).sum(axis=0)
    producers_se = []
    for j in range(4):
        first = n_map[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_i[j] - 1)
        second = producers[j] ** 2 * sum(
            n_map[i] ** 2 * n[i, j] / n_i[i] * (1 - n[i, j] / n_i[i]) / (n_i[i] - 1)
            for i in range(4) if i != j)
        producers_se.append(math.sqrt((first + second) / n_ref[j] ** 2))

    area = olofsson.area.set_index("class").loc[OLOFSSON_CLASSES]
    acc = olofsson.accuracy.set_index("class")
    rel = 1e-12
    assert area["area"].to_numpy() == pytest.approx(p_k * total_ha, rel=rel)
    assert area["se"].to_numpy() == pytest.approx(se_p_k * total_ha, rel=rel)
    assert area["mapped_area"].to_numpy() == pytest.approx(n_map * HA_PER_PIXEL, rel=rel)
    assert acc.loc[OLOFSSON_CLASSES, "users"].to_numpy() == pytest.approx(users, rel=rel)
    assert acc.loc[OLOFSSON_CLASSES, "users_se"].to_numpy() == pytest.approx(users_se, rel=rel)
    assert acc.loc[OLOFSSON_CLASSES, "producers"].to_numpy() == pytest.approx(producers, rel=rel)
    assert acc.loc[OLOFSSON_CLASSES, "producers_se"].to_numpy() == pytest.approx(
        producers_se, rel=rel)
    assert acc.loc[OVERALL, "users"] == pytest.approx(overall, rel=rel)
    assert acc.loc[OVERALL, "users_se"] == pytest.approx(overall_se, rel=rel)
    matrix = olofsson.error_matrix
    assert matrix.index.name == MATRIX_AXES
    assert list(matrix.index) == list(matrix.columns) == OLOFSSON_CLASSES
    assert matrix.to_numpy() == pytest.approx(p, rel=rel)
    assert olofsson.total_size == pytest.approx(total_ha)


# Stehman (2014), IJRS 35(13):4923-4939, numerical example (Table 2): 4 strata of
# 40,000/30,000/20,000/10,000 pixels, 10 sample pixels each, classes A-D; the strata are
# not the map classes (stratum A holds map B pixels, stratum C map B and C).
STEHMAN_MAP = "AAAAAAABBB" "ABBBBBBBBB" "BBCCCCCCBB" "DDDDDDDDDD"
STEHMAN_REF = "AAAAACBABC" "ABBBBBAABB" "CCCCCDDBBA" "DDDDDDDCCB"


@pytest.fixture(scope="module")
def stehman():
    sample = pd.DataFrame({"stratum": list("A" * 10 + "B" * 10 + "C" * 10 + "D" * 10),
                           "map_class": list(STEHMAN_MAP),
                           "reference_class": list(STEHMAN_REF)})
    strata = pd.DataFrame({"stratum": list("ABCD"), "size": [40_000, 30_000, 20_000, 10_000]})
    return estimate(sample, strata)


def test_stehman_published_numbers(stehman) -> None:
    """The paper's numbers (pp. 4932-4936), to its three decimals."""
    n_total = 100_000
    area = stehman.area.set_index("class")
    acc = stehman.accuracy.set_index("class")
    assert round(area.loc["A", "area"] / n_total, 3) == 0.350
    assert round(area.loc["C", "area"] / n_total, 3) == 0.200
    assert round(area.loc["A", "se"] / n_total, 3) == 0.082
    assert round(area.loc["C", "se"] / n_total, 3) == 0.064
    assert round(acc.loc[OVERALL, "users"], 3) == 0.630
    assert round(acc.loc[OVERALL, "users_se"], 3) == 0.085
    assert round(acc.loc["B", "users"], 3) == 0.574
    assert round(acc.loc["B", "users_se"], 3) == 0.125
    assert round(acc.loc["B", "producers"], 3) == 0.794
    assert round(stehman.error_matrix.loc["B", "C"], 3) == 0.080
    # The paper prints SE 0.114 for producer's accuracy of B; its formula gives 0.117.
    # The paper took s2_x of stratum D as 0, but x_u = 1[ref=B] is 1 for one of D's 10
    # units (s2_x = 0.1); with that term zeroed the same formula gives 0.1142.
    assert round(acc.loc["B", "producers_se"], 3) == 0.117
    # The strata mix map classes, so the map's area by class is not known from them.
    assert area["mapped_area"].isna().all()


def test_hand_computed_region_strata() -> None:
    """Strata of map class x region (pure in map class, not the map classes themselves),
    with a class only the reference labels know; every number worked out by hand."""
    sample = pd.DataFrame(
        [("P|north", "P", r) for r in "PPPS"] + [("P|south", "P", r) for r in "PSS"]
        + [("S|all", "S", r) for r in "SSGP"],
        columns=["stratum", "map_class", "reference_class"])
    strata = pd.DataFrame({"stratum": ["P|north", "P|south", "S|all"],
                           "size": [100.0, 300.0, 600.0]})
    result = estimate(sample, strata)
    area = result.area.set_index("class")
    acc = result.accuracy.set_index("class")
    assert list(area.index) == ["P", "S", "G"]

    # Area of P, y = 1[ref=P]; s2 = sum (y - ybar)^2 / (n - 1):
    #   P|north y=1,1,1,0: ybar=3/4, s2=(3*(1/4)^2 + (3/4)^2)/3 = 1/4
    #   P|south y=1,0,0:   ybar=1/3, s2=((2/3)^2 + 2*(1/3)^2)/2 = 1/3
    #   S|all   y=0,0,0,1: ybar=1/4, s2=1/4
    # Y = 100*3/4 + 300*1/3 + 600*1/4 = 75 + 100 + 150 = 325
    # V = 100^2*(1/4)/4 + 300^2*(1/3)/3 + 600^2*(1/4)/4 = 625 + 10000 + 22500 = 33125
    assert area.loc["P", "area"] == pytest.approx(325.0)
    assert area.loc["P", "se"] == pytest.approx(math.sqrt(33125))
    assert area.loc["P", "ci95_low"] == pytest.approx(325 - 1.96 * math.sqrt(33125))

    # User's accuracy of P: y = 1[map=P, ref=P], x = 1[map=P].
    #   Y = 75 + 100 + 0 = 175, X = 100 + 300 + 0 = 400, R = 175/400 = 0.4375
    #   x is constant within each stratum, so s2_x = s_xy = 0 and the terms are s2_y:
    #   P|north s2_y = 1/4, P|south s2_y = 1/3, S|all s2_y = 0
    #   V(R) = (100^2*(1/4)/4 + 300^2*(1/3)/3) / 400^2 = (625 + 10000) / 160000
    assert acc.loc["P", "users"] == pytest.approx(0.4375)
    assert acc.loc["P", "users_se"] == pytest.approx(math.sqrt(10625) / 400)

    # Overall accuracy, y = 1[map=ref]: P|north 1,1,1,0; P|south 1,0,0; S|all 1,1,0,0
    #   (ybar=1/2, s2=(4*(1/2)^2)/3 = 1/3). Y = 75 + 100 + 300 = 475, N = 1000
    #   V = 625 + 10000 + 600^2*(1/3)/4 = 40625
    assert acc.loc[OVERALL, "users"] == pytest.approx(0.475)
    assert acc.loc[OVERALL, "users_se"] == pytest.approx(math.sqrt(40625) / 1000)

    # Mapped area: every stratum is pure, so P = 100 + 300, S = 600, G (never mapped) = 0.
    assert area["mapped_area"].to_dict() == {"P": 400.0, "S": 600.0, "G": 0.0}
    # G is never mapped: its user's accuracy is undefined, not an error.
    assert math.isnan(acc.loc["G", "users"]) and math.isnan(acc.loc["G", "users_se"])
    # ... while its producer's accuracy is 0 (X = 600 * 1/4 = 150 units of G, none mapped).
    assert acc.loc["G", "producers"] == 0.0
    assert result.error_matrix.to_numpy().sum() == pytest.approx(1.0)
    assert result.strata["n"].tolist() == [4, 3, 4]


def test_class_order_follows_strata_then_reference_only() -> None:
    sample = pd.DataFrame({"stratum": ["s2", "s1", "s1", "s2"],
                           "map_class": ["Other", "Plantation", "Plantation", "Other"],
                           "reference_class": ["Z-ref", "Other", "A-ref", "Other"]})
    strata = pd.DataFrame({"stratum": ["s1", "s2"], "size": [1.0, 1.0]})
    assert class_order(sample, strata) == ["Plantation", "Other", "A-ref", "Z-ref"]


def test_design_refuses_what_it_cannot_estimate() -> None:
    strata = pd.DataFrame({"stratum": ["a", "b"], "size": [1.0, 2.0]})
    one_in_b = pd.DataFrame({"stratum": ["a", "a", "b"], "map_class": "x",
                             "reference_class": "x"})
    with pytest.raises(ValueError, match="fewer than 2.*'b'"):
        Design.of(one_in_b, strata)
    unknown = pd.DataFrame({"stratum": ["a", "a", "b", "b", "c"], "map_class": "x",
                            "reference_class": "x"})
    with pytest.raises(ValueError, match="not in the strata table.*'c'"):
        Design.of(unknown, strata)
