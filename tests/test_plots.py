"""Figures: the numbers printed in a confusion heatmap are the matrix's own."""

import numpy as np

from satn.plots import attention_png, cell_labels, confusion_png


def test_counts_print_as_integers_and_rates_with_decimals():
    counts = np.array([[5, 1], [0, 7]])
    assert cell_labels(counts).tolist() == [["5", "1"], ["0", "7"]]
    rates = np.array([[0.75, 0.25], [0.1, 0.9]])
    assert cell_labels(rates).tolist() == [["0.75", "0.25"], ["0.10", "0.90"]]
    # a row-normalised matrix with whole values is still a rate, not a count
    assert cell_labels(np.eye(2)).tolist() == [["1.00", "0.00"], ["0.00", "1.00"]]


def test_figures_are_written_as_png(tmp_path):
    png = b"\x89PNG"
    c = confusion_png(np.array([[3, 1], [2, 4]]), ("a", "b"), tmp_path / "c.png", normalise=False)
    a = attention_png(np.full((2, 5, 5), 0.2), tmp_path / "a.png", title="u1")
    soft = attention_png(np.full(7, 1 / 7), tmp_path / "s.png", title="soft")  # (T,) weights
    assert c.read_bytes()[:4] == png and a.read_bytes()[:4] == png
    assert soft.read_bytes()[:4] == png


def test_a_long_confusion_title_stays_inside_the_picture():
    import matplotlib.pyplot as plt

    from satn.plots import confusion_figure

    title = "tcn_self+logreg/compare: test, mean of row-normalised folds"
    fig = confusion_figure(np.eye(8), tuple("abcdefgh"), title=title, normalise=False)
    try:
        renderer = fig.canvas.get_renderer()
        box, page = fig.axes[0].title.get_window_extent(renderer), fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1
        assert fig.axes[0].title.get_text().replace("\n", " ") == title
    finally:
        plt.close(fig)
