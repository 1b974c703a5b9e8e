"""TACN's report layout: test F1, WA, UA; Deep_* then Fusion_* in the paper's order."""

import pytest

from satn.report import summarise, table


def _run(variant, folds):
    return {"run_id": variant, "name": variant, "status": "FINISHED", "variant": variant,
            "params": {"model.variant": variant},
            "folds": [{"fold": f"fold{i}", "dev_wa": wa, "dev_ua": ua, "test_wa": wa,
                       "test_ua": ua, **({"test_f1": f1} if f1 is not None else {})}
                      for i, (wa, ua, f1) in enumerate(folds, 1)]}


def test_tacn_layout_orders_rows_and_reports_f1_wa_ua():
    records = [_run("fusion_tacn", [(0.7, 0.6, 0.65), (0.5, 0.4, 0.45)]),
               _run("deep_tcn", [(0.6, 0.5, 0.55)]), _run("deep_tacn", [(0.6, 0.5, 0.5)]),
               _run("fusion_rnn", [(0.3, 0.3, 0.3)])]
    rows = summarise(records, layout="tacn")
    assert [r.variant for r in rows] == ["deep_tcn", "deep_tacn", "fusion_rnn", "fusion_tacn"]
    assert set(rows[-1].mean) == {"test_f1", "test_wa", "test_ua"}
    assert rows[-1].mean["test_f1"] == pytest.approx(0.55)
    md = table(rows).splitlines()
    assert md[0] == "| Model | Folds | Test F1 | Test WA | Test UA |"
    assert md[-1].startswith("F1 / WA / UA in %")
    assert table(summarise(records)).splitlines()[-1].startswith("WA / UA in %")  # satn: as before


def test_folds_without_f1_are_left_out_of_the_tacn_layout():
    rows = summarise([_run("deep_tcn", [(0.6, 0.5, None)]),
                      _run("deep_tacn", [(0.6, 0.5, 0.5), (0.4, 0.3, None)])], layout="tacn")
    assert [(r.variant, r.folds) for r in rows] == [("deep_tacn", 1)]
    with pytest.raises(ValueError, match="layout"):
        summarise([], layout="paper")
