"""Figures of the long-range study: ``long_range_errors.png`` (errors and donor–acceptor coupling
against the attention cutoff) and ``long_range_attention.png`` (what the donor and acceptor atoms attend
to in the trained global models: molecule drawings and the attention matrix)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments.long_range.modes import VARIANTS
from experiments.long_range.molecules import TITLES
from experiments.long_range.prepare import paths

GLOBAL_X = 14.0  # where "global" sits on the cutoff axis of the plot [Å] (beyond the largest cutoff)


def figure_errors(results: dict, out: Path) -> None:
    """Force MAE (all, donor, acceptor atoms) and coupling error against the attention cutoff."""
    import matplotlib.pyplot as plt

    panels = [
        ("force_mae", "all atoms: force MAE [kcal/mol/Å]"),
        ("donor_mae", "donor N(CH$_3$)$_2$: force MAE"),
        ("acceptor_mae", "acceptor NO$_2$: force MAE"),
        ("coupling_rel_error", "coupling error ‖C − C$_{ref}$‖/‖C$_{ref}$‖"),
    ]
    x = [GLOBAL_X if c is None else c for c in VARIANTS.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for color, (molecule, res) in zip(("C3", "C0"), results.items()):
            y = [res["models"][m][key] for m in VARIANTS]
            order = np.argsort(x)
            ax.plot(np.array(x)[order], np.array(y)[order], "o-", color=color, label=f"GeoPaTra, {molecule} (seed 0)")
            if key == "force_mae":  # the replicate seeds: how far training noise alone moves a point
                for seed, maes in res["seeds"].items():
                    if seed != min(res["seeds"]):
                        ax.plot(
                            x,
                            [maes[m] for m in VARIANTS],
                            "o",
                            mfc="none",
                            color=color,
                            label=f"GeoPaTra, {molecule}, seed {seed}",
                        )
            ax.axhline(res["models"]["sgdml"][key], color=color, ls="--", lw=1, label=f"sGDML, {molecule}")
        if key == "coupling_rel_error":  # sGDML can be far above 1: keep GeoPaTra readable
            top = max(2.0, 1.1 * max(res["models"][m][key] for res in results.values() for m in VARIANTS))
            ax.set_ylim(0, top)
            for k, (color, res) in enumerate(zip(("C3", "C0"), results.values())):
                value = res["models"]["sgdml"][key]
                if value > top:
                    ax.text(
                        0.02,
                        0.95 - 0.07 * k,
                        f"sGDML off scale: {value:.1f}",
                        color=color,
                        transform=ax.transAxes,
                        fontsize=8,
                        va="top",
                    )
        ax.set_xticks([3, 5, 8, GLOBAL_X], ["3", "5", "8", "global"])
        ax.set_xlabel("attention cutoff [Å]")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def group_attention(weights: np.ndarray, receivers: list[int]) -> np.ndarray:
    """Attention of the ``receivers`` group to each atom [N]: mean over layers, heads and receivers
    of alpha (sums to 1 over the atoms)."""
    return weights[:, :, receivers].mean(axis=(0, 1, 2))


def figure_attention(work: Path, molecules: list[str], out: Path) -> dict[str, dict]:
    """Molecule drawings coloured by what NO2 and N(CH3)2 attend to, and the full attention matrix
    (global model, mean over layers, heads and test frames). Returns the numbers quoted in the text."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(
        len(molecules),
        3,
        figsize=(21, 6.8 * len(molecules)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.4, 1.4, 1.1]},
    )
    summary = {}
    for row, molecule in enumerate(molecules):
        meta = json.loads(paths(work, molecule)["meta"].read_text())
        with np.load(work / "eval" / f"{molecule}_attention.npz") as data:
            weights, n_frames = data["weights"], len(data["frames"])
        donor, acceptor = meta["donor"], meta["acceptor"]
        xy, z = np.array(meta["xy"]), np.array(meta["z"])
        per_layer = {
            name: [
                [float(weights[layer, head][group][:, other].sum(axis=1).mean()) for head in range(weights.shape[1])]
                for layer in range(weights.shape[0])
            ]
            for name, group, other in (("acceptor_to_donor", acceptor, donor), ("donor_to_acceptor", donor, acceptor))
        }
        summary[molecule] = {"n_frames": n_frames, "n_atoms": len(z), **per_layer}
        norm = LogNorm(vmin=1e-4, vmax=0.3)
        for col, (group, name) in enumerate(((acceptor, "NO$_2$"), (donor, "N(CH$_3$)$_2$"))):
            ax = axes[row, col]
            value = group_attention(weights, group)
            for i, j in meta["bonds"]:
                ax.plot(*xy[[i, j]].T, color="0.6", lw=1.2, zorder=1)
            sizes = np.where(z == 1, 90, 260)
            edge = ["tab:blue" if i in donor else "tab:red" if i in acceptor else "0.3" for i in range(len(z))]
            widths = [2.5 if (i in donor or i in acceptor) else 0.5 for i in range(len(z))]
            scatter = ax.scatter(
                *xy.T,
                c=np.clip(value, 1e-4, None),
                s=sizes,
                cmap="viridis",
                norm=norm,
                edgecolors=edge,
                linewidths=widths,
                zorder=2,
            )
            for i in range(len(z)):
                if z[i] != 1:
                    symbol = meta["labels"][i].rstrip("0123456789")
                    ax.text(*xy[i], symbol, ha="center", va="center", fontsize=7, color="w", zorder=3)
            share = value[donor if col == 0 else acceptor].sum()
            target = "donor" if col == 0 else "acceptor"
            ax.set_title(
                f"{TITLES[molecule]}\nwhere the {name} atoms look: {100 * share:.1f} % on the {target}", fontsize=10
            )
            ax.set_aspect("equal")
            ax.axis("off")
            fig.colorbar(scatter, ax=ax, shrink=0.7, label="attention weight")
        # matrix, atoms ordered along the donor -> acceptor axis of the drawing
        axis = xy[next(i for i in acceptor if z[i] == 7)] - xy[next(i for i in donor if z[i] == 7)]
        order = np.argsort(xy @ axis)
        matrix = weights.mean(axis=(0, 1))[np.ix_(order, order)]
        ax = axes[row, 2]
        image = ax.imshow(np.clip(matrix, 1e-4, None), cmap="viridis", norm=norm)
        labels = [meta["labels"][i] for i in order]
        ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=5)
        ax.set_yticks(range(len(order)), labels, fontsize=5)
        for group, color in ((donor, "tab:blue"), (acceptor, "tab:red")):
            positions = np.flatnonzero(np.isin(order, group))
            for tick in positions:
                ax.get_xticklabels()[tick].set_color(color)
                ax.get_yticklabels()[tick].set_color(color)
        for rows_group, cols_group in ((acceptor, donor), (donor, acceptor)):
            r, c = np.flatnonzero(np.isin(order, rows_group)), np.flatnonzero(np.isin(order, cols_group))
            ax.add_patch(
                Rectangle(
                    (c.min() - 0.5, r.min() - 0.5),
                    c.max() - c.min() + 1,
                    r.max() - r.min() + 1,
                    fill=False,
                    ec="w",
                    lw=1.2,
                    ls="--",
                )
            )
        ax.set_xlabel("sender j (atoms ordered donor → acceptor)")
        ax.set_ylabel("receiver i")
        ax.set_title(
            f"α$_{{ij}}$, mean over layers, heads, {n_frames} test frames\n"
            "(dashed: donor–acceptor blocks; blue donor, red acceptor)",
            fontsize=10,
        )
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return summary
