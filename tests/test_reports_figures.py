"""reports.figures: the sweep-level figure a notebook shows (Fig. 2 and the precision curves are
built and checked through the report build in test_reports.py)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports.figures import plot_precision_vs_accuracy


def test_plot_precision_vs_accuracy(tmp_path):
    runs = (("CML", "maxpool_lif", 1.0), ("new", "my_pool", 0.7), ("baseline", "lif_maxpool", 0.4))
    probe = pd.DataFrame(
        [
            {"run_id": f"r{i}", "model": name, "variant": variant, "epoch": e, "site": s,
             "mass_at_argmax": m + 0.01 * e}
            for i, (name, variant, m) in enumerate(runs)
            for e in (1, 2, 3)
            for s in ("stage3", "stage4")
        ]
    )  # fmt: skip
    history = pd.DataFrame(
        [{"run_id": f"r{i}", "epoch": e, "test_top1": 20.0 * e + i} for i in (0, 1, 2)
         for e in (1, 2, 3)]
    )  # fmt: skip
    fig = plot_precision_vs_accuracy(probe, history)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["baseline", "CML", "new"]  # the tables' variant order, whatever the input's
    path = tmp_path / "precision_vs_accuracy.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    pixels = mpimg.imread(path)
    assert path.stat().st_size > 5_000 and pixels.std() > 0.05
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20
