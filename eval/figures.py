"""``figures``: PNG plots of the results files, the Fig. 3 grid and the results README table.

Everything here is drawn from ``eval/results/*.json`` (and, for the grid, the prepared cache),
so the pictures always show the numbers that were measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eval.rate_distortion import RESULTS

GRID_CODEC = "avif"
GRID_QUALITIES = (0, 30)


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


QUANTIZERS = ("pq", "opq", "itq")


def _style(name: str) -> dict:
    if name.endswith("-compact"):
        return {"marker": "x", "linestyle": ":", "markersize": 4, "linewidth": 0.8}
    if name == "base_layer":
        return {"color": "black", "marker": "*", "linestyle": "-", "linewidth": 2}
    if name == "base_layer_format1":
        return {"color": "grey", "marker": "*", "linestyle": "-", "linewidth": 1.2}
    if name in QUANTIZERS:
        return {"marker": "^", "linestyle": "-.", "markersize": 5}
    return {"marker": "o" if name.startswith("base+") else "s", "linestyle": "-" if name.startswith("base+") else "--",
            "markersize": 4}


def rate_accuracy_plot(ra: dict, path: Path) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    for name, pts in ra["curves"].items():
        pts = [p for p in pts if "bytes" in p and p["accuracy"] is not None]
        plain = name.startswith("base") or name in QUANTIZERS
        label = name if plain else f"{name} (anchor pairs)"
        ax.plot([p["bytes"] for p in pts], [100 * p["accuracy"] for p in pts], label=label, **_style(name))
        if name in ("base_layer", "base_layer_format1") or name in QUANTIZERS:
            zoom.plot([p["bytes"] for p in pts], [100 * p["accuracy"] for p in pts], label=label, **_style(name))
    ax.axhline(100 * ra["float_accuracy"], color="grey", linewidth=0.8, linestyle=":", label="float features")
    body = [q for q in ra["curves"]["base_layer"] if "stream_bytes" in q]
    if body:  # what the compact wire carries per face: no header, no checksum, like the quantizers' codes
        zoom.plot([q["stream_bytes"] for q in body], [100 * q["accuracy"] for q in body], color="black", marker="*",
                  linestyle="--", linewidth=1, markersize=4, label="base_layer, stream body (no header)")
    zoom.axhline(100 * ra["float_accuracy"], color="grey", linewidth=0.8, linestyle=":", label="float features")
    zoom.axhline(100 * ra["float_accuracy"] - 0.3, color="red", linewidth=0.8, linestyle=":", label="float - 0.3 point")
    p = ra["default_point"]
    zoom.plot([p["bytes"]], [100 * p["accuracy"]], "o", color="red", markerfacecolor="none", markersize=12,
              label=f"default: {p['bytes']:.1f} B, {100 * p['accuracy']:.2f}%")
    zoom.set_xlim(6, 70)
    zoom.set_ylim(94, 99.5)
    zoom.set_xscale("log")
    zoom.set_xticks([8, 12, 16, 20, 24, 32, 48, 64])
    zoom.set_xticks([], minor=True)
    zoom.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    zoom.set_xlabel("bytes per face (per-person mean; PQ / OPQ / ITQ: code size, no header)")
    zoom.set_title("Base layer against plain quantizers")
    zoom.grid(True, which="both", alpha=0.3)
    zoom.legend(fontsize=8, loc="lower right")
    sub = [p for p in ra["curves"]["base_layer"] if "accuracy_on_anchor_pairs" in p]
    meta = ra.get("compress_then_analyze") or {}
    if sub:  # anchors run on a subset of the pairs: show the base layer and float features there too
        ax.plot([p["bytes"] for p in sub], [100 * p["accuracy_on_anchor_pairs"] for p in sub], color="black",
                marker="*", linestyle="--", linewidth=1, label=f"base_layer on the anchors' {meta.get('pairs')} pairs")
        ax.axhline(100 * meta["float_accuracy_on_subset"], color="grey", linewidth=0.8, linestyle="-.",
                   label=f"float features on the anchors' {meta.get('pairs')} pairs")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per face (per-person mean over test people, headers included)")
    ax.set_ylabel("LFW verification accuracy, 10-fold (%)")
    ax.set_ylim(50, 100)
    ax.set_title("Rate-accuracy: analyze-then-compress vs compress-then-analyze")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rate_distortion_plot(rd: dict, path: Path, metric: str = "psnr") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more curves than the default ten colours
    for name, pts in rd["curves"].items():
        pts = [p for p in pts if "bytes" in p]
        ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], label=name, **_style(name))
    ax.set_xlabel(f"bits per pixel ({rd['resolution'][0]}x{rd['resolution'][1]} crop; base layer included)")
    ax.set_ylabel({"psnr": "PSNR RGB (dB)", "psnr_y": "PSNR luma (dB)", "ms_ssim": "MS-SSIM"}[metric])
    ax.set_title(f"Rate-distortion on {rd['images']} test faces")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fig3_grid(cache_dir: Path, path: Path, n: int = 6) -> Path:
    """Rows: original, base layer alone, base + enhancement at two rates (bytes printed under each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.prepare import FeatureCache
    from eval.rate_distortion import test_rows
    from facecodec import base_layer, enhancement, reconstruction
    from facecodec.crop import face_crop

    cache = FeatureCache(cache_dir)
    rows = test_rows(cache, n)
    labels = ["original", "base layer only"] + [f"base + {GRID_CODEC} q{q}" for q in GRID_QUALITIES]
    fig, axes = plt.subplots(len(labels), n, figsize=(1.6 * n, 1.75 * len(labels)))
    for j, i in enumerate(rows):
        chip = np.asarray(cache.chips[i])
        base = base_layer.encode(cache.features[i])
        cells = [(face_crop(chip), "")]
        try:
            cells.append((reconstruction.reconstruct(base), f"{len(base)} B"))
        except Exception:
            cells.append((np.full_like(face_crop(chip), 128), "no model"))
        for q in GRID_QUALITIES:
            enh = enhancement.encode(chip, base, GRID_CODEC, q)
            cells.append((enhancement.decode(enh, base), f"{len(base)}+{len(enh)} B"))
        for r, (img, text) in enumerate(cells):
            ax = axes[r, j]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(text, fontsize=7)
            if j == 0:
                ax.set_ylabel(labels[r], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def readme(ra: dict | None, rd: dict | None, rec: dict | None, av: dict | None = None,
           pb: dict | None = None) -> str:
    lines = ["# Evaluation results", "",
             "Produced by the commands in the top-level README (`python -m eval ...`); never edited by hand.",
             "Each JSON file names the commit and machine it came from.", ""]
    if ra:
        p = ra["default_point"]
        meta = ra.get("compress_then_analyze") or {}
        sub = meta.get("float_accuracy_on_subset")
        lines += ["## Rate-accuracy (`rate_accuracy.json`, `rate_accuracy.png`)", "",
                  f"Accounting: bytes per face are **per-person means** over the {ra.get('test_people', 'test')} "
                  f"test people ({ra['test_images']} images; each person's mean, then the mean over people), "
                  "headers and checksums included, unless a figure says otherwise; accuracy is 10-fold on all "
                  "6,000 pairs of pairs.txt (threshold fitted on the other 9 folds).", "",
                  f"Float dlib features: {100 * ra['float_accuracy']:.2f}%. Base layer ({p.get('model', '')}) at its "
                  f"default step {p['step']:.3g}: **{p['bytes']:.1f} bytes** per face, "
                  f"{100 * p['accuracy']:.2f}%" + (f" ({100 * (ra['float_accuracy'] - p['accuracy']):.2f} point "
                  f"below float; {p['bytes_per_image']:.1f} bytes per image; {p['stream_bytes']:.1f} bytes per "
                  "face on the facewire.v2 stream, whose Hello carries the header)." if "stream_bytes" in p else ".")]
        o = ra.get("base_layer_format1_default_point")
        if o:
            lines[-1] += (f" The previous format-1 model ({ra.get('base_layer_format1_model')}) at its default step "
                          f"{o['step']:.3g}: {o['bytes']:.1f} bytes per person ({o['bytes_per_image']:.1f} per image), "
                          f"{100 * o['accuracy']:.2f}%.")
        lines.append("")
        steps = ra["curves"]["base_layer"]
        lines += ["| step | bytes/face (per person) | per image | on the stream | accuracy |",
                  "| --- | --- | --- | --- | --- |"]
        for q in steps:
            mark = "**" if q["step_index"] == p["step_index"] else ""
            lines.append(f"| {mark}{q['step']:.3g}{mark} | {q['bytes']:.2f} | {q.get('bytes_per_image', q['bytes']):.2f} "
                         f"| {q.get('stream_bytes', float('nan')):.2f} | {100 * q['accuracy']:.2f}% |")
        lines.append("")
        comp = ra.get("quantizer_comparison")
        if comp:
            cols = [("pq", "PQ"), ("opq", "OPQ"), ("itq", "ITQ"), ("base_layer_payload", "base layer (payload)"),
                    ("base_layer_stream", "base layer (stream body)"), ("base_layer_format1_payload", "format 1 (payload)")]
            cols = [(k, t) for k, t in cols if k in comp["accuracy"]]
            lines += ["Plain quantizers of the same features, trained on the train people, same protocol (their bytes "
                      "are the code size, with no header; the base layer's are interpolated along its curve, blank "
                      "outside it):", "",
                      "| bytes | " + " | ".join(t for _, t in cols) + " |", "| --- " * (len(cols) + 1) + "|"]
            for k, b in enumerate(comp["bytes"]):
                vals = [(c, comp["accuracy"][c][k]) for c, _ in cols]
                lines.append(f"| {b} | " + " | ".join(("n/a" if c == "itq" else "") if v is None else f"{100 * v:.2f}%"
                                                      for c, v in vals) + " |")
            lines += ["", "ITQ has no code beyond one bit per PCA dimension (16 bytes for 128-D features). PQ and OPQ "
                      "match on decoded vectors, ITQ on Hamming distance.", ""]
        if sub is not None:
            base_sub = meta.get("base_layer_default_accuracy_on_subset")
            lines += [f"Compress-then-analyze anchors code dlib's 150x150 chip and run dlib on the decoded chip, on "
                      f"{meta['pairs']} pairs ({meta['pairs_per_fold']} per fold) where float features score "
                      f"{100 * sub:.2f}% and the base layer at its default step {100 * base_sub:.2f}%. Smallest "
                      "bytes per face (per person, test people) within 0.5 point of float accuracy on those pairs:", "",
                      "| codec | bytes/face | setting | vs base layer |", "| --- | --- | --- | --- |",
                      f"| base layer | {p['bytes']:.1f} | step {p['step']:.3g} | 1x |"]
            for name, pts in ra["curves"].items():
                if name.startswith("base") or name in QUANTIZERS:
                    continue
                ok = [q for q in pts if "bytes" in q and q["accuracy"] >= sub - 0.005]
                best = min(ok, key=lambda q: q["bytes"]) if ok else None
                lines.append(f"| {name} | {best['bytes']:.0f} | {best['param']} | {best['bytes'] / p['bytes']:.0f}x |"
                             if best else f"| {name} | never | | |")
            lines += ["", "With an enhancement layer the analysis still reads the base layer's feature, so "
                      "`base+<codec>` curves keep the base layer's accuracy and only add bytes.", ""]
    anchors = [a + v for a in ("jpeg", "jpeg2000", "webp", "avif") for v in ("", "-compact")]
    if rd:
        lines += rd_readme(rd, anchors)
    if av:
        lines += avif_readme(av)
    if pb:
        lines += bound_readme(pb)
    if rec:
        lines += rec_readme(rec)
    lines += ["![rate-accuracy](rate_accuracy.png)", "", "![rate-distortion](rate_distortion_psnr.png)", "",
              "![Fig. 3 grid](fig3_grid.png)", "", "![reconstruction grid](reconstruction_grid.png)", ""]
    return "\n".join(lines)


def _pct(v, ci=None) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.1f}%" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")


def rd_readme(rd: dict, anchors: list[str]) -> list[str]:
    bd, ci = rd["bd_rate"], rd.get("bd_rate_ci", {})
    mse, mse_ci = rd.get("bd_rate_mse", {}), rd.get("bd_rate_mse_ci", {})
    scal = sorted(k for k in rd["curves"] if k.startswith("base+"))
    per = rd.get("images_per_person")
    lines = ["## Rate-distortion (`rate_distortion.json`, `rate_distortion_psnr.png`, `rate_distortion_msssim.png`)", "",
             f"{rd['images']} test faces of {rd.get('people', '?')} test people"
             + (f" (at most {per} per person)" if per else "") + f", {rd['resolution'][0]}x{rd['resolution'][1]} crop. "
             "Accounting: **per-person means** (each person's mean, then the mean over people) of bytes and PSNR; "
             "`psnr` averages each image's PSNR, `psnr_mse` is the PSNR of the mean squared error. Bytes are, unless "
             "a column says otherwise, **every byte that travels**: the base layer (header included) plus the "
             "enhancement payload (header included) for `base+` configurations, the file (or, for `-compact`, the "
             "stream with its container header deflated like the enhancement layer's) for anchors. *On demand*: the "
             "enhancement payload alone (the base layer is already at the server: what an operator's Verify costs). "
             "*Container*: the scalable container file (+10 bytes) against the anchors' plain files. BD-rate "
             "(negative = fewer bytes than the anchor at equal PSNR) over the whole common range and over 28-36 dB, "
             "with 95% bootstrap intervals over people in brackets.", "",
             f"Models: prediction `{rd.get('prediction_model')}`, restoration "
             + (", ".join(f"`{v}` ({k})" for k, v in (rd.get("restoration_models") or {}).items() if v)
                or "none registered")
             + f", enhancement format {rd.get('enhancement_format')}. `-format2`: the previous payload format (min-max "
             "normalised residual, 11-byte header); `-norestore`: format 3 without the restoration network.", "",
             "Headline, against the same codec with compact headers:", "",
             "| scalable | anchor | BD-rate (mean PSNR) | 28-36 dB | BD-rate (PSNR of mean MSE) | 28-36 dB | on demand | on demand, 28-36 dB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in scal:
        codec = s[5:].split("-")[0]
        for a in dict.fromkeys([f"{codec}-compact", "avif-compact"]):
            k = f"{s}_vs_{a}"
            if k not in bd:
                continue
            lines.append(f"| {s} | {a} | {_pct(bd[k], ci.get(k))} | {_pct(bd.get(k + '_28_36'), ci.get(k + '_28_36'))} | "
                         f"{_pct(mse.get(k), mse_ci.get(k))} | {_pct(mse.get(k + '_28_36'), mse_ci.get(k + '_28_36'))} | "
                         f"{_pct(bd.get(k + '_ondemand'), ci.get(k + '_ondemand'))} | "
                         f"{_pct(bd.get(k + '_ondemand_28_36'), ci.get(k + '_ondemand_28_36'))} |")
    lines += ["", "Every anchor, whole range, mean PSNR, every byte that travels:", "",
              "| scalable | " + " | ".join(f"vs {a}" for a in anchors) + " |", "| --- " * (len(anchors) + 1) + "|"]
    for s in scal:
        lines.append(f"| {s} | " + " | ".join(_pct(bd.get(f"{s}_vs_{a}")) for a in anchors) + " |")
    lines += ["", "File level (container against plain files), whole range / 28-36 dB:", "",
              "| scalable | " + " | ".join(f"vs {a}" for a in anchors if "-compact" not in a) + " |",
              "| --- " * (len([a for a in anchors if "-compact" not in a]) + 1) + "|"]
    for s in scal:
        lines.append(f"| {s} | " + " | ".join(f"{_pct(bd.get(f'{s}_vs_{a}_container'))} / "
                                             f"{_pct(bd.get(f'{s}_vs_{a}_container_28_36'))}"
                                             for a in anchors if "-compact" not in a) + " |")
    avif = rd["curves"].get("base+avif")
    if avif:
        lines += ["", "base+avif per quality (bytes per person, every byte; share of faces coded directly rather than as a residual):", "",
                  "| quality | bytes | on demand | PSNR | PSNR of mean MSE | direct |", "| --- | --- | --- | --- | --- | --- |"]
        for p in avif:
            if "bytes" in p:
                lines.append(f"| {p['param']} | {p['bytes']:.1f} | {p.get('bytes_enhancement', 0):.1f} | {p['psnr']:.2f} | "
                             f"{p['psnr_mse']:.2f} | {100 * p.get('direct_share', 0):.0f}% |")
    return lines + [""]


def bound_readme(pb: dict) -> list[str]:
    """The prediction bound (``python -m eval prediction-bound``)."""
    bd = pb["bd_rate"]
    names = {"mean_face": "the mean train face", "shipped": "the shipped prediction head",
             "oracle": "oracle: the mean of the person's other images"}
    lines = ["## What a better prediction could buy (`prediction_bound.json`)", "",
             f"{pb['images']} images of the {pb['people']} test people with at least {pb['least_images']} images (at most "
             f"{pb['per_person']} each, per-person means), base + AVIF without restoration, the encoder's per-face "
             f"residual-or-direct choice, against `avif-compact`; one process, load {pb['load_before'][0]:.1f} before, "
             f"{pb['load_after'][0]:.1f} after. Base layer {pb['base_layer_bytes']:.1f} bytes a face. BD-rates, whole "
             "range / 28-36 dB:", "",
             "| prediction | every byte (mean PSNR) | every byte (PSNR of mean MSE) | on demand (mean PSNR) |",
             "| --- | --- | --- | --- |"]
    for key, text in names.items():
        k = f"{key}_vs_avif-compact"
        lines.append(f"| {text} | {_pct(bd.get(k))} / {_pct(bd.get(k + '_28_36'))} | {_pct(bd.get(k + '_mse'))} / "
                     f"{_pct(bd.get(k + '_28_36_mse'))} | {_pct(bd.get(k + '_ondemand'))} / "
                     f"{_pct(bd.get(k + '_ondemand_28_36'))} |")
    return lines + [""]


def avif_readme(av: dict) -> list[str]:
    """The AVIF encoder settings table (``python -m eval avif-settings``)."""
    lines = ["## AVIF encoder settings (`avif_settings.json`)", "",
             f"{av['images']} test faces of {av['people']} people (at most {av['images_per_person']} per person), "
             f"every setting on both sides in one run ({av['workers']} processes, load {av['load_before'][0]:.1f} before, "
             f"{av['load_after'][0]:.1f} after). A setting is a lever for the enhancement layer only if base+AVIF "
             "gains on *its own* anchor, AVIF coding the face with the same setting. BD-rates at equal mean PSNR, "
             "every byte that travels, whole range / 28-36 dB; encode times are per 112x112 face, the enhancement "
             "layer's including its residual-or-direct trial. The registered setting is "
             f"`{av['registered']}`.", "",
             "| setting | face encode | enhancement encode | AVIF vs registered AVIF | base+AVIF vs its own AVIF "
             "| same, PSNR of mean MSE | on demand vs its own AVIF | base+AVIF vs registered AVIF |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in av["settings"].items():
        def pair(key: str, averaging: str = "") -> str:  # whole range / 28-36 dB
            return f"{_pct(e.get(key + averaging))} / {_pct(e.get(key + '_28_36' + averaging))}"
        lines.append(f"| {name} | {e['encode_ms']['anchor']:.0f} ms | {e['encode_ms']['scalable']:.0f} ms | "
                     f"{pair('anchor_vs_registered_anchor')} | {pair('scalable_vs_own_anchor')} | "
                     f"{pair('scalable_vs_own_anchor', '_mse')} | {pair('ondemand_vs_own_anchor')} | "
                     f"{pair('scalable_vs_registered_anchor')} |")
    return lines + [""]


def rec_readme(rec: dict) -> list[str]:
    def figures(r: dict) -> str:
        degraded = (f" ({100 * r['same_person_degraded']:.1f}% when both lose their finest detail)"
                    if "same_person_degraded" in r else "")
        return (f"PSNR {r['psnr']:.2f} dB, MS-SSIM {r['ms_ssim']:.3f}, better than the mean face on "
                f"{100 * r['better_than_mean_face']:.1f}% of test images, dlib's \"same person\" on "
                f"{100 * r['same_person']:.1f}% of test faces{degraded}, identity accuracy "
                f"{100 * r['identity_accuracy']:.1f}%")

    lines = ["## Reconstruction from the base layer (`reconstruction.json`, `reconstruction_grid.png`)", "",
             f"Per-person means over {rec['images']} test faces of {rec.get('people', '?')} people. The mean train face "
             f"gives {rec['mean_face_psnr']:.2f} dB. Display model {rec['model']}: **{figures(rec)}** (originals: "
             f"{100 * rec['identity_accuracy_original']:.1f}%; pairs of folds 9-10 with the right image replaced by its "
             f"reconstruction); {rec['ms_per_face']:.1f} ms per face on one core.", ""]
    oracle = rec.get("identity_oracle") or {}
    if oracle.get("psnr") is not None:
        lines += [f"What identity alone can give: on the {oracle['people']} test people with at least ten images "
                  f"({oracle['images']} images), each image against the mean of the person's other images scores "
                  f"{oracle['psnr']:.2f} dB against {oracle['mean_face_psnr']:.2f} dB for the mean train face on the same "
                  f"images, and beats it on {100 * oracle['better_than_mean_face']:.1f}% of them.", ""]
    for name, r in (rec.get("previous") or {}).items():
        lines += [f"Before it, {name}: {figures(r)}.", ""]
    head = rec.get("prediction_head")
    if head:
        lines += [f"The enhancement layer subtracts the prediction head {head['model']}: {figures(head)}.", ""]
    else:
        lines += ["The enhancement layer subtracts the same model's picture (it is also the prediction head).", ""]
    lines += ["Grid rows: original, " + ", ".join([*(rec.get("previous") or {}), rec["model"]]
                                                  + ([head["model"]] if head else [])) + ".", ""]
    return lines


def main(cache_dir: Path) -> list[Path]:
    out = []
    ra, rd, rec = _load("rate_accuracy.json"), _load("rate_distortion.json"), _load("reconstruction.json")
    if ra:
        out.append(rate_accuracy_plot(ra, RESULTS / "rate_accuracy.png"))
    if rd:
        out.append(rate_distortion_plot(rd, RESULTS / "rate_distortion_psnr.png", "psnr"))
        out.append(rate_distortion_plot(rd, RESULTS / "rate_distortion_msssim.png", "ms_ssim"))
    if (cache_dir / "names.txt").exists():
        out.append(fig3_grid(cache_dir, RESULTS / "fig3_grid.png"))
    (RESULTS / "README.md").write_text(readme(ra, rd, rec, _load("avif_settings.json"), _load("prediction_bound.json")))
    out.append(RESULTS / "README.md")
    return out
