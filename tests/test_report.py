"""Table 2 layout from run records: grouping, fold statistics, the paper's figures."""

import numpy as np
import pytest
import yaml

from satn.config import ConfigError
from satn.report import load_paper, summarise, table


def _run(variant, scores, params=None):
    return {"run_id": variant, "name": variant, "status": "FINISHED", "variant": variant,
            "params": params or {"model.variant": variant},
            "folds": [{"fold": f"fold{i}", "dev_wa": s, "dev_ua": s, "test_wa": s,
                       "test_ua": s / 2} for i, s in enumerate(scores, 1)]}


def test_rows_follow_table2_order_and_hold_fold_mean_and_sample_std():
    rows = summarise([_run("tcn_self_at", [0.6, 0.8]), _run("blstm_soft", [0.5]),
                      _run("tcn_self", [0.4, 0.6, 0.8]), _run("tcn_soft", [])])
    assert [r.variant for r in rows] == ["blstm_soft", "tcn_self", "tcn_self_at"]  # no folds: out
    r = rows[1]
    assert r.folds == 3 and r.mean["dev_wa"] == pytest.approx(0.6)
    assert r.std["dev_wa"] == pytest.approx(0.2)  # ddof=1, as metrics.aggregate
    assert r.mean["test_ua"] == pytest.approx(0.3) and rows[0].std["dev_ua"] == 0.0


def test_runs_of_one_variant_pool_their_folds_and_other_searched_values_split_rows():
    rows = summarise([_run("tcn_self", [0.5]), _run("tcn_self", [0.7]),
                      _run("tcn_self", [0.9], {"model.variant": "tcn_self", "train.lr": 0.01})])
    assert [(r.label, r.runs, r.folds) for r in rows] == [
        ("tcn_self", 2, 2), ("tcn_self (train.lr=0.01)", 1, 1)]


def test_runs_whose_config_differs_outside_the_search_never_share_a_row():
    def run(score, **config):
        base = {"model.variant": "tcn_self", "train.epochs": "10", "recipe.speeds": "",
                "data.root": "/data/a"}
        return {**_run("tcn_self", [score]), "config": {**base, **config}}

    runs = [run(0.5), run(0.7, **{"data.root": "/elsewhere"}),  # where the data sat: same row
            run(0.9, **{"recipe.speeds": "0.9,1.1"}),
            run(0.3, **{"recipe.speeds": "0.9,1.1", "train.epochs": "20"})]
    rows = summarise(runs)
    assert [(r.label, r.runs) for r in rows] == [
        ("tcn_self (recipe.speeds=, train.epochs=10)", 2),
        ("tcn_self (recipe.speeds=0.9,1.1, train.epochs=10)", 1),
        ("tcn_self (recipe.speeds=0.9,1.1, train.epochs=20)", 1)]
    assert rows[0].mean["dev_wa"] == pytest.approx(0.6)
    # runs that agree keep the plain label; a setting only newer runs log does not split them
    newer = {**runs[1], "config": {**runs[1]["config"], "recipe.mixup_alpha": "0.0"}}
    assert [(r.label, r.runs) for r in summarise([runs[0], newer])] == [("tcn_self", 2)]
    # a setting the variant never reads (here, the BLSTM's size for a TCN) splits nothing
    rnn = [{**r, "config": {**r["config"], "model.rnn.hidden": h}}
           for r, h in ((runs[0], "8"), (runs[1], "128"))]
    assert len(summarise(rnn)) == 2
    assert [(r.label, r.runs) for r in summarise(
        rnn, reads=lambda variant, key: not key.startswith("model.rnn."))] == [("tcn_self", 2)]
    # a searched value is named once, as searched
    searched = {**runs[2], "params": {"model.variant": "tcn_self", "recipe.speeds": [0.9, 1.1]}}
    assert "recipe.speeds=[0.9, 1.1]" in summarise([runs[0], searched])[1].label


def test_runs_on_different_class_sets_never_share_a_row():
    four, eight = "neu,hap,sad,ang", "neu,cal,hap,sad,ang,fea,dis,sur"
    runs = [{**_run("tcn_self", [0.5]), "classes": four},
            {**_run("tcn_self", [0.7]), "classes": four},
            {**_run("tcn_self", [0.3]), "classes": eight}]
    rows = summarise(runs)
    assert [(r.label, r.folds) for r in rows] == [("tcn_self [4 classes]", 2),
                                                  ("tcn_self [8 classes]", 1)]
    assert rows[0].mean["dev_wa"] == pytest.approx(0.6) and rows[1].mean["dev_wa"] == 0.3
    # one class set: labels as before
    assert [r.label for r in summarise(runs[:2])] == ["tcn_self"]
    # two sets of four: the sets themselves tell the rows apart
    other = {**_run("tcn_self", [0.1]), "classes": "neu,cal,sad,ang"}
    assert sorted(r.label for r in summarise(runs[:2] + [other])) == [
        "tcn_self [neu,cal,sad,ang]", "tcn_self [neu,hap,sad,ang]"]


def test_markdown_and_csv_put_the_papers_figure_beside_ours(tmp_path):
    rows = summarise([_run("tcn_self", [0.5, 0.7])])
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"source": "Table 2", "rows": {"tcn_self": {"dev_wa": 0.61}}}))
    paper = load_paper(str(path))
    md = table(rows, paper).splitlines()
    assert md[2] == ("| tcn_self | 2 | 60.0 ± 14.1 | 61.0 | 60.0 ± 14.1 | – | 60.0 ± 14.1 | – "
                     "| 30.0 ± 7.1 | – |")
    assert "paper: Table 2" in md[-1]
    csv = table(rows, paper, "csv").splitlines()
    assert csv[1].startswith("tcn_self,tcn_self,1,2,0.6000,0.1414,0.6100,")


def test_paper_figures_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="no figures file"):
        load_paper("no_such_paper")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"rows": {"tcn_self": {"test_ua": 61.0}}}))
    with pytest.raises(ConfigError, match=r"rows.tcn_self.test_ua must be a fraction"):
        load_paper(str(path))
    path.write_text(yaml.safe_dump({"rows": {"tcn_self": {"f1": 0.5}}}))
    with pytest.raises(ConfigError, match=r"unknown \['f1'\]"):
        load_paper(str(path))


def _predictions(correct_by_fold):
    """A predictions table: per fold, utterances of two classes, correct where 1."""
    import pandas as pd

    rows = []
    for fold, correct in correct_by_fold.items():
        for i, ok in enumerate(correct):
            true = "neu" if i % 2 else "ang"
            rows.append({"fold": fold, "id": f"{fold}-{i}", "side": "test", "true": true,
                         "pred": true if ok else ("ang" if true == "neu" else "neu")})
    return pd.DataFrame(rows)


def test_rows_with_predictions_get_a_bootstrap_ci_around_their_fold_mean():
    rng = np.random.default_rng(0)
    preds = _predictions({f"fold{i}": (rng.random(200) < 0.7).astype(int) for i in (1, 2)})
    run = _run("tcn_self", [0.7, 0.7])
    run["predictions"] = preds
    perfect = _run("tcn_soft", [1.0])
    perfect["predictions"] = _predictions({"fold1": [1] * 50})
    rows = summarise([run, perfect, _run("blstm_soft", [0.5])])
    by = {r.variant: r for r in rows}
    from satn.significance import fold_scores

    low, high = by["tcn_self"].ci["test_ua"]
    mean = sum(fold_scores(preds, "ua").values()) / 2
    assert low < mean < high and 0.04 < high - low < 0.15  # 400 utterances: a few points
    assert by["tcn_soft"].ci["test_wa"] == (1.0, 1.0)  # no spread to resample
    assert by["blstm_soft"].ci == {}  # no predictions: no interval, rather than a made-up one
    md = table(rows)
    assert f"[{100 * low:.1f}, {100 * high:.1f}]" in md and "bootstrap CI" in md
    csv_text = table(rows, fmt="csv")
    assert "test_ua_ci_low" in csv_text.splitlines()[0]
