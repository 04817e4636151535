"""Make docs/images/report.png, the README's picture of a diagnostics report.

    python scripts/readme_figure.py    # about a minute: runs examples/conjugate.py in full

Runs ``examples/conjugate.py`` (seed 000's conjugate in three dimensions against its
closed form, 4 x 2,500 draws each), then stacks the report's verdict lines over its
density, rank and efficiency figures in one PNG.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images" / "report.png"


def compose(report_dir: pathlib.Path, verdict: list[str], out: pathlib.Path) -> pathlib.Path:
    """Stack ``verdict`` (text) over three of the report's figures into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    images = [mpimg.imread(report_dir / f) for f in ("densities.png", "ranks.png")]
    images.append(mpimg.imread(report_dir / "efficiency.png"))
    width = max(im.shape[1] for im in images)
    heights = [0.09 * width] + [im.shape[0] * 1.0 for im in images]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(width / 100, sum(heights) / 100),
        gridspec_kw={"height_ratios": heights},
    )
    axes[0].text(
        0.01,
        0.5,
        "\n".join(verdict),
        family="monospace",
        fontsize=11,
        va="center",
        transform=axes[0].transAxes,
    )
    for ax, im in zip(axes[1:], images, strict=True):
        ax.imshow(im)
    for ax in axes:
        ax.axis("off")
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, hspace=0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> int:
    """Run the example in full and write the figure."""
    sys.path.insert(0, str(ROOT / "examples"))
    import conjugate

    report_dir = pathlib.Path(tempfile.mkdtemp())
    code = conjugate.main(["--out", str(report_dir)])
    text = (report_dir / "report.md").read_text().splitlines()
    verdict = [line.strip("*") for line in text if line.startswith("**")][:2]
    print("wrote", compose(report_dir, verdict, OUT))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
